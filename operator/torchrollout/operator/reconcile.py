"""One reconciliation of one ModelDeployment: gather, decide, apply, report.

`Reconciler.reconcile` reads the resource and its Deployments fresh from the API (never
from a possibly stale event body), measures the checks when a tick is due, asks the
engine what to do, applies the renderers' plan, reads back the weight the router
achieved, and writes the status only when it changed. Transitions that need no waiting
(a rollback once the weight is 0, a promotion once the canary is full) are settled in
the same call. Events are written into the status with it and posted after it, each
once (`torchrollout.operator.announcements`), so a crash in between loses none and
repeats none.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from torchrollout.engine import (
    Decision,
    Event,
    Observation,
    decide,
    tick_due,
)
from torchrollout.engine.fast import fast_checks, watching
from torchrollout.errors import SpecError
from torchrollout.metrics import MetricProvider, measure_fast, measure_tick, rollout_targets
from torchrollout.operator.announcements import EventSink, creator, post_pending, with_pending
from torchrollout.operator.archives import (
    BuildState,
    archive_condition,
    current_build,
    drop_superseded_builds,
)
from torchrollout.operator.autoscalers import (
    SCALED_OBJECT,
    autoscaler_condition,
    drop_previous_autoscaler,
    engine_of,
)
from torchrollout.operator.cluster import ClusterApi, ClusterError, KindNotInstalled, apply
from torchrollout.operator.evaluation import (
    EvaluationSender,
    evaluation_condition,
    without_labels,
)
from torchrollout.operator.notifier import Notifier, notifications_condition
from torchrollout.operator.pods import PodTrouble, pod_trouble, pods_condition, refused_condition
from torchrollout.operator.routers import (
    Workload,
    drop_previous_routes,
    router_for,
    share_condition,
)
from torchrollout.operator.scaling import autoscale, reported, stable_desired
from torchrollout.operator.telemetry import OperatorMetrics
from torchrollout.render import DEFAULT_PROMETHEUS_URL, names, plan, route_names
from torchrollout.spec.checks import ResolvedCheck
from torchrollout.spec.document import (
    API_VERSION,
    KIND,
    ModelDeployment,
    compute_revision,
    parse_model_deployment,
)
from torchrollout.spec.status import (
    Condition,
    ModelDeploymentStatus,
    PendingEvent,
    Phase,
    without_nulls,
)

log = logging.getLogger(__name__)
# Drift of the objects a settled resource owns is repaired this often; waits on the platform
# have their own, shorter looks. 900 s as Argo Rollouts' resync: at 300 s a fleet of 2000
# cost 17% of a core while idle (bench/operator_scale.py), 22 ms of CPU a look.
RESYNC_SECONDS = 900.0
NOTIFY_RECHECK = 5.0
STARTING_RECHECK = 2.0
SCALING_REFRESH = 60.0
TROUBLE_RECHECK = 10.0
# Conditions whose False waits on something outside the spec (a CRD or KEDA installed, a
# Secret or a dataset made reachable, pods scheduled), not on an edit of the resource.
PLATFORM_CONDITIONS = frozenset(
    {"RouterReady", "AutoscalerReady", "PodsReady", "EvaluationReady", "NotificationsReady"}
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Outcome:
    """What a reconciliation did, and when to look again."""

    requeue_after: float | None
    status_written: bool = False
    events: list[Event] = field(default_factory=list)


class Reconciler:
    """Reconciles ModelDeployments through a ClusterApi and a MetricProvider."""

    def __init__(
        self,
        cluster: ClusterApi,
        provider: MetricProvider,
        *,
        post_event: EventSink | None = None,
        clock: Callable[[], datetime] = utc_now,
        metrics: OperatorMetrics | None = None,
        evaluation: EvaluationSender | None = None,
        notifier: Notifier | None = None,
        archive_store: str | None = None,
        prometheus_url: str = DEFAULT_PROMETHEUS_URL,
        network_policy_metrics_namespace: str | None = None,
        settle_limit: int = 4,
        resync_seconds: float = RESYNC_SECONDS,
    ) -> None:
        self.cluster = cluster
        self.provider = provider
        self.post_event = post_event or creator(cluster)  # Events: created once by name
        self.clock = clock
        self.metrics = metrics or OperatorMetrics()
        self.evaluation = evaluation
        self.notifier = notifier  # announces milestones to the resource's notification targets
        self.archive_store = archive_store
        self.prometheus_url = prometheus_url  # where a KEDA ScaledObject reads its signal
        # Set: each ModelDeployment gets a NetworkPolicy; unset, NetworkPolicies are not touched.
        self.network_policy_metrics_namespace = network_policy_metrics_namespace
        self.settle_limit = settle_limit
        # With nothing due, look again after this long (drift of the objects it owns).
        self.resync_seconds = resync_seconds

    def reconcile(self, namespace: str, name: str) -> Outcome:
        body = self.cluster.get(API_VERSION, KIND, namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return Outcome(requeue_after=None)
        try:
            md = parse_model_deployment(body, source=f"{namespace}/{name}")
        except SpecError as exc:
            return self._invalid(body, exc)
        now = self.clock()
        events: list[Event] = []
        extra_conditions: list[Condition] = []
        measured = False
        decision: Decision | None = None
        build = current_build(self.cluster, md, self._store(md))
        if build is not None and build.record is not None:
            md = md.model_copy(update={"status": md.status.with_archive(build.record)})
            events.append(
                Event(
                    "Normal",
                    "ArchiveBuilt",
                    f"archive of revision {build.record.revision} is in {build.record.store} "
                    f"(sha256 {build.record.sha256})",
                )
            )
        workloads = self._workloads(md)
        scaling = autoscale(md, workloads, self.provider, now)
        md = md.model_copy(
            update={"status": md.status.model_copy(update={"scaling": scaling.records})}
        )
        events += scaling.events
        for _ in range(self.settle_limit):
            observation, trouble = self._observe(md, workloads, build)
            measurements = fast = None
            if not measured and self._analysis_due(md, now):
                started = time.perf_counter()
                measurements = self._measure(md)
                self.metrics.tick_duration.observe(time.perf_counter() - started)
                measured = True
            elif not measured and self._fast_due(md):
                fast = self._measure_fast(md)
                measured = True
            decision = decide(
                md, observation=observation, measurements=measurements, fast=fast, now=now
            )
            events += decision.events
            self.metrics.record(decision)
            md = md.model_copy(update={"status": decision.status})
            extra_conditions, moved = self._apply(md, workloads, observation.stable_replicas)
            if moved:  # Deployments created, resized or deleted: see them as they are now
                workloads = self._workloads(md)
            achieved = self._achieved_weight(md, workloads)
            md = md.model_copy(
                update={
                    "status": md.status.model_copy(
                        update={
                            "canary_weight": achieved,
                            "router": md.spec.traffic.router,
                            "autoscaler": engine_of(md),
                        }
                    )
                }
            )
            if decision.requeue_after != 0 or not decision.transitions:
                break
        assert decision is not None
        extra_conditions.append(archive_condition(md, workloads, build))
        share = share_condition(md, observation.stable_replicas)
        if share is not None:
            extra_conditions.append(share)
            events += _warning_once(md, share, "CoarseTrafficShare", by="message")
        pods = pods_condition(md, workloads, trouble)
        extra_conditions.append(pods)
        if scaling.condition is not None:
            extra_conditions.append(scaling.condition)
        md = md.model_copy(
            update={
                "status": md.status.model_copy(
                    update={"scaling": reported(md, workloads, observation.stable_replicas)}
                )
            }
        )
        if self.evaluation is not None and md.spec.canary.evaluation is not None:
            evaluation = evaluation_condition(self.evaluation.problem(md))
            extra_conditions.append(evaluation)
            events += _warning_once(md, evaluation, "EvaluationFailed", by="reason")
        if self.notifier is not None and self.notifier.destinations(md):
            notified = notifications_condition(self.notifier.problem(md))
            extra_conditions.append(notified)
            events += _warning_once(md, notified, "NotificationFailed", by="message")
        stepped = any(e.reason == "StepAdvanced" for e in events)
        if (
            (measured or stepped)
            and self.evaluation is not None
            and md.status.phase is Phase.PROGRESSING
        ):
            # Labeled samples now, so the next tick's accuracy has something to count.
            self.evaluation.submit(md)
        status = _with_conditions(md.status, extra_conditions, now, md.metadata.generation)
        status = with_pending(status, body["metadata"], events, now)
        written = self._write_status(body, status)
        posted, unposted = self._announce(body, status.pending_events)
        queued = 0
        if posted and self.notifier is not None and self.notifier.destinations(md):
            queued = self.notifier.enqueue(md, status, posted)  # never waits for delivery
        self.metrics.canary_weight.labels(md.metadata.namespace, md.metadata.name).set(
            status.canary_weight
        )
        self.metrics.record_scaling(md, scaling.events)
        requeue = decision.requeue_after
        if requeue == 0:
            requeue = 1.0  # waiting on the platform (weights, replicas): look again soon
        # Nothing due: resync within the last fifth of the period, so that resources settled
        # together (an operator restart resumes them all at once) do not come due together.
        resync = self.resync_seconds * (1 - 0.2 * random.random())
        autoscaling = md.spec.autoscaling
        if autoscaling is not None and autoscaling.engine == "prometheus":
            requeue = min(requeue or resync, autoscaling.interval_seconds)
        elif autoscaling is not None:  # the HPA or KEDA moves replicas: keep status.scaling current
            requeue = min(requeue or resync, SCALING_REFRESH)
        waiting_on_platform = any(
            c.status == "False" and c.type in PLATFORM_CONDITIONS for c in extra_conditions
        )
        if waiting_on_platform or unposted:
            # A CRD, a Secret or a dataset may appear, or the API server take the Events,
            # at any time: look again before the resync.
            requeue = min(requeue if requeue is not None else resync, TROUBLE_RECHECK)
        if md.status.phase is Phase.SUCCEEDED and pods.status == "Unknown":
            # Just promoted (the Deployment is catching up with its new size) or a pod restarting:
            # look again soon, so PodsReady does not wait for the resync to say Ready.
            requeue = min(requeue if requeue is not None else resync, STARTING_RECHECK)
        if queued:  # look again soon, to report how the delivery went
            requeue = min(requeue if requeue is not None else resync, NOTIFY_RECHECK)
        return Outcome(
            requeue_after=requeue if requeue is not None else resync,
            status_written=written,
            events=events,
        )

    # -- gather ----------------------------------------------------------------------

    def _workloads(self, md: ModelDeployment) -> dict[str, Workload]:
        found = self.cluster.list(
            "apps/v1", "Deployment", md.metadata.namespace, names.selector(md)
        )
        workloads = {}
        for deployment in found:
            meta, spec, status = (
                deployment["metadata"],
                deployment.get("spec", {}),
                deployment.get("status") or {},
            )
            revision = meta.get("labels", {}).get(names.REVISION_LABEL)
            if revision is None:
                continue
            workloads[revision] = Workload(
                name=meta["name"],
                revision=revision,
                replicas=1 if spec.get("replicas") is None else spec["replicas"],
                ready=status.get("readyReplicas") or 0,
                observed=(status.get("observedGeneration") or 0) >= (meta.get("generation") or 0),
            )
        return workloads

    def _store(self, md: ModelDeployment) -> str | None:
        return md.spec.archive.store or self.archive_store

    def _observe(
        self, md: ModelDeployment, workloads: dict[str, Workload], build: BuildState | None
    ) -> tuple[Observation, PodTrouble | None]:
        """What the engine is told, and why the spec's revision's pods wait (if they do)."""
        spec_revision = compute_revision(md.spec)
        stable = workloads.get(md.status.stable_revision or spec_revision)
        canary = (
            workloads.get(spec_revision) if spec_revision != md.status.stable_revision else None
        )
        trouble = self._pod_trouble(md, workloads)
        observation = Observation(
            canary_ready=canary is not None and canary.available,
            canary_ready_replicas=canary.ready if canary is not None else None,
            stable_ready=stable is not None and stable.available,
            stable_replicas=self._stable_replicas(md, stable),
            broken=build.failure if build is not None else None,
            waiting_on=trouble.message if trouble is not None else None,
        )
        return observation, trouble

    def _pod_trouble(
        self, md: ModelDeployment, workloads: dict[str, Workload]
    ) -> PodTrouble | None:
        """Why the spec's revision's pods are not ready, while they are not."""
        revision = compute_revision(md.spec)
        starting = workloads.get(revision)
        if starting is None or starting.available or starting.replicas == 0:
            return None  # nothing to wait for (a rolled-back canary is at zero)
        deployment = self.cluster.get("apps/v1", "Deployment", md.metadata.namespace, starting.name)
        return pod_trouble(self.cluster, md, revision, deployment)

    def _stable_replicas(self, md: ModelDeployment, stable: Workload | None) -> int:
        scaling = md.spec.autoscaling
        if scaling is None:
            return md.spec.runtime.replicas
        decided = stable_desired(md, stable.replicas if stable is not None else None)
        if decided is not None:  # engine prometheus: the operator's own decision
            return decided
        # An HPA owns the stable's replicas: follow it within the spec's bounds.
        current = stable.replicas if stable is not None else scaling.min_replicas
        return max(scaling.min_replicas, min(scaling.max_replicas, current))

    def _analysis_due(self, md: ModelDeployment, now: datetime) -> bool:
        status = md.status
        return (
            status.phase is Phase.PROGRESSING
            and status.step_index is not None
            and status.canary_revision == compute_revision(md.spec)
            and not md.spec.paused
            and tick_due(md.spec, status, now)
        )

    def _fast_due(self, md: ModelDeployment) -> bool:
        return watching(md.spec, md.status) and md.status.canary_revision == compute_revision(
            md.spec
        )

    def _measure_fast(self, md: ModelDeployment) -> dict[str, Any]:
        return self._labels_checked(md, measure_fast(self.provider, md), fast_checks(md.spec))

    def _measure(self, md: ModelDeployment) -> dict[str, Any]:
        canary, stable = rollout_targets(md)
        checks = md.spec.canary.analysis.resolved_checks()
        measured = measure_tick(self.provider, checks, canary=canary, stable=stable)
        return self._labels_checked(md, measured, checks)

    def _labels_checked(
        self, md: ModelDeployment, measured: dict[str, Any], checks: list[ResolvedCheck]
    ) -> dict[str, Any]:
        """The measurements, with label-based checks an Error while the evaluation dataset
        cannot be sent (without labeled traffic they say nothing about the model)."""
        problem = self.evaluation.problem(md) if self.evaluation is not None else None
        return measured if problem is None else without_labels(measured, checks, problem)

    # -- apply -----------------------------------------------------------------------

    def _apply(
        self,
        md: ModelDeployment,
        workloads: dict[str, Workload],
        stable_replicas: int,
    ) -> tuple[list[Condition], bool]:
        """Conditions of what was applied, and whether a Deployment was written."""
        planned = plan(
            md,
            stable_replicas=stable_replicas,
            store=self._store(md),
            prometheus=self.prometheus_url,
            metrics_namespace=self.network_policy_metrics_namespace,
        )
        router = router_for(md, self.cluster)
        route_kinds = {kind for _, kind, _ in route_names(md, md.spec.traffic.router)}
        conditions = []
        routes: list[dict[str, Any]] = []
        missing = False
        keda_installed = True
        moved = False
        # The old owner of the replicas goes first: KEDA refuses a ScaledObject on a
        # Deployment that an HPA already scales.
        drop_previous_autoscaler(self.cluster, md)
        for obj in planned.objects:
            try:
                applied, written = apply(self.cluster, obj)
                moved = moved or (written and obj["kind"] == "Deployment")
                if obj["kind"] in route_kinds:
                    routes.append(applied)
            except ClusterError as exc:
                if exc.status == 422 and obj["kind"] in {"Deployment", "Job"}:
                    conditions.append(refused_condition(obj, exc))
                    continue
                if isinstance(exc, KindNotInstalled) and obj["kind"] == SCALED_OBJECT:
                    keda_installed = False  # a condition says so; the stable keeps its replicas
                    continue
                if not isinstance(exc, KindNotInstalled) or obj["kind"] not in route_kinds:
                    raise
                missing = True
        if missing:
            conditions.append(router.not_installed(md))
        else:  # as applied, with what the Gateway (or the IngressClass) says
            ready = router.condition(md, routes)
            if ready is not None:
                conditions.append(ready)
        drop_previous_routes(self.cluster, md)
        scaler = autoscaler_condition(md, stable=planned.stable, installed=keda_installed)
        conditions += [scaler] if scaler is not None else []
        for name, replicas in planned.scale.items():
            live = next((w for w in workloads.values() if w.name == name), None)
            if live is not None and live.replicas != replicas:
                moved = True
                self.cluster.patch(
                    "apps/v1",
                    "Deployment",
                    md.metadata.namespace,
                    name,
                    {"spec": {"replicas": replicas}},
                )
        if self._store(md) is not None:
            drop_superseded_builds(self.cluster, md)
        for workload in workloads.values():
            if workload.revision not in planned.keep:
                moved = True
                for kind, api in (("Deployment", "apps/v1"), ("ConfigMap", "v1")):
                    self.cluster.delete(api, kind, md.metadata.namespace, workload.name)
        if not any(c.type == "PodSettingsValid" for c in conditions):
            conditions.append(Condition(type="PodSettingsValid", status="True", reason="Accepted"))
        return conditions, moved

    def _achieved_weight(self, md: ModelDeployment, workloads: dict[str, Workload]) -> int:
        stable = workloads.get(md.status.stable_revision or "")
        canary = workloads.get(md.status.canary_revision or "") if md.status.canary_active else None
        try:
            return router_for(md, self.cluster).achieved_weight(md, stable=stable, canary=canary)
        except KindNotInstalled:
            return 0

    # -- report ----------------------------------------------------------------------

    def _write_status(self, body: dict[str, Any], status: ModelDeploymentStatus) -> bool:
        new: dict[str, Any] = as_merge_patch(status.model_dump(mode="json", by_alias=True))
        old = body.get("status") or {}
        # A merge patch deletes the fields it sets to null, so compare without them.
        if all(without_nulls(old.get(key)) == without_nulls(value) for key, value in new.items()):
            return False
        meta = body["metadata"]
        self.cluster.patch_status(meta["namespace"], meta["name"], new)
        return True

    def _invalid(self, body: dict[str, Any], exc: SpecError) -> Outcome:
        meta = body["metadata"]
        message = "; ".join(str(p) for p in exc.problems)
        old = body.get("status") or {}
        conditions = [c for c in old.get("conditions", []) if c.get("type") != "Degraded"]
        conditions.append(
            {
                "type": "Degraded",
                "status": "True",
                "reason": "InvalidSpec",
                "message": message,
                "lastTransitionTime": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "observedGeneration": meta.get("generation"),
            }
        )
        degraded: dict[str, Any] = next(
            (c for c in old.get("conditions", []) if c.get("type") == "Degraded"), {}
        )
        stored = [PendingEvent.model_validate(p) for p in old.get("pendingEvents") or []]
        if degraded.get("reason") == "InvalidSpec" and degraded.get("message") == message:
            self._announce(body, stored)  # an operator killed after the write left them
            return Outcome(requeue_after=None)
        event = Event("Warning", "InvalidSpec", message)
        status = ModelDeploymentStatus(pending_events=stored)
        pending = with_pending(status, meta, [event], self.clock()).pending_events
        self.cluster.patch_status(
            meta["namespace"],
            meta["name"],
            {
                "conditions": conditions,
                "message": f"invalid spec: {message}",
                "pendingEvents": [p.model_dump(mode="json", by_alias=True) for p in pending],
            },
        )
        self._announce(body, pending)
        self.metrics.reconcile_errors.labels("invalid-spec").inc()
        return Outcome(requeue_after=None, status_written=True, events=[event])

    def _announce(
        self, body: dict[str, Any], pending: list[PendingEvent]
    ) -> tuple[list[Event], int]:
        """Posts `pending` (the status's pendingEvents, already written) and keeps in the
        status only those the API server failed to take for now; returns the Events created
        by this call (an Event posted before a restart is not created again) and how many
        are left to post."""
        if not pending:
            return [], 0
        meta = body["metadata"]
        created, left, problems = post_pending(self.post_event, meta, pending)
        for problem in problems:
            log.warning("%s/%s: %s", meta["namespace"], meta["name"], problem)
        self.cluster.patch_status(
            meta["namespace"],
            meta["name"],
            {"pendingEvents": [p.model_dump(mode="json", by_alias=True) for p in left]},
        )
        return created, len(left)


def _warning_once(
    md: ModelDeployment, condition: Condition, reason: str, *, by: Literal["reason", "message"]
) -> list[Event]:
    """A Warning Event for a False `condition`, only when it was not already False with the
    same `by` (so a lasting problem is said once, and again when it changes)."""
    if condition.status != "False":
        return []
    before = next((c for c in md.status.conditions if c.type == condition.type), None)
    if (
        before is not None
        and before.status == "False"
        and getattr(before, by) == getattr(condition, by)
    ):
        return []
    return [Event("Warning", reason, condition.message)]


def _with_conditions(
    status: ModelDeploymentStatus, extra: list[Condition], now: datetime, generation: int | None
) -> ModelDeploymentStatus:
    """The status with the operator's own conditions (RouterReady) merged in."""
    if not extra:
        return status
    existing = {c.type: c for c in status.conditions}
    merged = {c.type: c for c in status.conditions}
    for condition in extra:
        old = existing.get(condition.type)
        kept = (
            old.last_transition_time if old is not None and old.status == condition.status else now
        )
        merged[condition.type] = condition.model_copy(
            update={"last_transition_time": kept, "observed_generation": generation}
        )
    return status.model_copy(update={"conditions": list(merged.values())})


def as_merge_patch(value: Any) -> Any:
    """The status as a merge patch: a null deletes an object's field that is no longer set,
    but lists are stored as written, so their items (history, conditions, checks) are
    written without nulls, which `kubectl describe` would show as <nil>."""
    if isinstance(value, dict):
        return {key: as_merge_patch(item) for key, item in value.items()}
    if isinstance(value, list):
        return without_nulls(value)
    return value
