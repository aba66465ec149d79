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
        assert {"get", "create", "patch"} <= granted[(group, resource)]
    # Superseded revisions are deleted; the rest goes with its ownerReferences.
    assert "delete" in granted[("apps", "deployments")] & granted[("", "configmaps")]
    assert "delete" not in granted[("", "services")]
    assert all("update" not in verbs for verbs in granted.values())  # merge patches only
    # Secrets: read by name, for spec.notifications' webhook URLs; never listed or watched.
    assert granted[("", "secrets")] == {"get"}
    assert all("*" not in verbs for verbs in granted.values())


def test_plain_manifests_equal_the_chart() -> None:
    assert OUTPUT.read_text() == render(), "manifests/install is stale: run `make manifests`"


NAMESPACED = {"watch": {"allNamespaces": False, "namespaces": ["ml", "risk"]}}


def test_a_namespaced_install_grants_children_only_in_the_watched_namespaces() -> None:
    objects = chart_objects(NAMESPACED)
    cluster_role = next(o for o in objects if o["kind"] == "ClusterRole")
    cluster_wide = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_wide == {"ingressclasses", "customresourcedefinitions", "namespaces"}
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"] for o in objects if o["kind"] == "RoleBinding"}
    assert set(roles) == bindings == {"ml", "risk"}
    granted = {r for rule in roles["ml"]["rules"] for r in rule["resources"]}
    assert {"modeldeployments", "deployments", "services", "events"} <= granted
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)


@pytest.mark.parametrize(
    ("values", "elected"),
    [
        ({}, False),
        ({"replicaCount": 2}, True),
        ({"leaderElection": {"enabled": True}}, True),
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, False),
    ],
)
def test_several_replicas_elect_a_leader_on_a_lease(values: dict[str, Any], elected: bool) -> None:
    objects = chart_objects(values)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == values.get("replicaCount", 1)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--leader-election-lease=tr" in args) is elected
    assert ("--leader-election-namespace=ops" in args) is elected
    lease_roles = [o for o in objects if o["kind"] == "Role" and "leases" in str(o["rules"])]
    assert [r["metadata"]["namespace"] for r in lease_roles] == (["ops"] if elected else [])
    strategy = deployment["spec"]["strategy"]["type"]
    assert strategy == ("RollingUpdate" if elected else "Recreate")


@pytest.mark.parametrize(
    ("values", "arguments"),
    [
        ({}, ["--resync-seconds=900", "--timer-seconds=30"]),
        (
            {"resyncSeconds": 3600, "timerSeconds": 5},
            ["--resync-seconds=3600", "--timer-seconds=5"],
        ),
    ],
)
def test_the_look_again_periods_reach_the_operator(
    values: dict[str, Any], arguments: list[str]
) -> None:
    deployment = next(o for o in chart_objects(values) if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith(("--resync-seconds", "--timer-seconds"))] == arguments


@pytest.mark.parametrize(
    ("values", "argument"),
    [
        ({}, None),
        ({"networkPolicy": {"enabled": True}}, "--network-policy-metrics-namespace=monitoring"),
        (
            {"networkPolicy": {"enabled": True, "metricsNamespace": "prom"}},
            "--network-policy-metrics-namespace=prom",
        ),
    ],
)
def test_network_policies_are_opt_in_and_granted(
    values: dict[str, Any], argument: str | None
) -> None:
    objects = chart_objects(values)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    given = [a for a in args if a.startswith("--network-policy-metrics-namespace")]
    assert given == ([argument] if argument else [])
    role = next(o for o in objects if o["kind"] == "ClusterRole")
    granted = {
        verb
        for rule in role["rules"]
        if "networkpolicies" in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {"get", "create", "patch"}


@pytest.mark.parametrize("all_namespaces", [True, False])
def test_default_notification_targets_become_flags_and_their_secrets_are_readable(
    all_namespaces: bool,
) -> None:
    defaults = [
        {"type": "slack", "secretName": "rollout-alerts", "key": "url"},
        {"type": "webhook", "secretName": "audit", "key": "u", "events": ["promoted", "failed"]},
    ]
    watch = {"allNamespaces": all_namespaces, "namespaces": [] if all_namespaces else ["risk"]}
    objects = chart_objects({"notifications": {"defaults": defaults}, "watch": watch})
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--default-notification")] == [
        "--default-notification=slack:ops/rollout-alerts/url",
        "--default-notification=webhook:ops/audit/u:promoted,failed",
    ]
    readers = [
        rule
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
        and (o["kind"] == "ClusterRole" or o["metadata"]["namespace"] == "ops")
        for rule in o["rules"]
        if "secrets" in rule["resources"] and "get" in rule["verbs"]
    ]
    assert readers, "the operator cannot read the default targets' Secrets"
    if not all_namespaces:
        assert readers[0]["resourceNames"] == ["rollout-alerts", "audit"]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"replicaCount": "abc"}, "/replicaCount"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"watch": {"allNamespaces": False}}, "/watch/namespaces"),
        ({"watch": {"namespaces": ["Not_A_Name"]}}, "/watch/namespaces/0"),
        ({"archiveStore": "gs://bucket"}, "/archiveStore"),
        ({"resyncSeconds": 0}, "/resyncSeconds"),
        ({"timerSeconds": "soon"}, "/timerSeconds"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"monitoring": {"podMonitr": True}}, "/monitoring"),
        ({"networkPolicy": {"metricsNamespace": "Monitoring"}}, "/networkPolicy/metricsNamespace"),
        (
            {"notifications": {"defaults": [{"type": "sms", "secretName": "s", "key": "u"}]}},
            "/notifications/defaults/0/type",
        ),
    ],
)
def test_the_values_schema_refuses_a_bad_value_naming_it(
    values: dict[str, Any], field: str
) -> None:
    with pytest.raises(Exception, match=f"at '{field}'"):
        chart_objects(values)
