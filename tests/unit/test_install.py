"""The ways to install the operator: the Helm chart and the plain manifests."""

from __future__ import annotations

from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.support.install_manifests import CHART, OUTPUT, render


def chart_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = helm_python.Chart.load(CHART).render(values, name="tr", namespace="ops")
    return [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]


def test_the_chart_lints_clean() -> None:
    assert helm_python.lint(CHART, strict=True)["errors"] == []


@pytest.mark.parametrize(
    "values",
    [{}, {"watch": {"allNamespaces": False, "namespaces": ["ml", "risk"]}}],
    ids=["all-namespaces", "some-namespaces"],
)
def test_chart_objects_are_valid_kubernetes(values: dict[str, Any]) -> None:
    objects = chart_objects(values)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    if values:
        assert "--namespace=ml" in args and "--all-namespaces" not in args
    else:
        assert "--all-namespaces" in args


def test_monitoring_selects_model_pods_by_revision() -> None:
    objects = chart_objects({"monitoring": {"podMonitor": True, "serviceMonitor": True}})
    pod_monitor = next(o for o in objects if o["kind"] == "PodMonitor")
    relabel = pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {r["targetLabel"] for r in relabel} >= {"namespace", "revision"}


def test_rbac_grants_what_the_operator_writes_and_nothing_cluster_wide_beyond() -> None:
    role = next(o for o in chart_objects({}) if o["kind"] == "ClusterRole")
    granted = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert {"patch"} <= granted[("torchrollout.io", "modeldeployments/status")]
    for group, resource in [("apps", "deployments"), ("", "services"), ("", "configmaps")]:
        assert {"create", "patch", "delete"} <= granted[(group, resource)]
    assert "secrets" not in {r for _, r in granted}
    assert all("*" not in verbs for verbs in granted.values())


def test_plain_manifests_equal_the_chart() -> None:
    assert OUTPUT.read_text() == render(), "manifests/install is stale: run `make manifests`"
