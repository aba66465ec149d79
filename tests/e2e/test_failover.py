"""Two operator replicas on the real control plane: one leads on a Lease, the other stands
by; SIGKILL the leader mid-canary and the standby finishes the rollout, exactly once.

Both replicas run as the ServiceAccount of a release installed with `replicaCount=2` and
`watch.namespaces=[NS]`: they hold only that release's Roles (no cluster-wide rights over
deployments, services, ...), so this also proves a namespaced install works. The session's
operator skips `own-op-*` namespaces, so nothing else acts here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    CHART,
    GOOD,
    OWN_OPERATOR_PREFIX,
    Helm,
    OperatorProcess,
    create_namespace,
    deploy_stable,
    dump,
    model_deployment,
    phase_is,
    play,
    start_operator,
    status_of,
)
from tests.kube_cluster.cluster import ControlPlane
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter
from torchrollout.local.prometheus import PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

LEADS, WAITS = "Became the leader", "Waiting to lead"


def log_of(replica: OperatorProcess) -> str:
    return replica.log.read_text() if replica.log.exists() else ""


@pytest.fixture
def replicas(
    kube_cluster: ControlPlane,
    api_client: client.ApiClient,
    helm: Helm,
    prometheus: PrometheusServer,
    operator_process: OperatorProcess,  # running, to show that it leaves this namespace alone
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, OperatorProcess, OperatorProcess]]:
    """A namespaced two-replica release in NS, and its replicas: the first leads."""
    namespace = release = f"{OWN_OPERATOR_PREFIX}{uuid.uuid4().hex[:6]}"
    create_namespace(api_client, namespace)
    helm(
        "install", release, str(CHART), "-n", namespace, "--wait", "--timeout=2m",
        "--set", "replicaCount=2",
        "--set", "watch.allNamespaces=false",
        "--set", f"watch.namespaces={{{namespace}}}",
    )  # fmt: skip
    workdir = tmp_path_factory.mktemp("replicas")
    token = kube_cluster.token_kubeconfig(release, namespace, workdir / "kubeconfig")
    args = (
        f"--namespace={namespace}",
        f"--leader-election-lease={release}",
        f"--leader-election-namespace={namespace}",
    )
    first = start_operator(token, prometheus, workdir, args=args, name="first")
    second = start_operator(token, prometheus, workdir, args=args, name="second", wait=False)
    try:
        eventually(lambda: WAITS in log_of(second), timeout=30)
        yield namespace, first, second
    finally:
        second.stop()
        first.stop()
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout=2m")
        client.CoreV1Api(api_client).delete_namespace(namespace)


def test_the_standby_finishes_a_canary_once_when_the_leader_is_killed(
    replicas: tuple[str, OperatorProcess, OperatorProcess],
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
) -> None:
    namespace, leader, standby = replicas
    assert LEADS in log_of(leader) and LEADS not in log_of(standby)
    deploy_stable(kubectl, md_api, exporter, namespace)
    # A long progress deadline: the canary waits out the Lease (15 s) with no one acting.
    canary = model_deployment(
        namespace, "2.0.0", canary={"steps": [10, 30, 60], "progressDeadlineSeconds": 120}
    )
    play(exporter, namespace, canary, GOOD)
    kubectl.apply(dump(canary))
    eventually(lambda: phase_is(md_api, namespace, "Progressing", stepIndex=1), timeout=30)
    assert LEADS not in log_of(standby)  # it waited while the leader lived

    leader.kill()  # SIGKILL: no release of the Lease, the standby waits for it to expire
    eventually(lambda: LEADS in log_of(standby), timeout=45)
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=90)

    status = status_of(md_api, namespace)
    assert [h["version"] for h in status["history"]] == ["1.0.0", "2.0.0"]
    core = client.CoreV1Api(api_client)

    def promoted() -> int:
        events = core.list_namespaced_event(namespace).items
        return sum(e.count or 1 for e in events if e.reason == "Promoted")

    eventually(lambda: promoted() > 0, timeout=10)
    time.sleep(2)  # a duplicate would follow within a tick or two
    assert promoted() == 1
    # The standby, now leading, did the promotion: kopf ran its handlers there, only then.
    before, after = log_of(standby).split(LEADS, 1)
    assert "kopf.objects" not in before and "Daemon 'look_again' is invoked" in after
