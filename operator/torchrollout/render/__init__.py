"""Pure renderers: a ModelDeployment and its status in, Kubernetes objects out.

No cluster access here: the operator applies what `plan` returns, and `torchrollout
render` prints it.
"""

from __future__ import annotations

from torchrollout.render.plan import Plan, canary_replicas, plan
from torchrollout.render.traffic import (
    SHARE_TOLERANCE,
    ReplicaShare,
    canary_replicas_for,
    replica_router_canary,
    replica_share,
    replica_weight,
    replicas_for_share,
    route_weight,
)

__all__ = [
    "SHARE_TOLERANCE",
    "Plan",
    "ReplicaShare",
    "canary_replicas",
    "canary_replicas_for",
    "plan",
    "replica_router_canary",
    "replica_share",
    "replica_weight",
    "replicas_for_share",
    "route_weight",
]
