"""The rehearsal loop: the operator's decide → apply cycle, against local processes.

`RolloutLoop.run` starts from a status in which the stable YAML's revision serves all
traffic, and hands the engine the canary YAML, as the operator would see it after a
`kubectl apply`. Then, until the rollout is decided:

1. observe readiness through the platform;
2. when an analysis tick is due, measure every check with `measure_tick` (the operator's
   function, its PromQL templates, the real provider);
3. `decide`, and apply the decision's weight through the platform, writing the weight
   achieved back into the status, as the operator does;
4. when a decision asks to be looked at again at once (`requeue_after == 0`: rolling back,
   promoting), decide again at once, as `simulation.replay` does;
5. sleep until `now + requeue_after`, where `now` is the time the decision was taken (before
   measuring): ticks then fall on exact interval boundaries from the step start instead of
   drifting by the time each tick's queries take.

Time comes from a `Clock` (a monotonic one here, a fake in tests), so the loop is tested
at full speed with `FakePlatform` and `StaticProvider`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from torchrollout.engine import Decision, Event, decide, tick_due, tick_verdict
from torchrollout.engine.fast import watching
from torchrollout.metrics import (
    MetricProvider,
    Target,
    measure_fast,
    measure_tick,
    rollout_targets,
)
from torchrollout.rehearsal.platform import RolloutPlatform
from torchrollout.rehearsal.resources import Pair
from torchrollout.render import expected_mirror, expected_share
from torchrollout.spec.checks import ResolvedCheck
from torchrollout.spec.status import (
    CheckStatus,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    Verdict,
)

_SETTLE_LIMIT = 8
# A decision that still asks for "at once" after settling (a deadline reached to the
# second) is looked at again after this, so time moves on instead of spinning.
_MIN_WAIT = 0.05


class Clock(Protocol):
    """Wall time for the engine and a way to wait."""

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """UTC time that never steps back (anchored once, then advanced by the monotonic clock)."""

    def __init__(self) -> None:
        self._wall = datetime.now(UTC)
        self._mono = time.monotonic()

    def now(self) -> datetime:
        return self._wall + timedelta(seconds=time.monotonic() - self._mono)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)  # a signal handler may raise out of it: that is the way out


@dataclass
class FakeClock:
    """Time that moves only when the loop sleeps. For tests."""

    current: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.current += timedelta(seconds=max(0.0, seconds))


@dataclass(frozen=True)
class TickRecord:
    """One decision, as applied: what the engine saw, said and what the router did."""

    t: float  # seconds since the canary started
    phase: Phase
    weight: int  # the canary weight achieved
    canary_share: int  # percent of traffic on the canary's version (100 once promoted)
    step_index: int | None
    verdict: Verdict | None  # the tick's verdict, when this decision ran analysis
    checks: tuple[CheckStatus, ...]
    baselines: dict[str, float | None]  # stable values of checks that do not compare
    failed: int
    inconclusive: int
    consecutive_errors: int
    message: str
    events: tuple[Event, ...]
    transitions: tuple[Phase, ...]
    measure_seconds: float = 0.0
    applied: float = 0.0  # seconds since the canary started, once the weight was set


@dataclass(frozen=True)
class Outcome:
    """How the rollout ended, and every decision on the way."""

    phase: Phase
    promoted: bool
    message: str
    records: tuple[TickRecord, ...]
    started_at: datetime
    elapsed: float
    reason: str  # promoted, rolled-back, failed, paused, timeout

    @property
    def exit_code(self) -> int:
        return 0 if self.promoted else 1


Listener = Callable[[TickRecord], None]


def initial_status(pair: Pair, now: datetime) -> ModelDeploymentStatus:
    """The stable YAML's revision serving everything, as after a successful first deploy."""
    stable = pair.stable
    return ModelDeploymentStatus(
        phase=Phase.SUCCEEDED,
        message=f"version {stable.version} serves all traffic",
        stable_revision=stable.revision,
        stable_version=stable.version,
        history=[
            HistoryEntry(
                version=stable.version,
                revision=stable.revision,
                promoted_at=now,
                reason="stable before the rehearsal",
            )
        ],
    )


def time_limit(pair: Pair) -> float:
    """Seconds after which a rollout that has not ended is called undecided.

    Every analysed tick advances a step or counts against a limit, so a rollout ends
    within this many intervals; the margin covers readiness and promotion.
    """
    canary = pair.canary.spec.canary
    policy = canary.analysis
    ticks = (
        len(canary.steps)
        + policy.failure_limit
        + policy.inconclusive_limit
        + policy.consecutive_error_limit
        + 2
    )
    return canary.progress_deadline_seconds + ticks * canary.interval_seconds


