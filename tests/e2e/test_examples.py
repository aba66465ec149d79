"""Every example of examples/deployments, applied as written, is deployed on a real control
plane (restricted Pod Security, the real scheduler, kwok's nodes).

The cluster is given what the examples name, as a platform team's would have it: their
namespaces, the PersistentVolumeClaim a model source is on, the Secret with S3 credentials, a
node pool labelled `pool: inference`. The archive build of an example with a store is finished
as its kubelet would report it: its source bucket is not reachable from here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import ROOT, OperatorProcess, create_namespace, revision_of
from tests.e2e.kubelet import Ran, finish_pod
from tests.kube_emulator.fixtures import Kubectl, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

EXAMPLES = sorted((ROOT / "examples" / "deployments").glob("*.yaml"))


@pytest.fixture(scope="module")
def platform(api_client: client.ApiClient, operator_process: OperatorProcess) -> Iterator[None]:
    """Namespaces, claims, Secrets and a labelled node pool the examples expect."""
    core = client.CoreV1Api(api_client)
    documents = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    namespaces = sorted({d["metadata"]["namespace"] for d in documents})
    for name in namespaces:
        create_namespace(api_client, name)
    claim = f"model-store-{uuid.uuid4().hex[:6]}"
    core.create_persistent_volume(
        {
            "metadata": {"name": claim},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "hostPath": {"path": "/srv/models"},
                "claimRef": {"namespace": "telemetry", "name": "model-store"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        "telemetry",
        {
            "metadata": {"name": "model-store"},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": claim,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    core.create_namespaced_secret(
        "risk",
        {
            "metadata": {"name": "fraud-s3-credentials"},
            "stringData": {"AWS_ACCESS_KEY_ID": "example", "AWS_SECRET_ACCESS_KEY": "example"},
        },
    )
    core.patch_node("kwok-node-0", {"metadata": {"labels": {"pool": "inference"}}})
    yield
    core.patch_node("kwok-node-0", {"metadata": {"labels": {"pool": None}}})
    for name in namespaces:
        core.delete_namespace(name)
    core.delete_persistent_volume(claim)


def _phase(api: client.CustomObjectsApi, namespace: str, name: str) -> str:
    body = api.get_namespaced_custom_object(
        "torchrollout.io", "v1alpha1", namespace, "modeldeployments", name
    )
    status = body.get("status") or {}
    assert status.get("phase") != "Failed", status.get("message")
    return str(status.get("phase", ""))


def _finish_build(api_client: client.ApiClient, namespace: str, revision: str) -> str:
    core = client.CoreV1Api(api_client)
    selector = f"torchrollout.io/component=archive-build,torchrollout.io/revision={revision}"
    pods: list[client.V1Pod] = []

    def running() -> bool:
        pods[:] = core.list_namespaced_pod(namespace, label_selector=selector).items
        return any(p.status.phase == "Running" for p in pods)

    eventually(running, timeout=30)
    pod = api_client.sanitize_for_serialization(pods[0])
    digest = hashlib.sha256(f"archive of {revision}".encode()).hexdigest()
    finish_pod(api_client, namespace, pod, Ran(0, "", digest))
    return digest


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_the_example_deploys_as_written(
    platform: None,
    path: Path,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
) -> None:
    document = yaml.safe_load(path.read_text())
    namespace, name = document["metadata"]["namespace"], document["metadata"]["name"]
    kubectl("apply", "-f", str(path))
    digest = None
    if document["spec"].get("archive", {}).get("store"):
        digest = _finish_build(api_client, namespace, revision_of(document))
    eventually(lambda: _phase(md_api, namespace, name) == "Succeeded", timeout=60)
    apps = client.AppsV1Api(api_client)
    deployment = apps.read_namespaced_deployment(f"{name}-{revision_of(document)}", namespace)
    replicas = document["spec"].get("runtime", {}).get("replicas", 1)
    assert (deployment.status.ready_replicas or 0) >= min(
        replicas, document["spec"].get("autoscaling", {}).get("minReplicas", replicas)
    )
    if digest is not None:
        init = deployment.spec.template.spec.init_containers[0]
        assert init.args[init.args.index("--sha256") + 1] == digest
    kubectl("delete", "-f", str(path), "--wait=true")
