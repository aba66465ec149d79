"""The routers' objects: an HTTPRoute, a VirtualService, or a primary and a canary Ingress.

Each splits `weight` percent of the `NAME` traffic to `NAME-canary` and the rest to
`NAME-stable`. While a canary runs, `canary.match` sends matching requests to the canary
whatever the weight, and `canary.mirror` copies a share of requests to it instead of
giving it any (the weight stays 0, so the canary answers nobody until it is promoted).
The `*_weight` readers say what split an object in the cluster really carries.
"""

from __future__ import annotations

from typing import Any

from torchrollout.render import names
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.traffic import RequestMatch

GATEWAY_API = "gateway.networking.k8s.io/v1"
ISTIO = "networking.istio.io/v1"
INGRESS = "networking.k8s.io/v1"
NGINX = "nginx.ingress.kubernetes.io/"
NGINX_CONTROLLER = "k8s.io/ingress-nginx"
# The cookie value ingress-nginx's canary-by-cookie sends to the canary; the other routers
# match the same convention.
COOKIE_ALWAYS = "always"

ROUTE_KINDS = {
    "gateway-api": ((GATEWAY_API, "HTTPRoute"),),
    "istio": ((ISTIO, "VirtualService"),),
    "nginx": ((INGRESS, "Ingress"),),
}


def route_names(md: ModelDeployment, router: str) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of every object `router` makes for `md`."""
    if router == "nginx":
        return [
            (INGRESS, "Ingress", md.metadata.name),
            (INGRESS, "Ingress", names.canary_service(md)),
        ]
    return [(api, kind, md.metadata.name) for api, kind in ROUTE_KINDS.get(router, ())]


def _cookie_pattern(cookie: str) -> str:
    return f"^(.*?;\\s*)?{cookie}={COOKIE_ALWAYS}(;.*)?$"


def render_routes(md: ModelDeployment, *, weight: int) -> list[dict[str, Any]]:
    """The objects of the spec's router; none for the replicas router.

    `weight` is the canary's step; 0 when no canary takes traffic (none, or rolling back),
    which also turns off `match` and `mirror`.
    """
    mirrored = mirrored_percent(md, weight)
    match = md.spec.canary.match if weight > 0 else []
    routed = 0 if md.spec.canary.mirror is not None else weight
    router = md.spec.traffic.router
    if router == "gateway-api":
        return [render_http_route(md, weight=routed, match=match, mirror=mirrored)]
    if router == "istio":
        return [render_virtual_service(md, weight=routed, match=match, mirror=mirrored)]
    if router == "nginx":
        return render_ingresses(md, weight=routed, match=match)
    return []


def mirrored_percent(md: ModelDeployment, weight: int) -> int:
    """Percent of requests copied to the canary at a step of `weight` (0: no canary step)."""
    mirror = md.spec.canary.mirror
    return mirror.percent if mirror is not None and weight > 0 else 0


def _backend(md: ModelDeployment, service: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": service, "port": names.SERVICE_PORT}
    if weight is not None:
        ref["weight"] = weight
    return ref


def render_http_route(
    md: ModelDeployment,
    *,
    weight: int,
    match: list[RequestMatch] | None = None,
    mirror: int = 0,
) -> dict[str, Any]:
    """The HTTPRoute splitting `weight` percent to the canary Service."""
    traffic = md.spec.traffic
    ref = traffic.gateway_ref
    assert ref is not None  # validated: gateway-api needs gatewayRef
    parent: dict[str, Any] = {"name": ref.name}
    if ref.namespace:
        parent["namespace"] = ref.namespace
    if ref.section_name:
        parent["sectionName"] = ref.section_name
    stable, canary = names.stable_service(md), names.canary_service(md)
    rules: list[dict[str, Any]] = []
    matches = [_http_route_match(m) for m in match or []]
    if matches:
        rules.append({"matches": matches, "backendRefs": [_backend(md, canary)]})
    primary: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [_backend(md, stable, 100 - weight), _backend(md, canary, weight)],
    }
    if mirror:
        primary["filters"] = [
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": _backend(md, canary), "percent": mirror},
            }
        ]
    rules.append(primary)
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": rules}
    if traffic.hostnames:
        spec["hostnames"] = list(traffic.hostnames)
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": spec,
    }


def _http_route_match(match: RequestMatch) -> dict[str, Any]:
    headers: list[dict[str, Any]] = [
        {"type": "Exact", "name": name, "value": value} for name, value in match.headers.items()
    ]
    if match.cookie is not None:
        headers.append(
            {"type": "RegularExpression", "name": "Cookie", "value": _cookie_pattern(match.cookie)}
        )
    return {"path": {"type": "PathPrefix", "value": "/"}, "headers": headers}


def route_weight(route: dict[str, Any], md: ModelDeployment) -> int | None:
    """The canary weight an HTTPRoute really carries, or None if it has no such split."""
    for rule in route.get("spec", {}).get("rules", []):
        weights = {ref.get("name"): ref.get("weight", 1) for ref in rule.get("backendRefs", [])}
        stable, canary = (
            weights.get(names.stable_service(md)),
            weights.get(names.canary_service(md)),
        )
        if stable is not None and canary is not None:
            total = stable + canary
            return round(100 * canary / total) if total else 0
    return None


def _destination(service: str) -> dict[str, Any]:
    return {"host": service, "port": {"number": names.SERVICE_PORT}}


def render_virtual_service(
    md: ModelDeployment,
    *,
    weight: int,
    match: list[RequestMatch] | None = None,
    mirror: int = 0,
) -> dict[str, Any]:
    """The VirtualService splitting `weight` percent to the canary Service."""
    traffic = md.spec.traffic
    stable, canary = names.stable_service(md), names.canary_service(md)
    http: list[dict[str, Any]] = []
    matches = [_istio_match(m) for m in match or []]
    if matches:
        http.append(
            {
                "name": "canary-match",
                "match": matches,
                "route": [{"destination": _destination(canary)}],
            }
        )
    primary: dict[str, Any] = {
        "name": "primary",
        "route": [
            {"destination": _destination(stable), "weight": 100 - weight},
            {"destination": _destination(canary), "weight": weight},
        ],
    }
    if mirror:
        primary["mirror"] = _destination(canary)
        primary["mirrorPercentage"] = {"value": float(mirror)}
    http.append(primary)
    spec: dict[str, Any] = {"hosts": list(traffic.hostnames) or [md.metadata.name], "http": http}
    if traffic.gateways:
        spec["gateways"] = list(traffic.gateways)
    return {
        "apiVersion": ISTIO,
        "kind": "VirtualService",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": spec,
    }


def _istio_match(match: RequestMatch) -> dict[str, Any]:
    # Istio wants header names in lower case; HTTP header names are case-insensitive.
    headers: dict[str, Any] = {
        name.lower(): {"exact": value} for name, value in match.headers.items()
    }
    if match.cookie is not None:
        headers["cookie"] = {"regex": _cookie_pattern(match.cookie)}
    return {"headers": headers}


def virtual_service_weight(service: dict[str, Any], md: ModelDeployment) -> int | None:
    """The canary weight of the VirtualService's primary route, or None if it has none."""
    stable, canary = names.stable_service(md), names.canary_service(md)
    for route in service.get("spec", {}).get("http", []):
        weights = {
            (d.get("destination") or {}).get("host"): d.get("weight", 0)
            for d in route.get("route", [])
        }
        if stable in weights and canary in weights:
            total = weights[stable] + weights[canary]
            return round(100 * weights[canary] / total) if total else 0
    return None


