"""Everything a ModelDeployment should have in the cluster, for its current status.

`plan` is pure: spec and status in, objects and replica counts out. Only the spec's own
revision can be rendered (older revisions were rendered from older specs), so the plan
also says which other revisions' Deployments to scale and which to keep: the stable, the
canary, the previous stable while `status.warmRevision` keeps it warm (at the stable's
replica count, for `canary.scaleDownDelaySeconds` after a promotion), and the previously
promoted ones inside the rollback window, kept at zero.

With an archive store, the spec's revision gets its build Job until its archive is in the
store (`status.archives`), and its Deployment only after: its pods fetch that archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchrollout.engine.decide import desired_weight, rollback_window
from torchrollout.render import names
from torchrollout.render.routes import mirrored_percent, render_routes
from torchrollout.render.scaling import DEFAULT_PROMETHEUS_URL, render_autoscaler
from torchrollout.render.traffic import (
    canary_replicas_for,
    render_network_policy,
    render_pdb,
    render_services,
    replica_router_canary,
    replica_weight,
)
from torchrollout.render.workload import (
    render_archive_job,
    render_config_map,
    render_deployment,
)
from torchrollout.spec.document import ModelDeployment, compute_revision
from torchrollout.spec.status import CANARY_PHASES, Phase


@dataclass(frozen=True)
class Plan:
    """Objects to apply, replica counts of Deployments not rendered, revisions to keep."""

    objects: list[dict[str, Any]]
    scale: dict[str, int]
    keep: frozenset[str]
    stable: str
    canary: str | None
    weight: int
    building: bool = False
    """The spec's revision waits for its archive build Job."""


def canary_replicas(md: ModelDeployment, *, stable_replicas: int) -> int:
    """Replicas of the canary revision in its current phase."""
    status = md.status
    if not status.canary_active:
        return 0
    if status.phase is Phase.PROMOTING:
        return stable_replicas
    if status.phase is Phase.ROLLING_BACK:
        if md.spec.traffic.router == "replicas" or status.step_index is None:
            return 0  # with the replicas router, no replicas is how the weight becomes 0
        # The route sends nothing to the canary first; it keeps its pods until then.
        steps = md.spec.canary.steps
        return canary_replicas_for(stable_replicas, steps[min(status.step_index, len(steps) - 1)])
    # Before its first step the canary starts at its first step's size, to become ready.
    weight = desired_weight(md.spec, status) or md.spec.canary.steps[0]
    if md.spec.traffic.router == "replicas":
        return replica_router_canary(stable_replicas, weight)  # its share of pods is the weight
    mirror = md.spec.canary.mirror
    if mirror is not None:
        weight = mirror.percent or weight  # capacity for the copies it gets
    sized = canary_replicas_for(stable_replicas, weight)  # capacity for its share of traffic
    return max(sized, _own_signal(md))


def _own_signal(md: ModelDeployment) -> int:
    """With engine prometheus, the canary's replicas for its own load once it has traffic
    (a weighted router: more pods do not change its share)."""
    scaling, status = md.spec.autoscaling, md.status
    if scaling is None or scaling.engine != "prometheus" or status.step_index is None:
        return 0
    record = status.scaling_of(status.canary_revision)
    return min(scaling.max_replicas, record.desired) if record is not None else 0


def _needs_pods(md: ModelDeployment, revision: str) -> bool:
    """The revision is being deployed or rolled out (not given up on)."""
    status = md.status
    if status.phase in {Phase.PENDING, Phase.BUILDING}:
        return True
    return status.canary_revision == revision and status.phase in CANARY_PHASES


def plan(
    md: ModelDeployment,
    *,
    stable_replicas: int,
    store: str | None = None,
    prometheus: str = DEFAULT_PROMETHEUS_URL,
    metrics_namespace: str | None = None,
) -> Plan:
    """What to apply for `md`; `store` is the archive store in effect (spec or operator's),
    `prometheus` the server a KEDA ScaledObject reads its signal from (the operator's);
    with `metrics_namespace` (Prometheus' namespace), a NetworkPolicy for the model pods."""
    spec_revision = compute_revision(md.spec)
    status = md.status
    stable = status.stable_revision or spec_revision
    canary = status.canary_revision if status.canary_active else None
    replicas = {stable: stable_replicas}
    if canary is not None:
        replicas[canary] = canary_replicas(md, stable_replicas=stable_replicas)
    warm = status.warm_revision
    if warm is not None and warm.revision not in replicas:
        replicas[warm.revision] = stable_replicas  # ready for a revert in one reconcile
    window = {e.revision for e in rollback_window(status, md.spec.canary.rollback_window)}
    for revision in window - replicas.keys():
        replicas[revision] = 0

    # Traffic first, workloads after: a weight moves off a revision before it shrinks.
    weight = desired_weight(md.spec, status)
    objects: list[dict[str, Any]] = render_services(md, stable=stable, canary=canary)
    objects += render_routes(md, weight=weight)
    objects.append(render_pdb(md))
    if metrics_namespace is not None:
        objects.append(render_network_policy(md, metrics_namespace=metrics_namespace))
    rendered = spec_revision in replicas or spec_revision == status.canary_revision
    archive = status.archive_for(spec_revision) if store is not None else None
    building = store is not None and archive is None
    if rendered:
        objects.append(render_config_map(md))
        if not building:
            count = replicas.get(spec_revision, 0)
            objects.append(render_deployment(md, replicas=count, archive=archive))
        elif store is not None and _needs_pods(md, spec_revision):
            objects.append(render_archive_job(md, store=store))
    autoscaler = render_autoscaler(md, stable=stable, prometheus=prometheus)
    if autoscaler is not None:
        objects.append(autoscaler)
    keep = frozenset(replicas) | ({spec_revision} if rendered else frozenset())
    scale = {
        names.revision_name(md, revision): count
        for revision, count in replicas.items()
        if revision != spec_revision
    }
    return Plan(
        objects=objects,
        scale=scale,
        keep=keep,
        stable=stable,
        canary=canary,
        weight=weight,
        building=building and rendered,
    )


def expected_share(md: ModelDeployment, *, stable_replicas: int) -> int:
    """The canary's share of traffic once the plan is applied and every pod is ready: what
    the router would read back. The replicas router gives whole pods' shares (1 canary pod
    beside 1 stable one is 50%, whatever the step); a mirror gives the canary none."""
    weight = desired_weight(md.spec, md.status)
    if weight <= 0 or md.spec.canary.mirror is not None:
        return 0
    if md.spec.traffic.router != "replicas":
        return weight
    canary = canary_replicas(md, stable_replicas=stable_replicas)
    return replica_weight(stable_ready=stable_replicas, canary_ready=canary)


def expected_mirror(md: ModelDeployment) -> int:
    """Percent of requests the router copies to the canary now (0 without a mirror)."""
    return mirrored_percent(md, desired_weight(md.spec, md.status))
