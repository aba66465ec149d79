"""The decision engine over generated tick sequences: whatever the metrics, the clock, the
platform and the user do mid-rollout, a rollout keeps the lifecycle's promises.

Each generated rollout starts from builders.BASE (stable 1.0.0 serving, canary 2.0.0 in
the spec, checks accuracy and latency-p99) with a generated policy, then runs ticks: time
passes, every check measures Successful, Failed, Inconclusive, Error or nothing, the canary
is ready or not, the router applies the weight at once or a tick late, and the user may
pause, change the version (to a new one, back to the stable or to an older one), change the
steps, or annotate promote, abort or retry. Each decision is fed back as the next status,
as the operator does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.builders import resource
from torchrollout.engine import CheckMeasurements, Decision, Measurement, Observation, decide
from torchrollout.simulation import SIMULATION_START
from torchrollout.spec import ModelDeployment, Phase, Verdict
from torchrollout.spec.status import HISTORY_LIMIT

P = Phase
# Every phase change `decide` can make, from the code (engine/decide.py) and DESIGN.md's
# lifecycle: the first deploy (Pending, Building, Failed, Succeeded); a canary's progress,
# pause, promotion and rollback; a spec naming the stable again cancels a canary (->
# Succeeded); a new version supersedes whatever runs (-> Progressing, or Paused under
# spec.paused, or Promoting for a revert inside rollbackWindow); the promote annotation
# promotes any canary (-> Promoting); abort rolls any running canary back.
ALLOWED_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    P.PENDING: frozenset({P.BUILDING}),
    P.BUILDING: frozenset({P.SUCCEEDED, P.FAILED}),
    P.FAILED: frozenset({P.BUILDING}),
    P.SUCCEEDED: frozenset({P.PROGRESSING, P.PROMOTING, P.PAUSED}),
    P.PROGRESSING: frozenset({P.PAUSED, P.PROMOTING, P.ROLLING_BACK, P.SUCCEEDED}),
    P.PAUSED: frozenset({P.PROGRESSING, P.PROMOTING, P.ROLLING_BACK, P.SUCCEEDED}),
    P.PROMOTING: frozenset({P.SUCCEEDED, P.ROLLING_BACK, P.PROGRESSING, P.PAUSED}),
    P.ROLLING_BACK: frozenset({P.ROLLED_BACK, P.SUCCEEDED, P.PROMOTING, P.PROGRESSING, P.PAUSED}),
    P.ROLLED_BACK: frozenset({P.PROGRESSING, P.PROMOTING, P.SUCCEEDED, P.PAUSED}),
}
# A phase change that writes a history entry (a promotion or a finished rollback).
RECORDED = frozenset({P.SUCCEEDED, P.ROLLED_BACK})

CHECKS = ("accuracy", "latency-p99")
MEASURED_AS: dict[str, dict[str, CheckMeasurements]] = {
    "accuracy": {
        "successful": CheckMeasurements(Measurement.of(0.92, 200), Measurement.of(0.91)),
        "failed": CheckMeasurements(Measurement.of(0.70, 200), Measurement.of(0.91)),
        "inconclusive": CheckMeasurements(Measurement.of(0.92, 3), Measurement.of(0.91)),
        "error": CheckMeasurements(Measurement.error("Prometheus unreachable")),
    },
    "latency-p99": {
        "successful": CheckMeasurements(Measurement.of(40.0, 400), Measurement.of(38.0)),
        "failed": CheckMeasurements(Measurement.of(900.0, 400), Measurement.of(38.0)),
        "inconclusive": CheckMeasurements(Measurement.no_data("no traffic")),
        "error": CheckMeasurements(Measurement.error("bad query")),
    },
}

policies = st.fixed_dictionaries(
    {
        "steps": st.lists(st.integers(1, 99), min_size=1, max_size=4, unique=True).map(sorted),
        "analysis": st.fixed_dictionaries(
            {
                "failureLimit": st.integers(1, 3),
                "inconclusiveLimit": st.integers(1, 3),
                "consecutiveErrorLimit": st.integers(1, 3),
                "onInconclusive": st.sampled_from(["rollback", "pause"]),
                "onError": st.sampled_from(["rollback", "pause"]),
            }
        ),
        "rollbackWindow": st.integers(0, 2),
        "scaleDownDelaySeconds": st.sampled_from([0, 30]),
    }
)
verdicts_per_check = st.fixed_dictionaries(
    {
        name: st.sampled_from(["successful"] * 4 + ["failed", "inconclusive", "error", "missing"])
        for name in CHECKS
    }
)
observations = st.builds(
    Observation,
    canary_ready=st.sampled_from([True, True, True, True, False]),
    canary_ready_replicas=st.none() | st.integers(0, 3),
    stable_replicas=st.integers(1, 3),
    broken=st.sampled_from([None] * 15 + ["archive build failed"]),
)
spec_changes = st.sampled_from(
    [None] * 20
    + [
        {"paused": True},
        {"paused": False},
        {"version": "3.0.0"},
        {"version": "2.0.0"},
        {"version": "1.0.0"},
        {"steps": [5]},
        {"steps": [20, 40, 60, 80]},
    ]
)
requests = st.sampled_from([None] * 20 + ["promote", "abort", "retry"])


@dataclass(frozen=True)
class Tick:
    """One reconcile: seconds since the last, what was measured (None: no analysis ran),
    the platform, the user's edit and annotation, and whether the router lags a tick."""

    seconds: float
    verdicts: dict[str, str] | None
    observation: Observation
    change: dict[str, Any] | None
    request: str | None
    router_lags: bool


