"""The chart's Grafana dashboard: a valid dashboard whose every query reads a metric that exists.

"Exists" is read from the exporters themselves, never from a list kept here: the operator's
names from a live `OperatorMetrics` registry (so `_total`, `_bucket` are what
prometheus-client really writes), the handlers' from model-handlers/metrics.yaml (what
TorchServe exposes: a metric it does not declare is dropped), and `up`. The ConfigMap is
rendered by the real helm binary (`make kube` builds it).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from tests.dashboard.promql import grafana_query, metric_names, selectors
from tests.kube_cluster.build import toolchain
from torchrollout.operator.telemetry import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "torchrollout"
DASHBOARD = CHART / "files" / "dashboard.json"
HANDLER_METRICS = ROOT / "model-handlers" / "metrics.yaml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTINS = {"__rate_interval", "__range", "__interval"}
# Labels Prometheus puts on every scraped series; through a ServiceMonitor with honorLabels
# off, the operator's own `namespace` label is renamed `exported_namespace`.
TARGET_LABELS = {"job", "instance"}
OPERATOR_RENAMED = {"exported_namespace"}
# TorchServe adds Hostname to every model metric (model-handlers/README.md).
TORCHSERVE_ADDED = {"Hostname"}


# -- the extractor --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(x_bucket{job="a", le!="+Inf"}[5m]))', {"x_bucket"}),
        ("histogram_quantile(0.99, sum(rate(a_bucket[5m])) by (le, revision)) * 1e3", {"a_bucket"}),
        ("a / on (namespace) group_left (name) b offset 1h", {"a", "b"}),
        (
            '(sum(increase(c{r="$rev"}[$__rate_interval])) or vector(0)) + d unless e',
            {"c", "d", "e"},
        ),
        ('label_replace(m, "dst", "$1", "src", "(.*)") > bool 0.5', {"m"}),
        ('count_values("v", ns:m:rate5m) # a comment naming x', {"ns:m:rate5m"}),
        ("max_over_time(deriv(g[10m])[1h:5m]) @ start()", {"g"}),
        ("up == Inf or NaN", {"up"}),
        ("a # don't count b\n+ c{l='it\\'s'} atan2 d", {"a", "c", "d"}),
    ],
)
def test_metric_names_are_the_selected_series_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_selectors_name_the_labels_they_match() -> None:
    expr = 'rate(a{x="}", y=~"a|b"}[1m]) / b{z!=""} + {__name__="c"}'
    assert selectors(expr) == [("a", {"x", "y"}), ("b", {"z"}), ("", {"__name__"})]


@pytest.mark.parametrize(
    ("query", "promql"),
    [
        ('label_values(m{a="$b", c=~"d,e"}, name)', 'm{a="$b", c=~"d,e"}'),
        ("label_values(name)", ""),
        ("query_result(count by (n) (m))", "count by (n) (m)"),
        ("sum(m)", "sum(m)"),
    ],
)
def test_grafana_variable_queries_unwrap_to_their_promql(query: str, promql: str) -> None:
    assert grafana_query(query) == promql


# -- what the exporters export --------------------------------------------------------------


def operator_series() -> dict[str, set[str]]:
    """Each sample name the operator's registry writes, with its labels."""
    metrics = OperatorMetrics()
    for metric in vars(metrics).values():
        # A labelled metric writes no sample until a child exists.
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*("x" for _ in metric._labelnames))
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def handler_series(scrape_labels: set[str]) -> dict[str, set[str]]:
    """Each series name TorchServe exposes for the handlers' metrics.yaml, with its labels."""
    config = yaml.safe_load(HANDLER_METRICS.read_text())
    series: dict[str, set[str]] = {}
    for section in ("ts_metrics", "model_metrics"):
        for kind, declared in config[section].items():
            # TorchServe writes counters without `_total` (model-handlers/README.md).
            suffixes = ("_bucket", "_count", "_sum") if kind == "histogram" else ("",)
            for metric in declared:
                labels = {*metric["dimensions"], *TORCHSERVE_ADDED, *scrape_labels}
                for suffix in suffixes:
                    series[metric["name"] + suffix] = labels | (
                        {"le"} if suffix == "_bucket" else set()
                    )
    return series


def test_the_operator_series_are_read_from_its_registry() -> None:
    series = operator_series()
    assert series["torchrollout_rollouts_total"] == {"outcome"}
    assert series["torchrollout_canary_weight"] == {"namespace", "name"}
    assert "torchrollout_tick_duration_seconds_bucket" in series


