"""Traffic routers behind one small interface: what weight does the canary really get?

Weights are set by the objects the plan renders (replica counts, an HTTPRoute, a
VirtualService, Ingresses); a router reads back what the cluster achieved, because the
status reports that and not what was asked for, and says (RouterReady) when the cluster
cannot route as asked: kinds not installed, a route the Gateway rejects, an IngressClass
that ingress-nginx does not serve. `replicas` splits by ready pods behind one Service.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from torchrollout.engine import desired_weight
from torchrollout.operator.cluster import ClusterApi, KindNotInstalled
from torchrollout.render import (
    SHARE_TOLERANCE,
    ingress_weight,
    names,
    replica_share,
    replica_weight,
    replicas_for_share,
    route_names,
    route_weight,
    virtual_service_weight,
)
from torchrollout.render.routes import GATEWAY_API, INGRESS, ISTIO, NGINX_CONTROLLER
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
    """Sets no weight itself (the plan's objects do): reads back what the cluster achieved,
    and says whether the router can route at all."""

    def achieved_weight(
        self, md: ModelDeployment, *, stable: Workload | None, canary: Workload | None
    ) -> int: ...

    def condition(self, md: ModelDeployment, applied: list[dict[str, Any]]) -> Condition | None:
        """RouterReady from the router's objects as applied; None for the replicas router."""
        ...

    def not_installed(self, md: ModelDeployment) -> Condition:
        """RouterReady=False when the API server does not serve the router's kinds."""
        ...


def _not_installed(reason: str, message: str) -> Condition:
    return Condition(
        type="RouterReady",
        status="False",
        reason=reason,
        message=f"{message}; the stable keeps all traffic",
    )


class ReplicasRouter:
    """Weight is the canary's share of ready pods behind the `NAME` Service."""

    def achieved_weight(
        self, md: ModelDeployment, *, stable: Workload | None, canary: Workload | None
    ) -> int:
        if canary is None or stable is None or canary.name == stable.name:
            return 0
        return replica_weight(stable_ready=stable.serving, canary_ready=canary.serving)

    def condition(self, md: ModelDeployment, applied: list[dict[str, Any]]) -> Condition | None:
        return None

    def not_installed(self, md: ModelDeployment) -> Condition:
        raise AssertionError("the replicas router uses built-in kinds only")


class GatewayApiRouter:
    """Weight is what the HTTPRoute in the cluster carries, if its Gateway accepted it."""

    def __init__(self, cluster: ClusterApi) -> None:
        self.cluster = cluster

    def achieved_weight(
        self, md: ModelDeployment, *, stable: Workload | None, canary: Workload | None
    ) -> int:
        route = self.cluster.get(GATEWAY_API, "HTTPRoute", md.metadata.namespace, md.metadata.name)
        if route is None or route_condition(route, md).status == "False":
            return 0  # a route the Gateway does not take moves no traffic
        return route_weight(route, md) or 0

    def condition(self, md: ModelDeployment, applied: list[dict[str, Any]]) -> Condition | None:
        return route_condition(applied[0], md) if applied else None

    def not_installed(self, md: ModelDeployment) -> Condition:
        return _not_installed(
            "GatewayAPINotInstalled",
            "router gateway-api needs the Gateway API CRDs "
            "(httproutes.gateway.networking.k8s.io); install them or use router: replicas",
        )


class IstioRouter:
    """Weight is what the VirtualService's primary route in the cluster carries."""

    def __init__(self, cluster: ClusterApi) -> None:
        self.cluster = cluster

    def achieved_weight(
        self, md: ModelDeployment, *, stable: Workload | None, canary: Workload | None
    ) -> int:
        found = self.cluster.get(ISTIO, "VirtualService", md.metadata.namespace, md.metadata.name)
        if found is None:
            return 0
        return virtual_service_weight(found, md) or 0

    def condition(self, md: ModelDeployment, applied: list[dict[str, Any]]) -> Condition | None:
        if not applied:
            return None
        hosts = ", ".join(applied[0].get("spec", {}).get("hosts", []))
        return Condition(
            type="RouterReady",
            status="True",
            reason="VirtualServiceApplied",
            message=f"VirtualService {md.metadata.name} routes {hosts}",
        )

    def not_installed(self, md: ModelDeployment) -> Condition:
        return _not_installed(
            "IstioNotInstalled",
            "router istio needs Istio's CRDs (virtualservices.networking.istio.io): install "
            "Istio (istioctl install, or the istio/base and istiod charts) or use another router",
        )


class NginxRouter:
    """Weight is the canary Ingress's canary-weight, when ingress-nginx serves its class."""

    def __init__(self, cluster: ClusterApi) -> None:
        self.cluster = cluster

    def achieved_weight(
        self, md: ModelDeployment, *, stable: Workload | None, canary: Workload | None
    ) -> int:
        if self._controller_problem(md) is not None:
            return 0
        namespace = md.metadata.namespace
        primary = self.cluster.get(INGRESS, "Ingress", namespace, md.metadata.name)
        found = self.cluster.get(INGRESS, "Ingress", namespace, names.canary_service(md))
        if primary is None or found is None:
            return 0
        return ingress_weight(found) or 0

    def _controller_problem(self, md: ModelDeployment) -> Condition | None:
        name = md.spec.traffic.ingress_class
        found = self.cluster.get(INGRESS, "IngressClass", "", name)
        if found is None:
            return _not_installed(
                "IngressClassNotFound",
                f"router nginx needs the IngressClass {name!r} of ingress-nginx "
                f"(controller {NGINX_CONTROLLER}): install ingress-nginx, or name its class in "
                "spec.traffic.ingressClassName",
            )
        controller = (found.get("spec") or {}).get("controller")
        if controller != NGINX_CONTROLLER:
            return _not_installed(
                "NotIngressNginx",
                f"IngressClass {name!r} belongs to controller {controller!r}, which does not "
                f"read ingress-nginx's canary annotations; name a class of {NGINX_CONTROLLER} "
                "in spec.traffic.ingressClassName, or use another router",
            )
        return None

    def condition(self, md: ModelDeployment, applied: list[dict[str, Any]]) -> Condition | None:
        if not applied:
            return None
        problem = self._controller_problem(md)
        if problem is not None:
            return problem
        return Condition(
            type="RouterReady",
            status="True",
            reason="IngressApplied",
            message=f"Ingresses {md.metadata.name} and {names.canary_service(md)} "
            f"(class {md.spec.traffic.ingress_class})",
        )

    def not_installed(self, md: ModelDeployment) -> Condition:
        raise AssertionError("Ingress is a built-in kind")


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


def drop_previous_routes(cluster: ClusterApi, md: ModelDeployment) -> None:
    """Once the spec names another router, delete the objects the previous one made
    (`status.router`), tolerating kinds no longer installed."""
    previous = md.status.router
    if previous is None or previous == md.spec.traffic.router:
        return
    for api_version, kind, name in route_names(md, previous):
        with contextlib.suppress(KindNotInstalled):
            cluster.delete(api_version, kind, md.metadata.namespace, name)


def router_for(md: ModelDeployment, cluster: ClusterApi) -> Router:
    router = md.spec.traffic.router
    if router == "gateway-api":
        return GatewayApiRouter(cluster)
    if router == "istio":
        return IstioRouter(cluster)
    if router == "nginx":
        return NginxRouter(cluster)
    return ReplicasRouter()


def share_condition(md: ModelDeployment, stable_replicas: int) -> Condition | None:
    """TrafficShare: what the canary's share of traffic is made of, when it is not the step.

    With the replicas router: whether whole pods can give the current step; False (reason
    ReplicaGranularity) names the share the pods really give and how to get nearer (the
    status's canaryWeight already reports what was achieved). With a mirror: the canary
    gets copies of requests and answers none (reason Mirrored).
    """
    status = md.status
    mirror = md.spec.canary.mirror
    if mirror is not None:
        if status.canary_active and desired_weight(md.spec, status) > 0:
            return Condition(
                type="TrafficShare",
                status="True",
                reason="Mirrored",
                message=f"the canary gets a copy of {mirror.percent}% of requests and answers "
                "none of them (canary.mirror); it takes traffic only once promoted",
            )
        return Condition(type="TrafficShare", status="True", reason="NoCanaryStep")
    if md.spec.traffic.router != "replicas":
        return None
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