class RolloutLoop:
    """Drives one canary through the engine until it is promoted or rolled back."""

    def __init__(
        self,
        pair: Pair,
        *,
        platform: RolloutPlatform,
        provider: MetricProvider,
        clock: Clock,
        listener: Listener | None = None,
    ) -> None:
        self.pair = pair
        self.platform = platform
        self.provider = provider
        self.clock = clock
        self.listener = listener
        self.checks: list[ResolvedCheck] = pair.canary.spec.canary.analysis.resolved_checks()
        self.records: list[TickRecord] = []
        self.started_at = clock.now()

    def run(self) -> Outcome:
        self.started_at = start = self.clock.now()
        status = initial_status(self.pair, start)
        limit = time_limit(self.pair)
        while True:
            now = self.clock.now()
            status, requeue = self._step(status, now)
            reason = _ended(status, self.pair.canary.revision)
            if reason is None and requeue is None:
                # Nothing changes on its own any more: a policy paused it, and a rehearsal
                # has nobody to annotate retry, promote or abort.
                reason = "paused" if status.phase is Phase.PAUSED else "stuck"
            elapsed = (now - start).total_seconds()
            if reason is None and requeue is not None and elapsed + requeue > limit:
                reason = "timeout"
            if reason is not None:
                return Outcome(
                    phase=status.phase,
                    promoted=reason == "promoted",
                    message=status.message,
                    records=tuple(self.records),
                    started_at=start,
                    elapsed=(self.clock.now() - start).total_seconds(),
                    reason=reason,
                )
            wake = now + timedelta(seconds=max(requeue or 0.0, _MIN_WAIT))
            self.clock.sleep((wake - self.clock.now()).total_seconds())

    # -- one pass ----------------------------------------------------------------------

    def _step(
        self, status: ModelDeploymentStatus, now: datetime
    ) -> tuple[ModelDeploymentStatus, float | None]:
        resource = self.pair.canary.resource
        spec = resource.spec
        measurements = None
        baselines: dict[str, float | None] = {}
        took = 0.0
        if (
            status.phase is Phase.PROGRESSING
            and status.step_index is not None
            and tick_due(spec, status, now)
        ):
            began = time.monotonic()
            canary, stable = self._targets(status)
            measurements = measure_tick(self.provider, self.checks, canary=canary, stable=stable)
            # Display only: the stable value of checks the engine does not compare with it.
            for check in self.checks:
                if not check.compares_with_stable:
                    baselines[check.name] = self.provider.measure(check, stable).value
            took = time.monotonic() - began
        fast = None
        current = resource.model_copy(update={"status": status})
        if measurements is None and watching(spec, status):
            fast = measure_fast(self.provider, current)
        decision: Decision | None = None
        for _ in range(_SETTLE_LIMIT):
            observation = self.platform.observe(
                stable=status.stable_revision or "", canary=self._canary_of(status)
            )
            current = resource.model_copy(update={"status": status})
            decision = decide(
                current, observation=observation, measurements=measurements, fast=fast, now=now
            )
            status = self._apply(decision)
            self._record(decision, status, now, baselines, took)
            measurements, fast, baselines, took = None, None, {}, 0.0
            if decision.requeue_after != 0:
                break
        assert decision is not None
        return status, decision.requeue_after

    def _canary_of(self, status: ModelDeploymentStatus) -> str | None:
        revision = self.pair.canary.revision
        return None if revision == status.stable_revision else revision

    def _targets(self, status: ModelDeploymentStatus) -> tuple[Target, Target]:
        resource = self.pair.canary.resource
        return rollout_targets(resource.model_copy(update={"status": status}))

    def _apply(self, decision: Decision) -> ModelDeploymentStatus:
        status = decision.status
        # The share the spec's router would give, not the step: whole pods with `replicas`.
        resource = self.pair.canary.resource.model_copy(update={"status": status})
        share = expected_share(resource, stable_replicas=resource.spec.runtime.replicas)
        achieved = self.platform.set_weight(
            stable=status.stable_revision or "",
            canary=status.canary_revision,
            weight=share,
            mirror=expected_mirror(resource),
        )
        return status.model_copy(update={"canary_weight": achieved})

    def _record(
        self,
        decision: Decision,
        status: ModelDeploymentStatus,
        now: datetime,
        baselines: dict[str, float | None],
        took: float,
    ) -> None:
        analysis = status.analysis
        record = TickRecord(
            t=(now - self.started_at).total_seconds(),
            phase=status.phase,
            weight=status.canary_weight,
            canary_share=(
                100 if status.stable_revision == self.pair.canary.revision else status.canary_weight
            ),
            step_index=status.step_index,
            verdict=tick_verdict(c.verdict for c in decision.checks) if decision.checks else None,
            checks=decision.checks,
            baselines=baselines,
            failed=analysis.failed,
            inconclusive=analysis.inconclusive,
            consecutive_errors=analysis.consecutive_errors,
            message=status.message,
            events=decision.events,
            transitions=decision.transitions,
            measure_seconds=took,
            applied=(self.clock.now() - self.started_at).total_seconds(),
        )
        self.records.append(record)
        if self.listener is not None:
            self.listener(record)


def _ended(status: ModelDeploymentStatus, canary_revision: str) -> str | None:
    if status.phase is Phase.SUCCEEDED and status.stable_revision == canary_revision:
        return "promoted"
    if status.phase is Phase.ROLLED_BACK:
        return "rolled-back"
    if status.phase is Phase.FAILED:
        return "failed"
    return None