ticks = st.builds(
    Tick,
    seconds=st.sampled_from([0, 1, 29, 30, 30, 30, 31, 60, 200]),
    verdicts=st.one_of(st.none(), verdicts_per_check, verdicts_per_check, verdicts_per_check),
    observation=observations,
    change=spec_changes,
    request=requests,
    router_lags=st.sampled_from([False, False, True]),
)


def measurements(verdicts: dict[str, str] | None) -> dict[str, CheckMeasurements] | None:
    if verdicts is None:
        return None
    return {n: MEASURED_AS[n][v] for n, v in verdicts.items() if v != "missing"}


def changed(md: ModelDeployment, change: dict[str, Any] | None) -> ModelDeployment:
    """`md` with the user's edit of its spec."""
    spec = md.spec
    if change is None:
        return md
    if "paused" in change:
        spec = spec.model_copy(update={"paused": change["paused"]})
    if "version" in change:
        model = spec.model.model_copy(update={"version": change["version"]})
        spec = spec.model_copy(update={"model": model})
    if "steps" in change:
        spec = spec.model_copy(update={"canary": spec.canary.model_copy(update=change)})
    return md.model_copy(update={"spec": spec})


def requested(md: ModelDeployment, request: str | None, serial: int) -> ModelDeployment:
    """`md` with only the annotation of `request` (a new value each time), or none."""
    notes = {f"torchrollout.io/{request}": str(serial)} if request else {}
    return md.model_copy(update={"metadata": md.metadata.model_copy(update={"annotations": notes})})


@dataclass
class Rollout:
    """What the test remembers across a generated rollout's decisions."""

    successful_ticks: int = 0
    """Successful analysis ticks of the running canary since it started."""
    promoted_by_hand: bool = False
    decisions: list[tuple[ModelDeployment, Decision, Tick, datetime]] = field(default_factory=list)


def run(policy: dict[str, Any], sequence: list[Tick]) -> Rollout:
    md = resource(spec={"canary": policy})
    now = SIMULATION_START
    rollout = Rollout()
    for serial, tick in enumerate(sequence):
        now += timedelta(seconds=tick.seconds)
        md = requested(changed(md, tick.change), tick.request, serial)
        decision = decide(
            md, observation=tick.observation, measurements=measurements(tick.verdicts), now=now
        )
        again = decide(
            md, observation=tick.observation, measurements=measurements(tick.verdicts), now=now
        )
        assert again == decision, "decide gave two answers to the same input"
        check_decision(md, decision, tick, rollout)
        rollout.decisions.append((md, decision, tick, now))
        status = decision.status
        if tick.router_lags:  # the router still reports the weight it had
            status = status.model_copy(update={"canary_weight": md.status.canary_weight})
        md = md.model_copy(update={"status": status})
    return rollout


