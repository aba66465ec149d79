"""Pure renderers: a ModelDeployment and its status in, Kubernetes objects out.

No cluster access here: the operator applies what `plan` returns, and `torchrollout
render` prints it.
"""

from __future__ import annotations

from torchrollout.render.plan import (
    Plan,
    canary_replicas,
    expected_mirror,
    expected_share,
    plan,
)
from torchrollout.render.routes import (
    ingress_weight,
    route_names,
    route_weight,
    virtual_service_weight,
)
from torchrollout.render.scaling import (
    AUTOSCALER_KINDS,
    DEFAULT_PROMETHEUS_URL,
    render_autoscaler,
    signal_query,
)
from torchrollout.render.traffic import (
    SHARE_TOLERANCE,
    ReplicaShare,
    canary_replicas_for,
    replica_router_canary,
    replica_share,
    replica_weight,
    replicas_for_share,
)

__all__ = [
    "AUTOSCALER_KINDS",
    "DEFAULT_PROMETHEUS_URL",
    "SHARE_TOLERANCE",
    "Plan",
    "ReplicaShare",
    "canary_replicas",
    "canary_replicas_for",
    "expected_mirror",
    "expected_share",
    "ingress_weight",
    "plan",
    "render_autoscaler",
    "replica_router_canary",
    "replica_share",
    "replica_weight",
    "replicas_for_share",
    "route_names",
    "route_weight",
    "signal_query",
    "virtual_service_weight",
]
