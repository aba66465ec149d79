"""The opt-in NetworkPolicy: who may reach a ModelDeployment's pods, and when it is rendered."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from tests.unit.test_reconcile import NAME, NS, World, deployed
from torchrollout.render import plan
from torchrollout.render.names import INFERENCE_PORT, MANAGEMENT_PORT, METRICS_PORT, selector
from torchrollout.render.traffic import render_network_policy
from torchrollout.spec import load_model_deployment

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "deployments" / "fraud-lstm.yaml"


def test_inference_is_open_metrics_only_from_prometheus_and_nothing_else() -> None:
    md = load_model_deployment(EXAMPLE)
    policy = render_network_policy(md, metrics_namespace="monitoring")
    kubernetes_validate.validate(policy, "1.37.0", strict=True)
    assert policy["metadata"]["name"] == md.metadata.name
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": selector(md)}  # every revision's pods
    assert spec["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule.get("from") for rule in spec["ingress"]}
    assert rules == {
        INFERENCE_PORT: None,  # no `from`: anyone (clients, the Gateway, the operator)
        METRICS_PORT: [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    }
    assert MANAGEMENT_PORT not in rules


@pytest.mark.parametrize("namespace", [None, "monitoring"])
def test_the_plan_has_the_policy_only_with_the_operators_option(namespace: str | None) -> None:
    md = load_model_deployment(EXAMPLE)
    objects = plan(md, stable_replicas=1, metrics_namespace=namespace).objects
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert len(policies) == (0 if namespace is None else 1)


def test_the_reconciler_applies_the_policy_when_the_option_is_set() -> None:
    world = World()
    world.reconciler.network_policy_metrics_namespace = "prom"
    world.reconcile()
    policy = world.cluster.get("networking.k8s.io/v1", "NetworkPolicy", NS, NAME)
    assert policy is not None
    assert policy["spec"]["podSelector"]["matchLabels"] == {"torchrollout.io/deployment": NAME}
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_without_the_option_the_reconciler_touches_no_network_policy() -> None:
    world = deployed()
    assert not [key for key in world.cluster.objects if key[0] == "NetworkPolicy"]
