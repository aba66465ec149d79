"""Why pods are not ready, from what Kubernetes reports, with the field to fix."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import resource
from torchrollout.operator.cluster import FakeCluster
from torchrollout.operator.pods import pod_trouble
from torchrollout.spec import compute_revision

MD = resource()
REVISION = compute_revision(MD.spec)


def pod(status: dict[str, Any]) -> dict[str, Any]:
    labels = {"torchrollout.io/deployment": MD.metadata.name, "torchrollout.io/revision": REVISION}
    return {"kind": "Pod", "metadata": {"name": "p", "labels": labels}, "status": status}


def waiting(reason: str, message: str, *, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    state = {"waiting": {"reason": reason, "message": message}}
    return {key: [{"name": "archive" if init else "torchserve", "state": state}]}


UNSCHEDULABLE = {
    "conditions": [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        }
    ]
}
REPLICA_FAILURE = {
    "conditions": [
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": 'pods "fraud-x-" is forbidden: error looking up service account '
            'risk/reader: serviceaccount "reader" not found',
        }
    ]
}


@pytest.mark.parametrize(
    ("deployment_status", "pod_status", "reason", "says"),
    [
        (REPLICA_FAILURE, None, "ServiceAccountMissing", 'serviceaccount "reader" not found'),
        ({}, UNSCHEDULABLE, "Unschedulable", "spec.runtime.gpus"),
        (
            {},
            waiting("CreateContainerConfigError", 'secret "s3" not found', init=True),
            "CreateContainerConfigError",
            "spec.runtime.env, envFrom",
        ),
        ({}, waiting("ImagePullBackOff", "back-off"), "ImagePullBackOff", "imagePullSecrets"),
        ({}, waiting("CrashLoopBackOff", "back-off 5m"), "CrashLoopBackOff", "kubectl logs"),
        ({}, waiting("ContainerCreating", ""), None, ""),  # just starting: nothing to say
        ({}, None, None, ""),
    ],
)
def test_pod_trouble_names_the_cause_and_the_field(
    deployment_status: dict[str, Any],
    pod_status: dict[str, Any] | None,
    reason: str | None,
    says: str,
) -> None:
    cluster = FakeCluster()
    if pod_status is not None:
        cluster.objects[("Pod", MD.metadata.namespace, "p")] = pod(pod_status)
    found = pod_trouble(cluster, MD, REVISION, {"status": deployment_status})
    assert (found.reason if found else None) == reason
    if found is not None:
        assert says in found.message