# -- the dashboard --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def targets_of(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield variable["name"], query["query"] if isinstance(query, dict) else query


def test_the_dashboard_is_a_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "torchrollout" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in panels_of(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels_of(dashboard):
        assert panel["title"] and set(panel["gridPos"]) == {"h", "w", "x", "y"}
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']}: no queries"
            assert panel["datasource"] == DATASOURCE, panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[x, y]}"
                taken[x, y] = panel["title"]


def test_every_query_reads_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for title, target in targets_of(dashboard):
        assert target["datasource"] == DATASOURCE, f"{title} {target['refId']}"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    assert {"namespace", "name"} <= set(variables)


def test_queries_use_only_defined_variables(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_BUILTINS
    used = [
        (title, variable)
        for title, target in targets_of(dashboard)
        for variable in re.findall(r"\$\{?(\w+)", target["expr"])
    ] + [
        (name, variable)
        for name, query in variable_queries(dashboard)
        for variable in re.findall(r"\$\{?(\w+)", query)
    ]
    # $1 is label_replace's capture group, not a variable.
    assert [(where, v) for where, v in used if v not in defined and not v.isdigit()] == []


def test_every_metric_a_panel_reads_is_exported(dashboard: dict[str, Any]) -> None:
    exported = {*operator_series(), *handler_series(set()), "up"}
    unknown = []
    for title, target in targets_of(dashboard):
        names = metric_names(target["expr"])
        assert names, f"{title}: no metric found in {target['expr']!r}"
        unknown += [(title, name) for name in sorted(names - exported)]
    for variable, query in variable_queries(dashboard):
        names = metric_names(grafana_query(query))
        assert names, f"variable {variable}: no metric found in {query!r}"
        unknown += [(f"${variable}", name) for name in sorted(names - exported)]
    assert unknown == []


def test_every_label_a_query_matches_is_on_its_series(dashboard: dict[str, Any]) -> None:
    # Model pods are labelled by the chart's PodMonitor; the model panels select by those.
    pod_monitor = next(
        o for o in helm_template("--set", "monitoring.podMonitor=true") if o["kind"] == "PodMonitor"
    )
    relabeled = {
        r["targetLabel"] for r in pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    }
    assert {"namespace", "deployment", "revision"} <= relabeled
    series = {
        **{
            name: labels | TARGET_LABELS | OPERATOR_RENAMED
            for name, labels in operator_series().items()
        },
        **handler_series(relabeled | TARGET_LABELS),
        "up": TARGET_LABELS,
    }
    queries = [t["expr"] for _, t in targets_of(dashboard)]
    queries += [grafana_query(q) for _, q in variable_queries(dashboard)]
    stray = [
        (name, sorted(matched - series[name]))
        for query in queries
        for name, matched in selectors(query)
        if matched - series[name]
    ]
    assert stray == []


# -- the chart ------------------------------------------------------------------------------


def helm_template(*arguments: str) -> list[dict[str, Any]]:
    helm = toolchain().binary("helm")
    if not helm.is_file():
        pytest.skip(f"no helm at {helm}: `make kube` builds it")
    rendered = subprocess.run(
        [str(helm), "template", "tr", str(CHART), "--namespace", "ops", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def dashboard_config_maps(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "ConfigMap" and "torchrollout.json" in o["data"]]


def test_the_dashboard_is_off_by_default() -> None:
    assert dashboard_config_maps(helm_template()) == []


def test_enabled_it_renders_a_config_map_for_the_grafana_sidecar(dashboard: dict[str, Any]) -> None:
    (config_map,) = dashboard_config_maps(helm_template("--set", "dashboard.enabled=true"))
    assert config_map["metadata"]["namespace"] == "ops"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["labels"]["app.kubernetes.io/instance"] == "tr"
    assert json.loads(config_map["data"]["torchrollout.json"]) == dashboard


def test_the_sidecar_label_namespace_and_folder_are_values() -> None:
    (config_map,) = dashboard_config_maps(
        helm_template(
            "--set",
            "dashboard.enabled=true",
            "--set",
            "dashboard.labels.grafana_dashboard=null",
            "--set-string",
            "dashboard.labels.dashboards=grafana",
            "--set",
            "dashboard.namespace=monitoring",
            "--set",
            "dashboard.annotations.grafana_folder=ML",
        )
    )
    metadata = config_map["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["dashboards"] == "grafana"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "ML"}
