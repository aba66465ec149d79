"""The previous stable kept warm after a promotion, and reverts to it: warm or cold.

2.0.0 is promoted over 1.0.0 at t=60 (builders.BASE policy, scaleDownDelaySeconds 30 by
default). The platform here is the engine and the renderer together: what the plan asks of
1.0.0's Deployment is what a revert finds ready (pods keep running, or are gone).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.unit.builders import GOOD, measured, resource, status_after, tick
from torchrollout.engine import Decision, Observation, decide
from torchrollout.operator.telemetry import OperatorMetrics
from torchrollout.render import names, plan
from torchrollout.simulation import SIMULATION_START
from torchrollout.spec import ModelDeployment, Phase, compute_revision

PROMOTED_AT = 60.0
STABLE_REPLICAS = 3


def at(seconds: float) -> datetime:
    return SIMULATION_START + timedelta(seconds=seconds)


FIRST = {"history": [{"version": "1.0.0", "promotedAt": "2025-12-01T00:00:00Z"}]}


def promoted(**spec: Any) -> ModelDeployment:
    """2.0.0 just promoted at t=60 over 1.0.0 (`spec` merged into the policy)."""
    md = resource(spec=spec, status=FIRST)
    return resource(spec=spec, status=status_after(md, [tick(0), tick(30, GOOD), tick(60, GOOD)]))


def reverted(md: ModelDeployment, version: str = "1.0.0") -> ModelDeployment:
    spec = resource(spec={"model": {"version": version}}).spec
    return md.model_copy(
        update={"spec": spec.model_copy(update={"canary": md.spec.canary}, deep=True)}
    )


def revision(version: str) -> str:
    return compute_revision(resource(spec={"model": {"version": version}}).spec)


def replicas_of(md: ModelDeployment, version: str) -> int:
    """What the plan asks of `version`'s Deployment: rendered, scaled in place, or (0)
    not kept at all."""
    planned = plan(md, stable_replicas=STABLE_REPLICAS)
    name = names.revision_name(md, revision(version))
    rendered = {
        o["metadata"]["name"]: o["spec"]["replicas"]
        for o in planned.objects
        if o["kind"] == "Deployment"
    }
    replicas: int = {**rendered, **planned.scale}.get(name, 0)
    return replicas


def settled(md: ModelDeployment, decision: Decision) -> ModelDeployment:
    return md.model_copy(update={"status": decision.status})


def idle_until(md: ModelDeployment, until: float) -> ModelDeployment:
    """The operator called back whenever a decision asked, up to `until` (not at it)."""
    t = PROMOTED_AT
    stable = Observation(stable_replicas=STABLE_REPLICAS)
    while True:
        decision = decide(md, observation=stable, now=at(t))
        md = settled(md, decision)
        if decision.requeue_after is None or t + decision.requeue_after >= until:
            return md
        t += decision.requeue_after


def found(md: ModelDeployment) -> Observation:
    """1.0.0 as a revert finds it: ready with what the plan kept, or starting from zero."""
    kept = replicas_of(md, "1.0.0")
    return Observation(
        canary_ready=kept >= STABLE_REPLICAS,
        canary_ready_replicas=kept,
        stable_replicas=STABLE_REPLICAS,
    )


@pytest.mark.parametrize(
    ("seconds", "replicas", "requeue_after"),
    [
        pytest.param(60, 3, 30.0, id="at the promotion: kept, called back at the delay's end"),
        pytest.param(75, 3, 15.0, id="inside the delay: kept, called back at its end"),
        pytest.param(89.5, 3, 0.5, id="half a second before the end: still kept"),
        pytest.param(90, 0, None, id="at the delay's end: scaled to zero"),
        pytest.param(400, 0, None, id="long after (a late timer): scaled to zero"),
    ],
)
def test_the_previous_stable_keeps_the_stables_replicas_until_the_delay_ends(
    seconds: float, replicas: int, requeue_after: float | None
) -> None:
    md = promoted()
    assert replicas_of(md, "1.0.0") == STABLE_REPLICAS
    decision = decide(md, observation=Observation(stable_replicas=3), now=at(seconds))
    md = settled(md, decision)
    assert replicas_of(md, "1.0.0") == replicas
    assert decision.requeue_after == requeue_after
    assert decision.transitions == ()
    scaled = [e.message for e in decision.events if e.reason == "PreviousStableScaledDown"]
    if replicas:
        assert scaled == []
        assert md.status.warm_revision is not None
        assert md.status.warm_revision.scale_down_at == at(90)
    else:
        assert len(scaled) == 1
        assert "canary.scaleDownDelaySeconds (30s) passed" in scaled[0]
        assert md.status.warm_revision is None


def test_the_promotion_decision_asks_to_be_called_back_when_the_delay_ends() -> None:
    md = resource(status=status_after(resource(status=FIRST), [tick(0), tick(30, GOOD)]))
    ready = Observation(canary_ready=True)
    decision = decide(md, observation=ready, measurements=measured(GOOD), now=at(60))
    assert decision.status.phase is Phase.SUCCEEDED
    assert decision.requeue_after == 30.0
    assert decision.status.warm_revision is not None
    assert decision.status.warm_revision.version == "1.0.0"


REVERTS: list[tuple[str, dict[str, Any], float, str, str | None]] = [
    # name, policy, revert at (s), phase after the revert's one decision, warm/cold
    ("inside the delay: warm, promoted in the same decision", {}, 70, "Succeeded", "warm"),
    ("a moment before the delay ends: still warm", {}, 89, "Succeeded", "warm"),
    ("after the delay: cold, waits for the pods", {}, 95, "Promoting", None),
    (
        "scaleDownDelaySeconds 0: cold at once",
        {"canary": {"scaleDownDelaySeconds": 0}},
        61,
        "Promoting",
        None,
    ),
    (
        "a longer delay keeps it warm longer",
        {"canary": {"scaleDownDelaySeconds": 600}},
        500,
        "Succeeded",
        "warm",
    ),
    (
        "rollbackWindow 0: nothing kept warm, the revert is a new canary",
        {"canary": {"rollbackWindow": 0}},
        70,
        "Progressing",
        None,
    ),
]


@pytest.mark.parametrize(
    ("policy", "revert_at", "phase", "how"),
    [pytest.param(p, t, ph, h, id=name) for name, p, t, ph, h in REVERTS],
)
def test_a_revert_is_warm_inside_the_delay_and_cold_after_it(
    policy: dict[str, Any], revert_at: float, phase: str, how: str | None
) -> None:
    md = reverted(idle_until(promoted(**policy), revert_at))
    decision = decide(md, observation=found(md), now=at(revert_at))
    assert str(decision.status.phase) == phase
    assert decision.weight == 0
    assert decision.checks == ()
    if how == "warm":
        assert decision.transitions == (Phase.PROMOTING, Phase.SUCCEEDED)
        assert [e.reason for e in decision.events] == ["InstantRollback", "Promoted"]
        entry = decision.status.history[-1]
        assert (entry.version, entry.instant_rollback) == ("1.0.0", "warm")
        assert f"warm: revision {revision('1.0.0')} still had 3 ready replicas" in entry.reason
        assert "without analysis" in entry.reason
        assert "warm" in decision.status.message
        # The revert of the revert is warm in its turn.
        assert decision.status.warm_revision is not None
        assert decision.status.warm_revision.version == "2.0.0"
    elif phase == "Promoting":
        assert [e.reason for e in decision.events] == ["InstantRollback"]
        assert "cold" in decision.status.message
        assert "has 0 of 3 replicas ready" in decision.status.message
        assert decision.requeue_after == 1.0
        md = settled(md, decision)
        assert replicas_of(md, "2.0.0") == STABLE_REPLICAS  # the stable keeps serving


def test_a_cold_revert_scales_up_and_moves_traffic_once_ready() -> None:
    md = reverted(idle_until(promoted(), 95))
    starting = Observation(canary_ready_replicas=0, stable_replicas=3)
    md = settled(md, decide(md, observation=starting, now=at(95)))
    assert replicas_of(md, "1.0.0") == 3  # scaled up to the stable's size at once
    partly = Observation(canary_ready_replicas=2, stable_replicas=3)
    decision = decide(md, observation=partly, now=at(100))
    assert (decision.status.phase, decision.weight, decision.requeue_after) == (
        Phase.PROMOTING,
        0,
        1.0,
    )
    md = settled(md, decision)
    ready = Observation(canary_ready=True, canary_ready_replicas=3, stable_replicas=3)
    decision = decide(md, observation=ready, now=at(107))
    assert decision.status.phase is Phase.SUCCEEDED
    assert [e.reason for e in decision.events] == ["Promoted"]
    entry = decision.status.history[-1]
    assert entry.instant_rollback == "cold"
    assert "cold: revision" in entry.reason and "after 12s" in entry.reason
    assert "cold" in decision.status.message
    assert decision.status.instant_rollback is False


def test_a_new_canary_ends_the_delay_early() -> None:
    md = reverted(promoted(), "3.0.0")
    decision = decide(md, observation=Observation(stable_replicas=3), now=at(70))
    assert decision.status.phase is Phase.PROGRESSING
    assert decision.status.warm_revision is None
    scaled = [e.message for e in decision.events if e.reason == "PreviousStableScaledDown"]
    assert len(scaled) == 1 and "canary 3.0.0 started" in scaled[0]
    assert replicas_of(settled(md, decision), "1.0.0") == 0


WARM_STATUS = {
    "phase": "Succeeded",
    "stableVersion": "2.0.0",
    "history": [
        {"version": "1.0.0", "promotedAt": "2026-01-01T00:00:00Z"},
        {"version": "2.0.0", "promotedAt": "2026-01-01T00:01:00Z"},
    ],
    "warmRevision": {
        "revision": revision("1.0.0"),
        "version": "1.0.0",
        "scaleDownAt": "2026-01-01T00:01:30Z",
    },
}


@pytest.mark.parametrize(
    ("seconds", "kept", "requeue_after"),
    [
        pytest.param(70, True, 20.0, id="restarted inside the delay: waits out what is left"),
        pytest.param(120, False, None, id="restarted after it: scales down at once"),
    ],
)
def test_a_restarted_operator_keeps_the_deadline_from_the_status_alone(
    seconds: float, kept: bool, requeue_after: float | None
) -> None:
    md = resource(spec={"model": {"version": "2.0.0"}}, status=WARM_STATUS)
    decision = decide(md, observation=Observation(stable_replicas=3), now=at(seconds))
    assert (decision.status.warm_revision is not None) is kept
    assert decision.requeue_after == requeue_after
    assert replicas_of(settled(md, decision), "1.0.0") == (3 if kept else 0)
    # and deciding again changes nothing
    again = decide(
        settled(md, decision), observation=Observation(stable_replicas=3), now=at(seconds)
    )
    assert again.events == () and again.status == decision.status


def test_a_restart_mid_cold_revert_still_says_cold() -> None:
    md = reverted(idle_until(promoted(), 95))
    md = settled(md, decide(md, observation=Observation(stable_replicas=3), now=at(95)))
    # a new operator: only the status carries over
    md = resource(
        spec={"model": {"version": "1.0.0"}},
        status=md.status.model_dump(mode="json", by_alias=True, exclude_none=True),
    )
    assert md.status.instant_rollback is True
    ready = Observation(canary_ready=True, canary_ready_replicas=3, stable_replicas=3)
    decision = decide(md, observation=ready, now=at(103))
    assert decision.status.history[-1].instant_rollback == "cold"
    assert "after 8s" in decision.status.history[-1].reason


def test_the_rollouts_metric_tells_warm_and_cold_reverts_from_promotions() -> None:
    metrics = OperatorMetrics()
    md = resource(status=status_after(resource(status=FIRST), [tick(0), tick(30, GOOD)]))
    ready = Observation(canary_ready=True)
    metrics.record(decide(md, observation=ready, measurements=measured(GOOD), now=at(60)))
    warm = reverted(idle_until(promoted(), 70))
    metrics.record(decide(warm, observation=found(warm), now=at(70)))
    cold = reverted(idle_until(promoted(), 95))
    cold = settled(cold, decide(cold, observation=found(cold), now=at(95)))
    ready = Observation(canary_ready=True, canary_ready_replicas=3, stable_replicas=3)
    metrics.record(decide(cold, observation=ready, now=at(99)))

    def counted(outcome: str) -> float | None:
        return metrics.registry.get_sample_value(
            "torchrollout_rollouts_total", {"outcome": outcome}
        )

    assert counted("promoted") == 1
    assert counted("instant_rollback_warm") == 1
    assert counted("instant_rollback_cold") == 1


def client_selector(md: ModelDeployment) -> dict[str, str]:
    (service,) = (
        o
        for o in plan(md, stable_replicas=STABLE_REPLICAS).objects
        if o["kind"] == "Service" and o["metadata"]["name"] == md.metadata.name
    )
    selector: dict[str, str] = service["spec"]["selector"]
    return selector


def test_warm_pods_take_no_traffic_the_client_service_selects_the_stable_alone() -> None:
    md = promoted()
    assert client_selector(md) == {
        "torchrollout.io/deployment": "fraud",
        "torchrollout.io/revision": revision("2.0.0"),
    }
    # During a canary the replicas router needs every revision behind the client Service,
    # which is why a new canary lets the warm revision go.
    canary = reverted(promoted(), "3.0.0")
    canary = settled(canary, decide(canary, observation=Observation(stable_replicas=3), now=at(70)))
    assert client_selector(canary) == {"torchrollout.io/deployment": "fraud"}
