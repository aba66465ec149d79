"""Why a revision's pods are not ready, in the words of the cluster and with the field to fix.

Read from what Kubernetes reports: the Deployment's `ReplicaFailure` condition (a pod the API
server refused: a missing ServiceAccount, a quota, the namespace's Pod Security level), the
scheduler's `Unschedulable` (no node with the GPUs, selector or tolerations asked for) and the
kubelet's waiting reasons (a missing Secret or ConfigMap, an image that cannot be pulled, a
container that keeps crashing). Only an explanation: a cluster that cannot tell gives None.
The conditions `PodsReady` and `PodSettingsValid` report them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchrollout.operator.cluster import ClusterApi, ClusterError
from torchrollout.operator.routers import Workload
from torchrollout.render import names
from torchrollout.spec.document import ModelDeployment, compute_revision
from torchrollout.spec.status import Condition

# What to fix for each kind of trouble.
FIXES = {
    "ServiceAccountMissing": "create it, or fix spec.runtime.serviceAccountName",
    "PodRefused": "fix the spec.runtime setting the message names",
    "Unschedulable": "check spec.runtime.gpus, resources, nodeSelector, tolerations and affinity "
    "against the cluster's nodes",
    "CreateContainerConfigError": "create the Secret or ConfigMap, or fix spec.runtime.env, "
    "envFrom or model.source.tokenSecretRef",
    "ImagePullBackOff": "check spec.runtime.image and spec.runtime.imagePullSecrets",
    "ErrImagePull": "check spec.runtime.image and spec.runtime.imagePullSecrets",
    "InvalidImageName": "fix spec.runtime.image",
    "CrashLoopBackOff": "a container keeps exiting: see kubectl logs of a pod (-c archive for "
    "the archive step)",
}


@dataclass(frozen=True)
class PodTrouble:
    reason: str
    message: str


def _trouble(reason: str, what: str) -> PodTrouble:
    return PodTrouble(reason, f"{what.strip().rstrip('.')}; {FIXES[reason]}")


def refused(deployment: dict[str, Any]) -> PodTrouble | None:
    """The API server refused the Deployment's pods (its ReplicaFailure condition)."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            message = str(condition.get("message", ""))
            reason = "ServiceAccountMissing" if "serviceaccount" in message else "PodRefused"
            return _trouble(reason, f"pods are refused: {message}")
    return None


def _waiting(pod: dict[str, Any]) -> PodTrouble | None:
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return _trouble(
                "Unschedulable", f"pods cannot be scheduled: {condition.get('message', '')}"
            )
    containers = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    )
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FIXES:
            what = f"container {container.get('name')}: {reason}: {waiting.get('message', '')}"
            return _trouble(reason, what)
    return None


def pod_trouble(
    cluster: ClusterApi, md: ModelDeployment, revision: str, deployment: dict[str, Any] | None
) -> PodTrouble | None:
    """Why pods of `revision` are not ready, when Kubernetes says."""
    if deployment is not None and (found := refused(deployment)) is not None:
        return found
    try:
        pods = cluster.list("v1", "Pod", md.metadata.namespace, names.selector(md, revision))
    except ClusterError:
        return None
    for pod in pods:
        found = _waiting(pod)
        if found is not None:
            return found
    return None


def pods_condition(
    md: ModelDeployment, workloads: dict[str, Workload], trouble: PodTrouble | None
) -> Condition:
    """PodsReady: the spec's revision's pods, or why Kubernetes says they are not ready."""
    workload = workloads.get(compute_revision(md.spec))
    if trouble is not None:
        return Condition(
            type="PodsReady", status="False", reason=trouble.reason, message=trouble.message
        )
    if workload is not None and workload.available:
        return Condition(type="PodsReady", status="True", reason="Ready")
    if workload is not None and workload.replicas == 0:
        return Condition(type="PodsReady", status="True", reason="ScaledToZero")
    return Condition(type="PodsReady", status="Unknown", reason="Starting")


def refused_condition(obj: dict[str, Any], exc: ClusterError) -> Condition:
    """PodSettingsValid=False: the API server refused the pods `spec.runtime` describes."""
    message = str(exc).replace("spec.template.spec.", "spec.runtime.")
    return Condition(
        type="PodSettingsValid",
        status="False",
        reason="Refused",
        message=f"the API server refused {obj['kind']} {obj['metadata']['name']}: {message}; "
        "fix the field of spec.runtime it names",
    )
