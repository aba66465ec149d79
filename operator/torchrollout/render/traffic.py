"""Objects around the revisions: the three Services, the PDB, the NetworkPolicy; replica shares.

While a canary runs `NAME` selects every revision (with the `replicas` router the split is
the ratio of ready replicas), otherwise the stable alone (a previous stable kept warm for a
revert takes no traffic); `NAME-stable` and `NAME-canary` select one revision each, so
promotion re-points selectors and restarts no pod. The weighted routers' objects (which
weight `NAME-stable` and `NAME-canary`) are in `routes`; the autoscaler is in `scaling`.
The opt-in NetworkPolicy `NAME` admits the inference port from anywhere and the metrics port
from Prometheus' namespace alone, so nothing else (the management port included) reaches the
model pods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torchrollout.render import names
from torchrollout.spec.document import ModelDeployment


def canary_replicas_for(stable_replicas: int, weight: int) -> int:
    """Replicas that carry `weight` percent of the traffic a weighted router sends the canary,
    sized like the stable's (at least 1)."""
    if weight <= 0:
        return 0
    return max(1, math.ceil(stable_replicas * weight / 100))


def replica_router_canary(stable_replicas: int, weight: int) -> int:
    """Canary replicas whose share of all ready pods is as near `weight` as whole pods allow
    (the replicas router's split): c / (stable + c) ~ weight, so c = stable * w / (100 - w)."""
    if weight <= 0:
        return 0
    if weight >= 100:
        return stable_replicas
    return max(1, round(stable_replicas * weight / (100 - weight)))


def replica_weight(*, stable_ready: int, canary_ready: int) -> int:
    """The canary's share of traffic when a Service spreads it over ready pods."""
    total = stable_ready + canary_ready
    return round(100 * canary_ready / total) if total else 0


# Points of traffic a replica-router share may differ from its step before the resource says so.
SHARE_TOLERANCE = 5


@dataclass(frozen=True)
class ReplicaShare:
    """What a step becomes with the replicas router: whole pods, so a coarse share."""

    step: int
    canary_pods: int
    stable_pods: int

    @property
    def share(self) -> int:
        return replica_weight(stable_ready=self.stable_pods, canary_ready=self.canary_pods)

    @property
    def honest(self) -> bool:
        return abs(self.share - self.step) <= SHARE_TOLERANCE

    def describe(self) -> str:
        return (
            f"step {self.step}% gives {self.share}% with the replicas router "
            f"({self.canary_pods} canary pod{'s' if self.canary_pods != 1 else ''} beside "
            f"{self.stable_pods} stable)"
        )


def replica_share(stable_replicas: int, step: int) -> ReplicaShare:
    return ReplicaShare(step, replica_router_canary(stable_replicas, step), stable_replicas)


def replicas_for_share(step: int) -> int:
    """The fewest stable replicas with which the replicas router realises `step` honestly."""
    replicas = 1
    while not replica_share(replicas, step).honest:
        replicas += 1
    return replicas


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
    client = names.selector(md) if canary is not None else names.selector(md, stable)
    return [
        _service(md, md.metadata.name, client),
        _service(md, names.stable_service(md), names.selector(md, stable)),
        _service(md, names.canary_service(md), names.selector(md, canary or stable)),
    ]


def render_pdb(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names.selector(md)}},
    }


def render_network_policy(md: ModelDeployment, *, metrics_namespace: str) -> dict[str, Any]:
    """Ingress to every revision's pods: inference from anywhere (clients, the Gateway, the
    operator's evaluation traffic), metrics from `metrics_namespace` only; the management
    port gets no rule, so it stays closed even if someone binds it beyond localhost."""
    prometheus = {"kubernetes.io/metadata.name": metrics_namespace}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": {
            "podSelector": {"matchLabels": names.selector(md)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": names.INFERENCE_PORT, "protocol": "TCP"}]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": prometheus}}],
                    "ports": [{"port": names.METRICS_PORT, "protocol": "TCP"}],
                },
            ],
        },
    }