def render_ingresses(
    md: ModelDeployment, *, weight: int, match: list[RequestMatch] | None = None
) -> list[dict[str, Any]]:
    """The primary Ingress to the stable Service and ingress-nginx's canary Ingress beside it.

    The canary's match annotations are written as null when there is nothing to match, so
    a merge patch removes them.
    """
    header = next((m for m in match or [] if m.headers), None)
    cookie = next((m.cookie for m in match or [] if m.cookie is not None), None)
    header_name, header_value = next(iter(header.headers.items())) if header else (None, None)
    annotations: dict[str, str | None] = {
        NGINX + "canary": "true",
        NGINX + "canary-weight": str(weight),
        NGINX + "canary-by-header": header_name,
        NGINX + "canary-by-header-value": header_value,
        NGINX + "canary-by-cookie": cookie,
    }
    return [
        _ingress(md, md.metadata.name, names.stable_service(md)),
        _ingress(md, names.canary_service(md), names.canary_service(md), annotations),
    ]


def _ingress(
    md: ModelDeployment,
    name: str,
    service: str,
    annotations: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    traffic = md.spec.traffic
    http = {
        "paths": [
            {
                "path": "/",
                "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": names.SERVICE_PORT}}},
            }
        ]
    }
    rules = [{"host": host, "http": http} for host in traffic.hostnames] or [{"http": http}]
    extra = {"annotations": annotations} if annotations else {}
    return {
        "apiVersion": INGRESS,
        "kind": "Ingress",
        "metadata": names.metadata(md, name, **extra),
        "spec": {"ingressClassName": traffic.ingress_class, "rules": rules},
    }


def ingress_weight(canary: dict[str, Any]) -> int | None:
    """The weight ingress-nginx gives the canary Ingress, or None if it is not a canary."""
    annotations = canary.get("metadata", {}).get("annotations") or {}
    if annotations.get(NGINX + "canary") != "true":
        return None
    try:
        weight = int(annotations.get(NGINX + "canary-weight", "0"))
        total = int(annotations.get(NGINX + "canary-weight-total", "100"))
    except ValueError:
        return None
    return round(100 * weight / total) if total > 0 else 0
