"""Installing as a user does, on the real control plane: helm install, upgrade and uninstall
of the chart, the plain manifests, and RBAC that grants the operator what it needs and no
more."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import CHART, OPERATOR_NAMESPACE, ROOT, Helm, create_namespace
from tests.kube_cluster.cluster import ControlPlane
from tests.kube_emulator.fixtures import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MANIFESTS = ROOT / "manifests" / "install" / "torchrollout.yaml"
OPERATOR = f"system:serviceaccount:{OPERATOR_NAMESPACE}:torchrollout"


def test_helm_upgrade_changes_the_operator_and_uninstall_removes_it(
    kube_cluster: ControlPlane, api_client: client.ApiClient, helm: Helm, installed: str
) -> None:
    release = f"tr-{uuid.uuid4().hex[:6]}"
    namespace = f"{release}-system"
    create_namespace(api_client, namespace)  # restricted: the operator's pod must pass it
    # Watched namespaces must exist: the operator's Roles are created in them.
    watched = f"{release}-models"
    create_namespace(api_client, watched)
    helm("install", release, str(CHART), "-n", namespace, "--wait", "--timeout=2m")
    apps = client.AppsV1Api(api_client)

    def operator_args() -> list[str]:
        args: list[str] = (
            apps.read_namespaced_deployment(release, namespace)
            .spec.template.spec.containers[0]
            .args
        )
        return args

    assert "--all-namespaces" in operator_args()
    helm(
        "upgrade",
        release,
        str(CHART),
        "-n",
        namespace,
        "--wait",
        "--timeout=2m",
        "--set",
        "watch.allNamespaces=false",
        "--set",
        f"watch.namespaces={{{watched}}}",
        "--set",
        "prometheusUrl=http://prometheus.example:9090",
    )
    assert f"--namespace={watched}" in operator_args()
    assert "--prometheus-url=http://prometheus.example:9090" in operator_args()
    history = json.loads(helm("history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    helm("uninstall", release, "-n", namespace, "--wait", "--timeout=2m")
    rbac = client.RbacAuthorizationV1Api(api_client)
    eventually(lambda: not apps.list_namespaced_deployment(namespace).items, timeout=30)
    assert release not in {r.metadata.name for r in rbac.list_cluster_role().items}
    assert release not in {b.metadata.name for b in rbac.list_cluster_role_binding().items}
    accounts = client.CoreV1Api(api_client).list_namespaced_service_account(namespace).items
    assert [a.metadata.name for a in accounts] == ["default"]
    # Helm never deletes CRDs (that would delete every ModelDeployment): the first release's stays.
    kube_cluster.kubectl("get", "crd", "modeldeployments.torchrollout.io")


@pytest.mark.parametrize(
    ("flag", "path"), [("-f", MANIFESTS), ("-k", MANIFESTS.parent)], ids=["plain", "kustomize"]
)
def test_the_plain_manifests_are_accepted_by_the_api_server(
    kube_cluster: ControlPlane, installed: str, flag: str, path: Path
) -> None:
    # Server-side apply: the helm-installed objects of the same names carry no
    # last-applied annotation, which client-side apply would warn about.
    done = kube_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        flag,
        str(path),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr
    applied = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert len(applied) == len(list(yaml.safe_load_all(MANIFESTS.read_text())))


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        # what the operator does
        ("watch", "modeldeployments.torchrollout.io", "", True),
        ("patch", "modeldeployments.torchrollout.io/status", "models", True),
        ("create", "deployments.apps", "models", True),
        ("delete", "deployments.apps", "models", True),  # superseded revisions
        ("delete", "services", "models", False),  # they go with their ownerReferences
        ("update", "deployments.apps", "models", False),  # merge patches only
        ("create", "httproutes.gateway.networking.k8s.io", "models", True),
        ("create", "events", "models", True),
        ("create", "jobs.batch", "models", True),  # archive builds
        ("list", "pods", "models", True),  # their termination messages
        ("create", "networkpolicies.networking.k8s.io", "models", True),  # networkPolicy
        # what it must never do
        ("create", "modeldeployments.torchrollout.io", "models", False),  # spec is the user's
        ("delete", "modeldeployments.torchrollout.io", "models", False),
        ("get", "secrets", "models", True),  # notification webhook URLs, by name
        ("list", "secrets", "models", False),
        ("watch", "secrets", "models", False),
        ("create", "pods", "models", False),
        ("create", "pods/exec", "models", False),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", "", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", "", False),
        ("delete", "namespaces", "", False),
        ("update", "nodes", "", False),
    ],
)
def test_the_operator_account_can_do_what_it_needs_and_no_more(
    kube_cluster: ControlPlane,
    installed: str,
    verb: str,
    resource: str,
    namespace: str,
    allowed: bool,
) -> None:
    scope = ["-n", namespace] if namespace else []
    answer = kube_cluster.kubectl(
        "auth", "can-i", verb, resource, f"--as={OPERATOR}", *scope, check=False
    ).stdout.strip()
    assert answer == ("yes" if allowed else "no")


def test_a_namespaced_install_grants_rights_only_in_the_watched_namespace(
    kube_cluster: ControlPlane, api_client: client.ApiClient, helm: Helm, installed: str
) -> None:
    release = f"tr-{uuid.uuid4().hex[:6]}"
    watched = f"{release}-models"
    for namespace in (release, watched):
        create_namespace(api_client, namespace)
    helm(
        "install", release, str(CHART), "-n", release, "--wait", "--timeout=2m",
        "--set", "watch.allNamespaces=false", "--set", f"watch.namespaces={{{watched}}}",
    )  # fmt: skip
    account = f"system:serviceaccount:{release}:{release}"

    def can(verb: str, resource: str, *scope: str) -> bool:
        answer = kube_cluster.kubectl(
            "auth", "can-i", verb, resource, f"--as={account}", *scope, check=False
        )
        return answer.stdout.strip() == "yes"

    try:
        assert can("create", "deployments.apps", "-n", watched)
        assert can("patch", "modeldeployments.torchrollout.io/status", "-n", watched)
        assert not can("create", "deployments.apps", "-n", "default")  # refused outside
        assert not can("list", "modeldeployments.torchrollout.io", "--all-namespaces")
        assert can("get", "ingressclasses.networking.k8s.io")  # cluster-scoped: still granted
    finally:
        helm("uninstall", release, "-n", release, "--wait", "--timeout=2m")


def test_helm_refuses_a_value_of_the_wrong_type_naming_it(helm: Helm) -> None:
    done = helm("template", "tr", str(CHART), "--set", "replicaCount=abc", check=False)
    assert done.returncode != 0
    assert "/replicaCount" in done.stderr and "want integer" in done.stderr
    assert helm("lint", str(CHART), "--set", "replicaCount=2").returncode == 0
