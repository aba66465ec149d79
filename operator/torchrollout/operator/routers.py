"""Traffic routers behind one small interface: what weight does the canary really get?

Weights are set by the objects the plan renders (replica counts, or the HTTPRoute); a
router reads back what the cluster achieved, because the status reports that and not
what was asked for. `replicas` splits by ready pods behind one Service; `gateway-api`
by the HTTPRoute's backend weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torchrollout.engine import desired_weight
from torchrollout.operator.cluster import ClusterApi
from torchrollout.render import (
    SHARE_TOLERANCE,
    replica_share,
    replica_weight,
    replicas_for_share,
    route_weight,
)
from torchrollout.render.traffic import GATEWAY_API
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.status import Condition, Phase


@dataclass(frozen=True)
class Workload:
    """A revision's Deployment as the cluster reports it."""

    name: str
    revision: str
    replicas: int
    ready: int
    observed: bool  # the controller has seen the current generation

    @property
    def available(self) -> bool:
        return self.observed and self.replicas > 0 and self.ready >= self.replicas

    @property
    def serving(self) -> int:
        """Pods that receive traffic: ready ones, but none once scaled to zero."""
        return min(self.ready, self.replicas)


class Router(Protocol):
    def achieved_weight(
        self, md: ModelDeployment, *, stable: Workload | None, canary: Workload | None
    ) -> int: ...


class ReplicasRouter:
    """Weight is the canary's share of ready pods behind the `NAME` Service."""

    def achieved_weight(
        self, md: ModelDeployment, *, stable: Workload | None, canary: Workload | None
    ) -> int:
        if canary is None or stable is None or canary.name == stable.name:
            return 0
        return replica_weight(stable_ready=stable.serving, canary_ready=canary.serving)


class GatewayApiRouter:
    """Weight is what the HTTPRoute in the cluster carries."""

    def __init__(self, cluster: ClusterApi) -> None:
        self.cluster = cluster

    def achieved_weight(
        self, md: ModelDeployment, *, stable: Workload | None, canary: Workload | None
    ) -> int:
        route = self.cluster.get(GATEWAY_API, "HTTPRoute", md.metadata.namespace, md.metadata.name)
        if route is None or route_condition(route, md).status == "False":
            return 0  # a route the Gateway does not take moves no traffic
        return route_weight(route, md) or 0


def _parent_conditions(route: dict[str, Any], md: ModelDeployment) -> dict[str, dict[str, Any]]:
    """The conditions the Gateway named in `traffic.gatewayRef` reports on the route."""
    ref = md.spec.traffic.gateway_ref
    if ref is None:
        return {}
    namespace = ref.namespace or md.metadata.namespace
    for parent in (route.get("status") or {}).get("parents") or []:
        parent_ref = parent.get("parentRef") or {}
        if (
            parent_ref.get("name") == ref.name
            and (parent_ref.get("namespace") or md.metadata.namespace) == namespace
        ):
            return {c.get("type"): c for c in parent.get("conditions") or []}
    return {}


def route_condition(route: dict[str, Any], md: ModelDeployment) -> Condition:
    """RouterReady from what the Gateway says of the HTTPRoute: Accepted and ResolvedRefs."""
    conditions = _parent_conditions(route, md)
    gateway = md.spec.traffic.gateway_ref
    name = gateway.name if gateway is not None else "?"
    for kind, reason, fix in (
        (
            "Accepted",
            "RouteNotAccepted",
            "check spec.traffic.gatewayRef (name, namespace, sectionName) and hostnames against "
            "the Gateway's listeners",
        ),
        (
            "ResolvedRefs",
            "BackendsNotResolved",
            f"the Services {md.metadata.name}-stable and {md.metadata.name}-canary must be "
            "allowed as backends (a ReferenceGrant across namespaces)",
        ),
    ):
        found = conditions.get(kind)
        if found is not None and found.get("status") == "False":
            return Condition(
                type="RouterReady",
                status="False",
                reason=reason,
                message=f"Gateway {name} says {kind}=False ({found.get('reason', '')}: "
                f"{found.get('message', '')}); {fix}. The stable keeps all traffic",
            )
    if conditions.get("Accepted", {}).get("status") == "True":
        return Condition(type="RouterReady", status="True", reason="RouteAccepted")
    return Condition(
        type="RouterReady",
        status="True",
        reason="HTTPRouteApplied",
        message=f"no report from Gateway {name} on the route yet",
    )


def router_for(md: ModelDeployment, cluster: ClusterApi) -> Router:
    if md.spec.traffic.router == "gateway-api":
        return GatewayApiRouter(cluster)
    return ReplicasRouter()


def share_condition(md: ModelDeployment, stable_replicas: int) -> Condition | None:
    """TrafficShare, for the replicas router: whether whole pods can give the current step.

    False (reason ReplicaGranularity) names the share the pods really give and how to get
    nearer; the status's canaryWeight already reports what was achieved.
    """
    if md.spec.traffic.router != "replicas":
        return None
    status = md.status
    if not status.canary_active or status.phase is not Phase.PROGRESSING:
        return Condition(type="TrafficShare", status="True", reason="NoCanaryStep")
    step = desired_weight(md.spec, status)
    if step <= 0:
        return Condition(type="TrafficShare", status="True", reason="NoCanaryStep")
    realised = replica_share(stable_replicas, step)
    if realised.honest:
        return Condition(type="TrafficShare", status="True", reason="AsStepped")
    return Condition(
        type="TrafficShare",
        status="False",
        reason="ReplicaGranularity",
        message=f"{realised.describe()}; {replicas_for_share(step)} stable replicas would give "
        f"{step}% within {SHARE_TOLERANCE} points, or use a weighted router (gateway-api)",
    )
