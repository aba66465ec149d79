"""The opt-in NetworkPolicy on the real control plane: the API server accepts it from the
operator's account, and its podSelector picks exactly the ModelDeployment's pods.

The session's operator runs without `--network-policy-metrics-namespace`; rather than start
another, the test applies what the operator would render, as the operator would.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.e2e.conftest import OPERATOR_NAMESPACE, RELEASE, deploy_stable, get_md, revision_of
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter
from torchrollout.render.traffic import render_network_policy
from torchrollout.spec import parse_model_deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

OPERATOR = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}"


def test_the_network_policy_is_accepted_and_selects_the_model_pods(
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    body = deploy_stable(kubectl, md_api, exporter, namespace)
    md = parse_model_deployment(get_md(md_api, namespace))
    policy = render_network_policy(md, metrics_namespace="monitoring")
    applied = kubectl.apply(policy, "--dry-run=server", f"--as={OPERATOR}")
    assert "networkpolicy.networking.k8s.io/fraud created (server dry run)" in applied

    core = client.CoreV1Api(api_client)
    labels = policy["spec"]["podSelector"]["matchLabels"]
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    model_pods = f"fraud-{revision_of(body)}-"
    selected: list[str] = []

    def pods_selected() -> bool:
        selected[:] = [p.metadata.name for p in core.list_namespaced_pod(namespace).items]
        return bool(selected)

    eventually(pods_selected, timeout=30)
    chosen = {
        p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=selector).items
    }
    assert chosen == set(selected)
    assert all(name.startswith(model_pods) for name in chosen)
