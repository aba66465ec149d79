"""The control plane the e2e tests trust is a real one: its version, its controllers, its
admission and its authorization behave as a user's cluster does."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.kube_cluster import versions
from tests.kube_cluster.cluster import ControlPlane

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]


def namespace(cluster: ControlPlane, **labels: str) -> str:
    name = f"c-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    if labels:
        cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    return name


def test_kubectl_version_shows_the_pinned_real_server(kube_cluster: ControlPlane) -> None:
    shown = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert shown["serverVersion"]["gitVersion"] == versions.KUBERNETES
    assert shown["clientVersion"]["gitVersion"] == versions.KUBERNETES


def test_a_deployment_of_three_replicas_becomes_ready_on_fake_nodes(
    kube_cluster: ControlPlane,
) -> None:
    ns = namespace(kube_cluster)
    kube_cluster.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3", "-n", ns)
    kube_cluster.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    deployment = json.loads(
        kube_cluster.kubectl("get", "deployment/web", "-n", ns, "-o", "json").stdout
    )
    assert deployment["status"]["readyReplicas"] == 3
    pods = json.loads(kube_cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    assert sorted(p["status"]["phase"] for p in pods) == ["Running"] * 3
    assert all(p["spec"]["nodeName"].startswith("kwok-node-") for p in pods)


def test_the_restricted_pod_security_standard_is_enforced(kube_cluster: ControlPlane) -> None:
    ns = namespace(kube_cluster, **{"pod-security.kubernetes.io/enforce": "restricted"})
    refused = kube_cluster.kubectl(
        "run", "root", "--image=nginx", "--restart=Never", "-n", ns, check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr


def test_a_service_account_token_is_held_to_rbac(
    kube_cluster: ControlPlane, tmp_path: Path
) -> None:
    ns = namespace(kube_cluster)
    kube_cluster.kubectl("create", "serviceaccount", "reader", "-n", ns)
    kube_cluster.kubectl(
        "create", "role", "reader", "--verb=get,list", "--resource=configmaps", "-n", ns
    )
    kube_cluster.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        f"--serviceaccount={ns}:reader",
        "-n",
        ns,
    )
    token = kube_cluster.token_kubeconfig("reader", ns, tmp_path / "kubeconfig")

    def as_reader(*args: str) -> tuple[int, str]:
        done = kube_cluster.kubectl(f"--kubeconfig={token}", *args, check=False)
        return done.returncode, done.stderr

    assert as_reader("get", "configmaps", "-n", ns)[0] == 0
    code, said = as_reader("get", "secrets", "-n", ns)
    assert code != 0
    assert f'User "system:serviceaccount:{ns}:reader" cannot list resource "secrets"' in said


def test_the_garbage_collector_deletes_what_an_owner_owned(kube_cluster: ControlPlane) -> None:
    ns = namespace(kube_cluster)
    kube_cluster.kubectl("create", "configmap", "owner", "-n", ns)
    uid = kube_cluster.kubectl(
        "get", "configmap/owner", "-n", ns, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "namespace": ns,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(owned))
    kube_cluster.kubectl("delete", "configmap/owner", "-n", ns)
    kube_cluster.kubectl("wait", "--for=delete", "configmap/owned", "-n", ns, "--timeout=60s")


def test_a_restarted_api_server_keeps_the_cluster_state(kube_cluster: ControlPlane) -> None:
    ns = namespace(kube_cluster)
    kube_cluster.kubectl("create", "configmap", "kept", "--from-literal=a=1", "-n", ns)
    kube_cluster.restart("kube-apiserver")
    kept = kube_cluster.kubectl("get", "configmap/kept", "-n", ns, "-o", "jsonpath={.data.a}")
    assert kept.stdout == "1"
