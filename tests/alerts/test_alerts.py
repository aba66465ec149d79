"""The chart's alerts: the rules file under promtool, and the PrometheusRule the chart makes of it.

charts/torchrollout/files/alerts.yaml is the one source: promtool checks it and runs
alerts_test.yaml's cases against it, and the chart's template wraps it unchanged but for
the operator's scrape job, which these tests pin by rendering the chart.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.kube_cluster.build import toolchain
from tests.support.install_manifests import CHART

RULES = CHART / "files" / "alerts.yaml"
CASES = Path(__file__).with_name("alerts_test.yaml")
DEFAULT_JOB = 'job="torchrollout-metrics"'
ALERTS = {
    "TorchrolloutRollback",
    "TorchrolloutAnalysisErrors",
    "TorchrolloutRolloutStuck",
    "TorchrolloutArchiveBuildFailing",
    "TorchrolloutOperatorDown",
    "TorchrolloutReconcileErrors",
}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("no promtool: it comes with Debian's prometheus package (make prometheus)")
    return subprocess.run([binary, *args], check=False, capture_output=True, text=True, timeout=60)


# -- the rules file --------------------------------------------------------------------


@pytest.mark.prometheus
def test_promtool_accepts_the_rules_file() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(ALERTS)} rules found" in done.stdout


@pytest.mark.prometheus
def test_every_promtool_case_passes() -> None:
    done = promtool("test", "rules", str(CASES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load(CASES.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            tested.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    assert {rule["alert"] for rule in rules()} == ALERTS
    assert tested == {alert: {True, False} for alert in ALERTS}


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_says_how_bad_what_happened_and_what_to_do(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"]
    assert "kubectl " in rule["annotations"]["description"]


# -- the chart ---------------------------------------------------------------------------


def render_with_helm_python(values: dict[str, Any], *, release: str, tmp_path: Path) -> str:
    rendered = helm_python.Chart.load(CHART).render(values, name=release, namespace="ops")
    return "\n---\n".join(rendered.values())


def render_with_helm(values: dict[str, Any], *, release: str, tmp_path: Path) -> str:
    helm = toolchain().binary("helm")
    if not helm.exists():
        pytest.skip(f"{helm} is not built: make kube")
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    command = [str(helm), "template", release, str(CHART), "-n", "ops", "-f", str(values_file)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(params=[render_with_helm_python, render_with_helm], ids=["helm-python", "helm"])
def prometheus_rules(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The PrometheusRules the chart renders for some values and release name."""

    def render(values: dict[str, Any], release: str = "torchrollout") -> list[dict[str, Any]]:
        text = request.param(values, release=release, tmp_path=tmp_path)
        documents = [d for d in yaml.safe_load_all(text) if d]
        return [d for d in documents if d["kind"] == "PrometheusRule"]

    return render


def test_default_values_render_no_prometheus_rule(prometheus_rules: Any) -> None:
    assert prometheus_rules({}) == []


def test_the_prometheus_rule_carries_the_rules_file_unchanged(prometheus_rules: Any) -> None:
    # Release `torchrollout` scrapes as job torchrollout-metrics: exactly the file's job.
    (rule,) = prometheus_rules({"prometheusRule": {"enabled": True}})
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "ops"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


@pytest.mark.parametrize(
    ("values", "release", "job"),
    [
        ({}, "tr", "tr-metrics"),
        ({"operatorJob": "operator"}, "torchrollout", "operator"),
    ],
    ids=["release-name", "operatorJob"],
)
def test_only_the_operator_job_follows_the_release(
    prometheus_rules: Any, values: dict[str, Any], release: str, job: str
) -> None:
    (rule,) = prometheus_rules({"prometheusRule": {"enabled": True, **values}}, release)
    expected = yaml.safe_load(RULES.read_text().replace(DEFAULT_JOB, f'job="{job}"'))
    assert rule["spec"] == expected
    down = next(r for r in rule["spec"]["groups"][0]["rules"] if r["alert"].endswith("Down"))
    assert f'up{{job="{job}"}}' in down["expr"]


def test_labels_for_the_rule_selector_and_namespace_are_set(prometheus_rules: Any) -> None:
    values = {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "namespace": "mon"}
    (rule,) = prometheus_rules({"prometheusRule": values})
    assert rule["metadata"]["namespace"] == "mon"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "torchrollout"
