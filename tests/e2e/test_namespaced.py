"""A namespaced install on the real control plane: the operator runs as a release's
ServiceAccount, which holds Roles in its watched namespace only.

Started with one more namespace than its Roles cover, it names that namespace and what it may
not do there once, at start-up, and keeps working where it may. The release sets an
operator-wide default notification target (`notifications.defaults`): a resource without
`spec.notifications` announces its rollback there, the URL read from a Secret of the
release's namespace through the Role the chart adds for it. The session's operator skips
`own-op-*` namespaces, so nothing else acts here.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    BAD,
    CHART,
    OWN_OPERATOR_PREFIX,
    Helm,
    OperatorProcess,
    Receiver,
    create_namespace,
    deploy_stable,
    dump,
    model_deployment,
    play,
    start_operator,
    status_of,
)
from tests.kube_cluster.cluster import ControlPlane
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter
from torchrollout.local.prometheus import PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_an_ungranted_namespace_is_named_and_the_default_target_hears_the_rollback(
    kube_cluster: ControlPlane,
    api_client: client.ApiClient,
    helm: Helm,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    prometheus: PrometheusServer,
    operator_process: OperatorProcess,  # running, to show that it leaves these namespaces alone
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    namespace = release = f"{OWN_OPERATOR_PREFIX}{uuid.uuid4().hex[:6]}"
    ungranted = f"{release}-other"
    for name in (namespace, ungranted):
        create_namespace(api_client, name)
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace, {"metadata": {"name": "rollout-alerts"}, "stringData": {"url": receiver.url}}
    )
    helm(
        "install", release, str(CHART), "-n", namespace, "--wait", "--timeout=2m",
        "--set", "watch.allNamespaces=false",
        "--set", f"watch.namespaces={{{namespace}}}",
        "--set", "notifications.defaults[0].type=webhook",
        "--set", "notifications.defaults[0].secretName=rollout-alerts",
        "--set", "notifications.defaults[0].key=url",
        "--set", "notifications.defaults[0].events={rolledBack}",
    )  # fmt: skip
    chart_args = (
        client.AppsV1Api(api_client)
        .read_namespaced_deployment(release, namespace)
        .spec.template.spec.containers[0]
        .args
    )
    args = [a for a in chart_args if a.startswith(("--namespace=", "--default-notification="))]
    assert args == [
        f"--namespace={namespace}",
        f"--default-notification=webhook:{namespace}/rollout-alerts/url:rolledBack",
    ]
    workdir = tmp_path_factory.mktemp("namespaced")
    token = kube_cluster.token_kubeconfig(release, namespace, workdir / "kubeconfig")
    running = start_operator(
        token, prometheus, workdir, args=(*args, f"--namespace={ungranted}"), name="namespaced"
    )
    try:
        refused = (
            f"namespace {ungranted}: the operator's account may not "
            "list modeldeployments.torchrollout.io"
        )
        eventually(lambda: refused in running.log.read_text(), timeout=30)
        assert f"namespace {namespace}:" not in running.log.read_text()  # granted: not named

        deploy_stable(kubectl, md_api, exporter, namespace)
        canary = model_deployment(namespace, "2.0.0")
        play(exporter, namespace, canary, BAD)
        kubectl.apply(dump(canary))
        eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=60)
        eventually(lambda: receiver.events() == ["rolledBack"], timeout=15)
        assert receiver.bodies[0]["namespace"] == namespace
        assert running.process is not None and running.process.poll() is None
        assert running.log.read_text().count(refused) == 1  # said once
    finally:
        running.stop()
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout=2m")