def check_decision(md: ModelDeployment, decision: Decision, tick: Tick, rollout: Rollout) -> None:
    """The invariants one decision keeps; see the test functions for what each promises."""
    before, after = md.status, decision.status
    steps = md.spec.canary.steps
    # the weight: never above the current step, none outside a step
    if after.step_index is None or after.phase not in {P.PROGRESSING, P.PAUSED, P.PROMOTING}:
        assert decision.weight == 0
    else:
        assert decision.weight <= steps[min(after.step_index, len(steps) - 1)]
    assert after.canary_weight == decision.weight
    # phase changes: along the lifecycle's edges only
    phases = [before.phase, *decision.transitions]
    for old, new in itertools.pairwise(phases):
        assert new in ALLOWED_TRANSITIONS[old], f"{old} -> {new}"
    assert after.phase == phases[-1]
    # history: at most one entry per transition that records one
    if len(after.history) < HISTORY_LIMIT:
        added = len(after.history) - len(before.history)
        assert 0 <= added <= sum(p in RECORDED for p in decision.transitions)
    # rollback: only finished once the router reported weight 0
    if P.ROLLED_BACK in decision.transitions:
        assert before.canary_weight == 0
        assert decision.weight == 0
    # promotion: never on a Failed tick, only after the policy's Successful ticks
    reasons = [e.reason for e in decision.events]
    if "CanaryStarted" in reasons:
        rollout.successful_ticks, rollout.promoted_by_hand = 0, False
    if any("torchrollout.io/promote" in e.message for e in decision.events):
        rollout.promoted_by_hand = True
    verdicts = {c.verdict for c in decision.checks}
    failed = Verdict.FAILED in verdicts or (decision.checks and not tick.observation.canary_ready)
    if failed:
        assert P.PROMOTING not in decision.transitions
        assert "Promoted" not in reasons
        assert (after.step_index or 0) <= (before.step_index or 0)
    elif decision.checks and verdicts == {Verdict.SUCCESSFUL}:
        rollout.successful_ticks += 1
    analysed = "Promoted" in reasons and not before.instant_rollback
    if analysed and "InstantRollback" not in reasons and not rollout.promoted_by_hand:
        assert rollout.successful_ticks >= len(md.spec.canary.steps)


rollouts = st.tuples(policies, st.lists(ticks, min_size=2, max_size=30))
# A rollout is cheap to decide and has many paths: more of them than the profile's default.
MORE = settings(max_examples=4 * settings.default.max_examples)


@MORE
@given(rollouts)
def test_every_decision_of_a_rollout_keeps_the_lifecycle_invariants(
    generated: tuple[dict[str, Any], list[Tick]],
) -> None:
    """Over any sequence of ticks, every decision is pure (the same input twice, the same
    decision); its weight is never above the current step's and is 0 outside a step; its
    phase changes follow the lifecycle's edges (ALLOWED_TRANSITIONS); it adds at most one
    history entry per promotion or finished rollback; it finishes a rollback only once the
    router reports weight 0; it never promotes or advances on a tick where a check Failed
    (or the canary was not ready); and an analysed promotion follows at least one
    Successful tick per step of the policy."""
    run(*generated)


@MORE
@given(rollouts)
def test_a_decision_applied_and_decided_again_counts_nothing_twice(
    generated: tuple[dict[str, Any], list[Tick]],
) -> None:
    """An operator that applies a decision and restarts before the next tick decides again
    on the status it wrote, with the same measurements at the same time: the tick is not
    counted again, and a promotion or a rollback is never made a second time."""
    for md, decision, tick, now in run(*generated).decisions:
        applied = md.model_copy(update={"status": decision.status})
        again = decide(
            applied, observation=tick.observation, measurements=measurements(tick.verdicts), now=now
        )
        first, second = decision.status.analysis, again.status.analysis
        assert (second.failed, second.inconclusive) == (first.failed, first.inconclusive)
        for once in ("Promoted", "RolledBack", "Deployed"):
            reasons = [e.reason for e in decision.events] + [e.reason for e in again.events]
            assert reasons.count(once) <= 1, f"{once} twice"
