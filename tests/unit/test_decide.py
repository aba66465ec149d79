"""What the replay cannot show: waiting on the platform, conditions, bounded history."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.unit.builders import (
    BAD_ACCURACY,
    GOOD,
    final_status,
    measured,
    resource,
    status_after,
    tick,
)
from torchrollout.engine import Observation, decide
from torchrollout.simulation import SIMULATION_START
from torchrollout.spec import Phase

READY = Observation(canary_ready=True)


def at(seconds: float) -> datetime:
    return SIMULATION_START + timedelta(seconds=seconds)


def test_promotion_waits_until_the_canary_has_the_stables_replicas() -> None:
    md = resource(status=status_after(resource(), [tick(0), tick(30, GOOD)]))
    small = Observation(canary_ready=True, canary_ready_replicas=2, stable_replicas=4)
    decision = decide(md, observation=small, measurements=measured(GOOD), now=at(60))
    assert decision.status.phase is Phase.PROMOTING
    assert decision.weight == 50  # the canary keeps its last step until it takes over
    assert decision.requeue_after == 1.0
    md = md.model_copy(update={"status": decision.status})
    full = Observation(canary_ready=True, canary_ready_replicas=4, stable_replicas=4)
    decision = decide(md, observation=full, now=at(65))
    assert decision.status.phase is Phase.SUCCEEDED
    assert decision.status.stable_version == "2.0.0"
    assert [e.reason for e in decision.events] == ["Promoted"]


def test_rollback_waits_until_the_router_reports_weight_zero() -> None:
    md = resource(status=status_after(resource(), [tick(0), tick(30, BAD_ACCURACY)]))
    decision = decide(md, observation=READY, measurements=measured(BAD_ACCURACY), now=at(60))
    assert decision.status.phase is Phase.ROLLING_BACK
    assert decision.weight == 0
    assert decision.requeue_after == 0
    # the router has not applied it yet: the achieved weight read back is still 10
    still = decision.status.model_copy(update={"canary_weight": 10})
    decision = decide(md.model_copy(update={"status": still}), observation=READY, now=at(61))
    assert decision.status.phase is Phase.ROLLING_BACK
    applied = decision.status.model_copy(update={"canary_weight": 0})
    decision = decide(md.model_copy(update={"status": applied}), observation=READY, now=at(62))
    assert decision.status.phase is Phase.ROLLED_BACK
    assert decision.status.history[-1].rolled_back_at is not None
    assert decision.status.history[-1].version == "2.0.0"


def test_degraded_condition_names_the_failing_check_and_value() -> None:
    status = status_after(resource(), [tick(0), tick(30, BAD_ACCURACY), tick(60, BAD_ACCURACY)])
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "CanaryRejected"
    assert "accuracy: 0.7 is below the minimum 0.85" in conditions["Degraded"]["message"]
    assert conditions["Ready"]["status"] == "True"  # the stable still serves
    assert conditions["Progressing"]["status"] == "False"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    first = status_after(resource(), [tick(0)])
    later = status_after(resource(status=first), [tick(30, GOOD)])
    before = {c["type"]: c["lastTransitionTime"] for c in first["conditions"]}
    after = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert after["Ready"] == before["Ready"]
    assert after["Progressing"] == before["Progressing"]


def test_conditions_the_engine_does_not_own_are_kept() -> None:
    archive = {"type": "ArchiveReady", "status": "True", "reason": "Built"}
    md = resource(status={"conditions": [archive]})
    decision = decide(md, observation=READY, now=at(0))
    kept = [c for c in decision.status.conditions if c.type == "ArchiveReady"]
    assert [(c.status, c.reason) for c in kept] == [("True", "Built")]


def test_history_is_bounded() -> None:
    history = [{"version": f"0.{n}.0", "promotedAt": "2025-01-01T00:00:00Z"} for n in range(20)]
    md = resource(spec={"canary": {"rollbackWindow": 0}}, status={"history": history})
    status = final_status(md, [tick(0), tick(30, GOOD), tick(60, GOOD)])
    assert len(status.history) == 20
    assert status.history[-1].version == "2.0.0"
    assert status.history[0].version == "0.1.0"


def test_a_failed_first_deploy_can_be_retried() -> None:
    md = resource(status=None)
    failed = status_after(md, [tick(0, stableReady=False), tick(200, stableReady=False)])
    assert failed["phase"] == "Failed"
    retried = resource(
        metadata={"annotations": {"torchrollout.io/retry": "1"}},
        status={**failed, "stableVersion": None},
    )
    decision = decide(retried, observation=Observation(stable_ready=True), now=at(300))
    assert decision.transitions == (Phase.BUILDING, Phase.SUCCEEDED)
