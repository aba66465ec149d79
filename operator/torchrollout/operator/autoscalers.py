"""The autoscaler's object in the cluster: whether it could be applied, and its clean-up.

The plan renders the spec's engine's object (`torchrollout.render.scaling`): an HPA for
`hpa`, a KEDA ScaledObject for `keda`. AutoscalerReady says whether it stands; KEDA not
installed is a condition naming what to install, not an error, and the stable keeps its
replicas. When the engine changes (or autoscaling is removed) the object of the engine in
`status.autoscaler` is deleted: an HPA left behind would fight the new owner of the replicas.
The `prometheus` engine has no object; its AutoscalerReady is `operator.scaling`'s.
"""

from __future__ import annotations

import contextlib

from torchrollout.operator.cluster import ClusterApi, KindNotInstalled
from torchrollout.render import AUTOSCALER_KINDS, names
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.status import Condition

SCALED_OBJECT = AUTOSCALER_KINDS["keda"][1]


def engine_of(md: ModelDeployment) -> str | None:
    """The engine that owns the replicas under this spec (None: no autoscaling)."""
    scaling = md.spec.autoscaling
    return scaling.engine if scaling is not None else None


def autoscaler_condition(md: ModelDeployment, *, stable: str, installed: bool) -> Condition | None:
    """AutoscalerReady for the hpa and keda engines, once their object was applied (or
    `installed` is False: the API server does not serve ScaledObject); after autoscaling
    is removed, one that no longer blames anything."""
    scaling = md.spec.autoscaling
    if scaling is None:
        if any(c.type == "AutoscalerReady" for c in md.status.conditions):
            return Condition(type="AutoscalerReady", status="True", reason="NoAutoscaling")
        return None
    if scaling.engine == "prometheus":
        return None
    target = f"Deployment {names.revision_name(md, stable)}"
    bounds = f"{scaling.min_replicas}..{scaling.max_replicas} replicas"
    goal = f"{scaling.signal_target:g} {scaling.signal_unit}".rstrip()
    if scaling.engine == "keda":
        if not installed:
            return Condition(
                type="AutoscalerReady",
                status="False",
                reason="KEDANotInstalled",
                message="engine keda needs KEDA's CRDs (scaledobjects.keda.sh): install KEDA "
                "(its helm chart kedacore/keda), or use engine hpa or prometheus; the stable "
                "keeps its replicas",
            )
        return Condition(
            type="AutoscalerReady",
            status="True",
            reason="ScaledObjectApplied",
            message=f"ScaledObject {md.metadata.name} scales {target} within {bounds} on "
            f"{scaling.signal} (target {goal})",
        )
    if scaling.target_cpu_utilization is None and scaling.target_memory_utilization is None:
        return Condition(
            type="AutoscalerReady",
            status="False",
            reason="NoResourceTarget",
            message="engine hpa needs targetCPUUtilization or targetMemoryUtilization; no "
            "HorizontalPodAutoscaler is made and the stable keeps its replicas",
        )
    return Condition(
        type="AutoscalerReady",
        status="True",
        reason="HPAApplied",
        message=f"HorizontalPodAutoscaler {md.metadata.name} scales {target} within {bounds}",
    )


def drop_previous_autoscaler(cluster: ClusterApi, md: ModelDeployment) -> None:
    """Once the spec names another engine (or none), delete the previous engine's object."""
    previous = md.status.autoscaler
    if previous is None or previous == engine_of(md) or previous not in AUTOSCALER_KINDS:
        return
    api_version, kind = AUTOSCALER_KINDS[previous]
    # KEDA never (or no longer) installed: nothing of it to delete.
    with contextlib.suppress(KindNotInstalled):
        cluster.delete(api_version, kind, md.metadata.namespace, md.metadata.name)
