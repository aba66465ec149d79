"""Objects that route traffic: the three Services, the HTTPRoute, the PDB and the HPA.

`NAME` selects every revision (with the `replicas` router the split is the ratio of ready
replicas); `NAME-stable` and `NAME-canary` select one revision each, so promotion re-points
selectors and restarts no pod. The `gateway-api` router weights `NAME-stable` and
`NAME-canary` in an HTTPRoute.
"""

from __future__ import annotations

import math
from typing import Any

from torchrollout.render import names
from torchrollout.spec.document import ModelDeployment

GATEWAY_API = "gateway.networking.k8s.io/v1"


def canary_replicas_for(stable_replicas: int, weight: int) -> int:
    """Replicas that give the canary `weight` percent next to the stable's (at least 1)."""
    if weight <= 0:
        return 0
    return max(1, math.ceil(stable_replicas * weight / 100))


def replica_weight(*, stable_ready: int, canary_ready: int) -> int:
    """The canary's share of traffic when a Service spreads it over ready pods."""
    total = stable_ready + canary_ready
    return round(100 * canary_ready / total) if total else 0


def _service(md: ModelDeployment, name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.metadata(md, name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": "http",
                    "port": names.SERVICE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                },
                {
                    "name": "metrics",
                    "port": names.METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def render_services(
    md: ModelDeployment, *, stable: str, canary: str | None
) -> list[dict[str, Any]]:
    return [
        _service(md, md.metadata.name, names.selector(md)),
        _service(md, names.stable_service(md), names.selector(md, stable)),
        _service(md, names.canary_service(md), names.selector(md, canary or stable)),
    ]


def render_http_route(md: ModelDeployment, *, weight: int) -> dict[str, Any]:
    """The HTTPRoute splitting `weight` percent to the canary Service."""
    traffic = md.spec.traffic
    ref = traffic.gateway_ref
    assert ref is not None  # validated: gateway-api needs gatewayRef
    parent: dict[str, Any] = {"name": ref.name}
    if ref.namespace:
        parent["namespace"] = ref.namespace
    if ref.section_name:
        parent["sectionName"] = ref.section_name
    spec: dict[str, Any] = {
        "parentRefs": [parent],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {
                        "name": names.stable_service(md),
                        "port": names.SERVICE_PORT,
                        "weight": 100 - weight,
                    },
                    {
                        "name": names.canary_service(md),
                        "port": names.SERVICE_PORT,
                        "weight": weight,
                    },
                ],
            }
        ],
    }
    if traffic.hostnames:
        spec["hostnames"] = list(traffic.hostnames)
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": spec,
    }


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


def render_pdb(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names.selector(md)}},
    }


def render_hpa(md: ModelDeployment, *, stable: str) -> dict[str, Any] | None:
    """An HPA on the stable revision's Deployment, when CPU or memory targets are set."""
    scaling = md.spec.autoscaling
    if scaling is None:
        return None
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": resource,
                "target": {"type": "Utilization", "averageUtilization": target},
            },
        }
        for resource, target in (
            ("cpu", scaling.target_cpu_utilization),
            ("memory", scaling.target_memory_utilization),
        )
        if target is not None
    ]
    if not metrics:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": names.revision_name(md, stable),
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
        },
    }
