"""The canary decision: (resource, observation, measurements, now) -> Decision.

`decide` is a pure function. Everything it needs to continue a rollout is in the
resource's status, so an operator restarted at any moment calls it again with what it
reads from the cluster and gets the same answer: a transition already recorded in the
status is never made twice, and a tick already counted (`analysis.lastTick`) is not
counted again until an interval has passed.

The lifecycle (see DESIGN.md): the first revision deploys without a canary; a new
revision becomes a canary that waits to be Ready (within `progressDeadlineSeconds`),
then takes `steps` of traffic, one interval each, advancing only when every check is
Successful; Failed, Inconclusive and Error ticks count against their own limits; past
the last step it is promoted, or at a limit rolled back (weight to 0 first, then scaled
down). A critical check rolls back on its first Failed tick, and between ticks the fast
watch (engine/fast.py) rolls back a canary whose critical readings are catastrophic. A
revert to a recently promoted revision switches back without analysis: warm, in the same
decision, while the previous stable still has its replicas (`canary.scaleDownDelaySeconds`
after a promotion, see engine/warm.py), else cold, once its pods are ready again.
Annotations promote, abort and retry by hand; `spec.paused` holds everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from torchrollout.engine.assess import assess_check, tick_verdict
from torchrollout.engine.conditions import reconcile_conditions
from torchrollout.engine.fast import catastrophe, watching
from torchrollout.engine.types import CheckMeasurements, Decision, Event, Observation
from torchrollout.engine.warm import (
    instant_rollback_detail,
    scale_down_reason,
    seconds_until_scale_down,
    warm_after_promotion,
)
from torchrollout.spec.document import ModelDeployment, compute_revision
from torchrollout.spec.status import (
    HISTORY_LIMIT,
    AnalysisStatus,
    CheckStatus,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    Verdict,
)

if TYPE_CHECKING:
    from datetime import datetime

    from torchrollout.spec.resource import ModelDeploymentSpec

_INITIAL_PHASES = frozenset({Phase.PENDING, Phase.BUILDING, Phase.FAILED})


def decide(
    resource: ModelDeployment,
    *,
    observation: Observation,
    measurements: Mapping[str, CheckMeasurements] | None = None,
    fast: Mapping[str, CheckMeasurements] | None = None,
    now: datetime,
) -> Decision:
    """What to do for `resource` now; never raises for odd measurements.

    `measurements` are a tick's (every check over `interval`), `fast` the fast watch's
    (the critical checks over its short window, see engine/fast.py)."""
    run = _Run(resource, observation, measurements, now, fast)
    run.step()
    run.keep_or_scale_down_previous_stable()
    return run.finish()


def desired_weight(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> int:
    """The canary weight a status asks the router for."""
    if status.phase not in {Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING}:
        return 0
    if status.canary_revision is None or status.step_index is None:
        return 0
    steps = spec.canary.steps
    return steps[min(status.step_index, len(steps) - 1)]


def rollback_window(status: ModelDeploymentStatus, size: int) -> list[HistoryEntry]:
    """The last `size` promoted revisions other than the stable one, newest first."""
    seen = {status.stable_revision}
    window: list[HistoryEntry] = []
    for entry in reversed(status.history):
        if len(window) >= size:
            break
        if entry.promoted_at is not None and entry.revision not in seen:
            seen.add(entry.revision)
            window.append(entry)
    return window


def seconds_until_tick(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime
) -> float:
    """Seconds until the next analysis tick is due (0 when it is due now)."""
    last = status.analysis.last_tick
    if last is None:
        return 0.0
    return max(0.0, spec.canary.interval_seconds - (now - last).total_seconds())


def tick_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> bool:
    # Timers fire a little early or late; a tick within 5% (at most 1 s) of its time counts.
    slack = min(1.0, 0.05 * spec.canary.interval_seconds)
    return seconds_until_tick(spec, status, now) <= slack


class _Run:
    """One call of `decide`: the inputs, the status being built and what to report."""

    def __init__(
        self,
        resource: ModelDeployment,
        observation: Observation,
        measurements: Mapping[str, CheckMeasurements] | None,
        now: datetime,
        fast: Mapping[str, CheckMeasurements] | None = None,
    ) -> None:
        self.resource = resource
        self.fast = fast
        self.spec = resource.spec
        self.status = resource.status
        self.observation = observation
        self.measurements = measurements
        self.now = now
        self.revision = compute_revision(resource.spec)
        self.version = resource.spec.model.version
        self.events: list[Event] = []
        self.ignored: list[str] = []
        self.requeue_after: float | None = None
        self.checks: tuple[CheckStatus, ...] = ()
        self.transitions: list[Phase] = []
        self.warm_revert = False
        """This decision found the reverted-to revision ready with all its replicas."""
        present = resource.requests()
        handled = self.status.handled_requests
        self.requests = {k for k, v in present.items() if handled.get(k) != v}
        # Only requests still present are remembered, so the same value works again
        # once the annotation has been removed.
        self.update(handled_requests=present)

    # -- building the result -------------------------------------------------------

    def update(self, **changes: Any) -> None:
        phase = changes.get("phase")
        if phase is not None and phase is not self.status.phase:
            self.transitions.append(phase)
        self.status = self.status.model_copy(update=changes)

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def requeue(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.requeue_after = (
            seconds if self.requeue_after is None else min(self.requeue_after, seconds)
        )

    def elapsed(self, since: datetime | None) -> float:
        return 0.0 if since is None else (self.now - since).total_seconds()

    def take_request(self, name: str) -> bool:
        if name in self.requests:
            self.requests.discard(name)
            return True
        return False

    def finish(self) -> Decision:
        for request in sorted(self.requests):
            self.ignored.append(
                f"{request} request ignored: nothing to {request} in phase {self.status.phase}"
            )
        if self.measurements and self.status.phase is not Phase.PROGRESSING:
            self.ignored.append(f"measurements ignored: no analysis in phase {self.status.phase}")
        weight = desired_weight(self.spec, self.status)
        self.update(
            canary_weight=weight,
            observed_generation=self.resource.metadata.generation,
            conditions=reconcile_conditions(
                self.status,
                stable_ready=self.observation.stable_ready,
                generation=self.resource.metadata.generation,
                now=self.now,
            ),
        )
        return Decision(
            status=self.status,
            weight=weight,
            events=tuple(self.events),
            requeue_after=self.requeue_after,
            checks=self.checks,
            transitions=tuple(self.transitions),
            ignored=tuple(self.ignored),
        )

    # -- where the resource is -------------------------------------------------------

    def step(self) -> None:
        status = self.status
        if status.phase in _INITIAL_PHASES or status.stable_revision is None:
            self.initial_deploy()
        elif self.revision == status.stable_revision:
            self.at_stable()
        elif self.revision == status.canary_revision and (
            status.canary_active or status.phase is Phase.ROLLED_BACK
        ):
            self.canary()
        else:
            self.new_revision()

    def initial_deploy(self) -> None:
        if self.status.stable_revision != self.revision or self.take_request("retry"):
            self.update(
                phase=Phase.BUILDING,
                stable_revision=self.revision,
                stable_version=self.version,
                progress_started_at=self.now,
                message=f"deploying version {self.version} (revision {self.revision})",
            )
            self.event("Normal", "Deploying", self.status.message)
        if self.status.phase is Phase.FAILED:
            return
        if self.observation.stable_ready:
            self.update(
                phase=Phase.SUCCEEDED,
                message=f"version {self.version} serves all traffic",
                history=_appended(
                    self.status.history, self.history_entry(promoted=True, reason="first deploy")
                ),
            )
            self.event("Normal", "Deployed", self.status.message)
            return
        deadline = self.spec.canary.progress_deadline_seconds
        elapsed = self.elapsed(self.status.progress_started_at)
        broken = self.observation.broken
        if broken is not None:
            self.update(
                phase=Phase.FAILED,
                message=f"version {self.version} cannot start: {broken}; fix the model or "
                "runtime and change the spec, or annotate torchrollout.io/retry",
            )
            self.event("Warning", "DeployFailed", self.status.message)
        elif elapsed > deadline:
            self.update(
                phase=Phase.FAILED,
                message=f"version {self.version} was not ready within {deadline}s "
                f"(progressDeadlineSeconds){self.waiting_on()}; fix the model or runtime "
                "and change the spec, or annotate torchrollout.io/retry",
            )
            self.event("Warning", "ProgressDeadlineExceeded", self.status.message)
        else:
            self.requeue(min(5.0, deadline - elapsed))

    def at_stable(self) -> None:
        status = self.status
        if status.phase is Phase.SUCCEEDED:
            return
        what = "canary cancelled" if status.canary_active else "nothing to roll out"
        self.update(
            phase=Phase.SUCCEEDED,
            canary_revision=None,
            canary_version=None,
            step_index=None,
            pause_reason=None,
            rollback_reason=None,
            instant_rollback=False,
            message=f"spec names the stable version {status.stable_version}; {what}",
        )
        self.event("Normal", "Reverted", self.status.message)

    def new_revision(self) -> None:
        status = self.status
        if self.spec.paused:
            if status.phase is not Phase.PAUSED:
                self.event("Normal", "Paused", "paused by spec.paused")
            self.update(
                phase=Phase.PAUSED,
                pause_reason="Manual",
                message=f"version {self.version} (revision {self.revision}) waits: "
                "spec.paused is true",
            )
            return
        if status.canary_active:
            self.event(
                "Normal",
                "Superseded",
                f"canary {status.canary_version} (revision {status.canary_revision}) "
                f"superseded by {self.version} (revision {self.revision})",
            )
        fresh = self.fresh_canary()
        windowed = {e.revision for e in rollback_window(status, self.spec.canary.rollback_window)}
        if self.revision in windowed:
            self.instant_rollback(fresh)
            return
        self.start_canary(fresh)

    def instant_rollback(self, fresh: dict[str, Any]) -> None:
        """Back to a recently promoted revision, without analysis: at once when it is still
        warm (ready, with the stable's replicas), else once its pods are ready again."""
        obs = self.observation
        self.warm_revert = self.canary_full()
        ready = obs.canary_ready_replicas
        if self.warm_revert:
            n = obs.stable_replicas if ready is None else ready
            state = f"warm, revision {self.revision} still has {n} ready {_replicas(n)}"
        else:
            state = (
                f"cold, revision {self.revision} has {ready or 0} of {obs.stable_replicas} "
                f"{_replicas(obs.stable_replicas)} ready; waiting for them"
            )
        self.update(
            **{**fresh, "step_started_at": self.now, "instant_rollback": True},
            phase=Phase.PROMOTING,
            message=f"rolling back to version {self.version} without analysis "
            f"(rollbackWindow): {state}",
        )
        self.event("Normal", "InstantRollback", self.status.message)
        self.promoting()

    def fresh_canary(self) -> dict[str, Any]:
        """Status fields of a canary of the spec's revision that has just begun."""
        return {
            "canary_revision": self.revision,
            "canary_version": self.version,
            "step_index": None,
            "progress_started_at": self.now,
            "step_started_at": None,
            "pause_reason": None,
            "rollback_reason": None,
            "instant_rollback": False,
            "analysis": AnalysisStatus(),
        }

    def start_canary(self, fresh: dict[str, Any]) -> None:
        self.update(
            **fresh,
            phase=Phase.PROGRESSING,
            message=f"canary {self.version} (revision {self.revision}) is starting",
        )
        self.event("Normal", "CanaryStarted", self.status.message)
        self.progressing()

    def canary(self) -> None:
        phase = self.status.phase
        if self.take_request("abort") and phase is not Phase.ROLLED_BACK:
            self.rollback("aborted by the torchrollout.io/abort annotation")
            return
        if self.take_request("retry"):
            self.retry()
            return
        if self.take_request("promote"):
            self.update(phase=Phase.PROMOTING, step_started_at=self.now, pause_reason=None)
            self.update(
                message=f"promoting {self.version} by the torchrollout.io/promote annotation"
            )
            self.event("Normal", "Promoting", self.status.message)
            self.promoting()
            return
        if phase is Phase.PAUSED:
            self.paused()
        elif phase is Phase.PROGRESSING:
            if self.spec.paused:
                self.update(
                    phase=Phase.PAUSED, pause_reason="Manual", message="paused by spec.paused"
                )
                self.event("Normal", "Paused", self.status.message)
            else:
                self.progressing()
        elif phase is Phase.PROMOTING:
            self.promoting()
        elif phase is Phase.ROLLING_BACK:
            self.rolling_back()

    def retry(self) -> None:
        if self.status.phase is Phase.ROLLED_BACK:
            self.event("Normal", "Retry", f"retrying canary {self.version}")
            self.start_canary(self.fresh_canary())
            return
        if self.status.phase in {Phase.PROGRESSING, Phase.PAUSED}:
            self.update(
                phase=Phase.PAUSED if self.spec.paused else Phase.PROGRESSING,
                pause_reason="Manual" if self.spec.paused else None,
                analysis=AnalysisStatus(last_tick=self.now),
                message=f"analysis of canary {self.version} restarted by torchrollout.io/retry",
            )
            self.event("Normal", "Retry", self.status.message)
            return
        self.ignored.append(f"retry request ignored: phase {self.status.phase}")

    def paused(self) -> None:
        if self.spec.paused:
            return
        if self.status.pause_reason in {None, "Manual"}:
            self.update(
                phase=Phase.PROGRESSING,
                pause_reason=None,
                analysis=self.status.analysis.model_copy(update={"last_tick": self.now}),
                message=f"canary {self.version} resumed",
            )
            self.event("Normal", "Resumed", self.status.message)
            self.requeue(self.spec.canary.interval_seconds)

    # -- the canary's own progress -----------------------------------------------------

    def progressing(self) -> None:
        if self.status.step_index is None:
            self.wait_for_ready()
            return
        if self.measurements is not None and tick_due(self.spec, self.status, self.now):
            self.analyse(self.measurements)
            self.measurements = None
            return
        if self.measurements is not None:
            wait = seconds_until_tick(self.spec, self.status, self.now)
            self.ignored.append(f"measurements ignored: the next analysis is due in {wait:g}s")
            self.measurements = None
        if self.fast is not None and watching(self.spec, self.status):
            reason = catastrophe(self.spec, self.fast)
            if reason is not None:
                self.rollback(f"fast watch: {reason}")
                return
        self.requeue_until_next_look()

    def requeue_until_next_look(self) -> None:
        """Call back at the next tick, or sooner for the fast watch while it runs."""
        wait = seconds_until_tick(self.spec, self.status, self.now)
        if watching(self.spec, self.status):
            wait = min(wait, self.spec.canary.fast_interval_seconds)
        self.requeue(wait)

    def wait_for_ready(self) -> None:
        if self.measurements:
            self.ignored.append("measurements ignored: the canary is not at its first step yet")
            self.measurements = None
        if self.observation.canary_ready:
            self.enter_step(0, "canary is ready")
            return
        deadline = self.spec.canary.progress_deadline_seconds
        elapsed = self.elapsed(self.status.progress_started_at)
        if self.observation.broken is not None:
            self.rollback(f"canary cannot start: {self.observation.broken}")
        elif elapsed > deadline:
            self.rollback(
                f"canary was not ready within {deadline}s (progressDeadlineSeconds)"
                + self.waiting_on()
            )
        else:
            self.requeue(min(5.0, deadline - elapsed))

    def waiting_on(self) -> str:
        waiting = self.observation.waiting_on
        return f": {waiting}" if waiting else ""

    def enter_step(self, index: int, why: str) -> None:
        weight = self.spec.canary.steps[index]
        # The share the router achieves is status.canaryWeight, which the operator writes
        # after applying this; the message names the step and leaves the share to it.
        self.update(
            step_index=index,
            step_started_at=self.now,
            analysis=self.status.analysis.model_copy(update={"last_tick": self.now}),
            message=f"canary {self.version} at step {index + 1}/{len(self.spec.canary.steps)}",
        )
        self.event(
            "Normal", "StepAdvanced", f"{why}; {self.status.message} (asks {weight}% of traffic)"
        )
        self.requeue_until_next_look()

    def analyse(self, measurements: Mapping[str, CheckMeasurements]) -> None:
        policy = self.spec.canary.analysis
        checks = policy.resolved_checks()
        names = {c.name for c in checks}
        for unknown in sorted(set(measurements) - names):
            self.ignored.append(f"measurement of unknown check {unknown!r} ignored")
        results = [assess_check(c, measurements.get(c.name)) for c in checks]
        self.checks = tuple(results)
        verdict = tick_verdict(r.verdict for r in results)
        if not self.observation.canary_ready:
            verdict = Verdict.FAILED
        before = self.status.analysis
        analysis = AnalysisStatus(
            last_tick=self.now,
            checks=results,
            failed=before.failed + (verdict is Verdict.FAILED),
            inconclusive=before.inconclusive + (verdict is Verdict.INCONCLUSIVE),
            consecutive_errors=(
                before.consecutive_errors + 1
                if any(r.verdict is Verdict.ERROR for r in results)
                else 0
            ),
        )
        self.update(analysis=analysis)
        problems = grouped_problems(results)
        if not self.observation.canary_ready:
            problems.insert(0, "canary is not ready")
        summary = "; ".join(problems)
        critical = [
            c.name
            for c, r in zip(checks, results, strict=True)
            if c.critical and r.verdict is Verdict.FAILED
        ]

        if critical and self.observation.canary_ready:
            self.rollback(f"{summary} (critical: {', '.join(critical)})")
        elif analysis.failed >= policy.failure_limit:
            self.rollback(
                f"{summary} ({analysis.failed} failed ticks, failureLimit {policy.failure_limit})"
            )
        elif analysis.consecutive_errors >= policy.consecutive_error_limit:
            self.give_up(
                policy.on_error,
                "Error",
                f"{analysis.consecutive_errors} ticks in a row with metric errors: {summary}",
            )
        elif analysis.inconclusive >= policy.inconclusive_limit:
            self.give_up(
                policy.on_inconclusive,
                "Inconclusive",
                f"{analysis.inconclusive} inconclusive ticks: {summary}",
            )
        elif verdict is Verdict.SUCCESSFUL:
            self.advance()
        else:
            kind: Literal["Normal", "Warning"] = (
                "Normal" if verdict is Verdict.INCONCLUSIVE else "Warning"
            )
            self.event(kind, f"Analysis{verdict}", summary)
            self.requeue_until_next_look()

    def give_up(
        self,
        policy: Literal["rollback", "pause"],
        why: Literal["Error", "Inconclusive"],
        message: str,
    ) -> None:
        if policy == "rollback":
            self.rollback(message)
            return
        self.update(
            phase=Phase.PAUSED,
            pause_reason=why,
            message=f"paused: {message}; annotate torchrollout.io/retry, promote or abort",
        )
        self.event("Warning", "Paused", self.status.message)

    def advance(self) -> None:
        index = self.status.step_index
        assert index is not None  # advance follows an analysed step
        if index + 1 < len(self.spec.canary.steps):
            self.enter_step(index + 1, "all checks passed")
            return
        self.update(
            phase=Phase.PROMOTING,
            step_started_at=self.now,
            message=f"canary {self.version} passed every step; promoting",
        )
        self.event("Normal", "Promoting", self.status.message)
        self.promoting()

    def canary_full(self) -> bool:
        """The spec's revision is ready with (at least) the stable's replica count."""
        obs = self.observation
        full = obs.canary_ready_replicas is None or obs.canary_ready_replicas >= obs.stable_replicas
        return obs.canary_ready and full

    def promoting(self) -> None:
        obs = self.observation
        if self.canary_full():
            self.promote()
            return
        deadline = self.spec.canary.progress_deadline_seconds
        if self.elapsed(self.status.step_started_at) > deadline:
            self.rollback(
                f"canary did not reach {obs.stable_replicas} ready replicas within {deadline}s "
                "(progressDeadlineSeconds) while promoting"
            )
        else:
            self.requeue(1.0)

    def promote(self) -> None:
        status = self.status
        how: Literal["warm", "cold"] | None = None
        if status.instant_rollback:
            how = "warm" if self.warm_revert else "cold"
            obs = self.observation
            detail = instant_rollback_detail(
                how,
                revision=status.canary_revision or self.revision,
                ready=obs.canary_ready_replicas or obs.stable_replicas,
                waited=self.elapsed(status.step_started_at),
            )
            reason = f"instant rollback without analysis (rollbackWindow), {detail}"
            message = (
                f"rolled back to version {status.canary_version}, {detail}; it serves all traffic"
            )
        else:
            reason = status.message
            message = f"version {status.canary_version} promoted; it serves all traffic"
        entry = self.history_entry(promoted=True, reason=reason, instant_rollback=how)
        warm = warm_after_promotion(self.spec, status, self.now)
        self.update(
            phase=Phase.SUCCEEDED,
            stable_revision=status.canary_revision,
            stable_version=status.canary_version,
            canary_revision=None,
            canary_version=None,
            step_index=None,
            step_started_at=None,
            pause_reason=None,
            instant_rollback=False,
            warm_revision=warm,
            history=_appended(status.history, entry),
            message=message,
        )
        self.event("Normal", "Promoted", self.status.message)

    def keep_or_scale_down_previous_stable(self) -> None:
        """Keep the previous stable warm until its delay ends (and be called back then), or
        let it go: the renderer scales it to zero once the status no longer names it."""
        warm = self.status.warm_revision
        if warm is None:
            return
        left = seconds_until_scale_down(warm, self.now)
        why = scale_down_reason(self.spec, self.status, warm, left)
        if why is None:
            self.requeue(left)
            return
        self.update(warm_revision=None)
        if why:
            self.event("Normal", "PreviousStableScaledDown", why)

    def rollback(self, reason: str) -> None:
        self.update(
            phase=Phase.ROLLING_BACK,
            rollback_reason=reason,
            pause_reason=None,
            instant_rollback=False,
            message=f"rolling back {self.status.canary_version}: {reason}",
        )
        self.event("Warning", "RollingBack", self.status.message)
        self.rolling_back()

    def rolling_back(self) -> None:
        # The router reported weight 0 (written into status after the last decision):
        # nothing reaches the canary any more, so it can be scaled down.
        if self.status.canary_weight != 0:
            self.requeue(0.0)
            return
        reason = self.status.rollback_reason or "rolled back"
        entry = self.history_entry(promoted=False, reason=reason)
        self.update(
            phase=Phase.ROLLED_BACK,
            step_index=None,
            step_started_at=None,
            history=_appended(self.status.history, entry),
            message=f"rolled back {self.status.canary_version}: {reason}",
        )
        self.event("Warning", "RolledBack", self.status.message)

    def history_entry(
        self,
        *,
        promoted: bool,
        reason: str,
        instant_rollback: Literal["warm", "cold"] | None = None,
    ) -> HistoryEntry:
        status = self.status
        canary = status.canary_revision is not None and status.phase is not Phase.BUILDING
        revision = (status.canary_revision if canary else status.stable_revision) or self.revision
        return HistoryEntry(
            version=(status.canary_version if canary else status.stable_version) or self.version,
            revision=revision,
            archive_digest=status.archive_digest(revision),
            promoted_at=self.now if promoted else None,
            rolled_back_at=None if promoted else self.now,
            reason=reason,
            instant_rollback=instant_rollback,
        )


def grouped_problems(results: Sequence[CheckStatus]) -> list[str]:
    """What kept the checks from passing, one line per cause: checks that failed for the
    same reason (one Prometheus outage) are named together, the reason said once."""
    by_message: dict[str, list[str]] = {}
    for result in results:
        if result.verdict is not Verdict.SUCCESSFUL and result.message:
            by_message.setdefault(result.message, []).append(result.name)
    return [
        f"{names[0]}: {message}"
        if len(names) == 1
        else f"{len(names)} checks ({', '.join(names)}): {message}"
        for message, names in by_message.items()
    ]


def _appended(history: list[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    return [*history, entry][-HISTORY_LIMIT:]


def _replicas(count: int) -> str:
    return "replica" if count == 1 else "replicas"
