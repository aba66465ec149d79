"""The dashboard's trickier queries, evaluated by Prometheus itself on series we write down.

`promtool test rules` evaluates PromQL against input series without a server, in well under a
second. Grafana's variables are filled in the way Grafana does (All is `.*`). The cases are the
ones a query could get wrong: a response class a revision never returned, a canary that only
fails, and the operator's `namespace` label under both scrape setups (renamed
`exported_namespace` through the chart's ServiceMonitor, kept with honor_labels).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboard.promql import grafana_query
from tests.dashboard.test_dashboard import DASHBOARD

pytestmark = pytest.mark.prometheus

MODEL = 'namespace="ml",deployment="fraud"'
SERVICE_MONITOR = 'job="tr-metrics",namespace="ops",exported_namespace="ml",name="fraud"'
HONOR_LABELS = 'job="local",namespace="risk",name="scorer"'
# Counters growing by N a minute, sampled every minute for 20 minutes.
INPUT = {
    f'Requests2XX{{{MODEL},revision="ok"}}': 60,
    f'Requests5XX{{{MODEL},revision="broken"}}': 60,
    f'Requests2XX{{{MODEL},revision="mixed"}}': 54,
    f'Requests4XX{{{MODEL},revision="mixed"}}': 3,
    f'Requests5XX{{{MODEL},revision="mixed"}}': 3,
    f'torchrollout_labeled{{{MODEL},revision="ok"}}': 10,
    f'torchrollout_correct{{{MODEL},revision="ok"}}': 9,
    f'torchrollout_inference_latency_seconds_bucket{{{MODEL},revision="ok",le="0.075"}}': 0,
    f'torchrollout_inference_latency_seconds_bucket{{{MODEL},revision="ok",le="0.1"}}': 60,
    f'torchrollout_inference_latency_seconds_bucket{{{MODEL},revision="ok",le="+Inf"}}': 60,
}
GAUGES = {
    f"torchrollout_canary_weight{{{SERVICE_MONITOR}}}": 25,
    f"torchrollout_canary_weight{{{HONOR_LABELS}}}": 50,
}


def query(panel: str) -> str:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    (target,) = next(p for p in panels if p["title"] == panel)["targets"]
    expr: str = target["expr"]
    return expr


def variable(name: str) -> str:
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    spec: Any = next(v for v in variables if v["name"] == name)["query"]
    return grafana_query(spec["query"] if isinstance(spec, dict) else spec)


def filled(expr: str, namespace: str = ".*") -> str:
    for name, value in {
        "$__rate_interval": "5m",
        "$namespace": namespace,
        "$name": ".*",
    }.items():
        expr = expr.replace(name, value)
    # Rounded: extrapolation makes 0.9 come out as 0.8999999999999999.
    return f"round(({expr}) * 10000) / 10000"


def case(expr: str, samples: dict[str, float]) -> dict[str, Any]:
    return {
        "expr": expr,
        "eval_time": "10m",
        "exp_samples": [{"labels": labels, "value": value} for labels, value in samples.items()],
    }


def test_per_revision_check_values_and_the_operator_namespace(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("no promtool (Debian's prometheus package; `make prometheus`)")
    weight = query("Canary weight")
    cases = [
        case(
            filled(query("Error rate per revision")),
            {
                f'{{{MODEL},revision="ok"}}': 0,
                f'{{{MODEL},revision="broken"}}': 1,
                f'{{{MODEL},revision="mixed"}}': 0.05,
            },
        ),
        case(filled(query("Accuracy per revision")), {f'{{{MODEL},revision="ok"}}': 0.9}),
        case(
            filled(query("Latency p99 per revision")),
            {f'{{{MODEL},revision="ok"}}': 99.75},  # 0.075 + 0.99 x 0.025 s, interpolated
        ),
        case(
            filled(weight),
            {
                '{job="tr-metrics",namespace="ml",exported_namespace="ml",name="fraud"}': 25,
                f"{{{HONOR_LABELS}}}": 50,
            },
        ),
        case(
            filled(weight, namespace="ml"),
            {'{job="tr-metrics",namespace="ml",exported_namespace="ml",name="fraud"}': 25},
        ),
        case(filled(weight, namespace="risk"), {f"{{{HONOR_LABELS}}}": 50}),
        case(filled(variable("namespace")), {'{namespace="ml"}': 1, '{namespace="risk"}': 1}),
        case(filled(variable("name"), namespace="ml"), {'{name="fraud"}': 1}),
    ]
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    *(
                        {"series": s, "values": f"0+{per_minute}x20"}
                        for s, per_minute in INPUT.items()
                    ),
                    *({"series": s, "values": f"{value}x20"} for s, value in GAUGES.items()),
                ],
                "promql_expr_test": cases,
            }
        ],
    }
    file = tmp_path / "dashboard_test.yaml"
    file.write_text(yaml.safe_dump(tests, sort_keys=False))
    ran = subprocess.run(
        [promtool, "test", "rules", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
