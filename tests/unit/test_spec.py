"""ModelDeployment validation: every rule names the field and says what to fix."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import BASE, merged
from torchrollout.errors import SpecError
from torchrollout.spec import compute_revision, parse_model_deployment

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "fast interval below 1s",
        {"spec": {"canary": {"fastInterval": "0s"}}},
        "spec.canary.fastInterval",
        "must lie between 1s and interval",
    ),
    (
        "fast interval above the interval",
        {"spec": {"canary": {"interval": "5s", "fastInterval": "10s"}}},
        "spec.canary.fastInterval",
        "must lie between 1s and interval",
    ),
    (
        "critical check comparing only with the stable",
        {
            "spec": {
                "canary": {
                    "analysis": {
                        "metrics": [
                            {"template": "accuracy", "maxDropVsStable": 0.1, "critical": True}
                        ]
                    }
                }
            }
        },
        "spec.canary.analysis.metrics[0].critical",
        "critical needs a min or max",
    ),
    (
        "critical distribution check",
        {
            "spec": {
                "canary": {
                    "analysis": {
                        "metrics": [{"template": "latency-distribution", "critical": True}]
                    }
                }
            }
        },
        "spec.canary.analysis.metrics[0].critical",
        "critical needs a min or max",
    ),
    (
        "steps not increasing",
        {"spec": {"canary": {"steps": [10, 5]}}},
        "spec.canary.steps",
        "increase strictly",
    ),
    (
        "step of 100",
        {"spec": {"canary": {"steps": [50, 100]}}},
        "spec.canary.steps[1]",
        "less than 100",
    ),
    (
        "step of 0",
        {"spec": {"canary": {"steps": [0, 50]}}},
        "spec.canary.steps[0]",
        "greater than 0",
    ),
    ("no steps", {"spec": {"canary": {"steps": []}}}, "spec.canary.steps", "at least 1"),
    (
        "match without a request router",
        {"spec": {"canary": {"match": [{"headers": {"x-canary": "yes"}}]}}},
        "spec.canary.match",
        "needs a router that routes by request",
    ),
    (
        "mirror with nginx",
        {"spec": {"traffic": {"router": "nginx"}, "canary": {"mirror": {"percent": 10}}}},
        "spec.canary.mirror",
        "needs traffic.router gateway-api",
    ),
    (
        "mirror percent over 100",
        {"spec": {"traffic": {"router": "istio"}, "canary": {"mirror": {"percent": 150}}}},
        "spec.canary.mirror.percent",
        "less than or equal to 100",
    ),
    (
        "nginx match of two headers",
        {
            "spec": {
                "traffic": {"router": "nginx"},
                "canary": {"match": [{"headers": {"x-a": "1", "x-b": "2"}}]},
            }
        },
        "spec.canary.match",
        "router nginx matches one header",
    ),
    (
        "empty match",
        {"spec": {"traffic": {"router": "istio"}, "canary": {"match": [{}]}}},
        "spec.canary.match[0]",
        "a match needs headers or a cookie",
    ),
    (
        "istio gateways on nginx",
        {"spec": {"traffic": {"router": "nginx", "gateways": ["edge/public"]}}},
        "spec.traffic.gateways",
        "used only with router: istio",
    ),
    (
        "duration without unit",
        {"spec": {"canary": {"interval": "30"}}},
        "spec.canary.interval",
        "number with a unit",
    ),
    (
        "interval too long",
        {"spec": {"canary": {"interval": "48h"}}},
        "spec.canary.interval",
        "between 1s and 24h",
    ),
    (
        "template and query",
        {"spec": {"canary": {"analysis": {"metrics": [{"template": "accuracy", "query": "up"}]}}}},
        "spec.canary.analysis.metrics[0]",
        "exactly one of template",
    ),
    (
        "neither template nor query",
        {"spec": {"canary": {"analysis": {"metrics": [{"min": 1}]}}}},
        "spec.canary.analysis.metrics[0]",
        "exactly one of template",
    ),
    (
        "query without name",
        {"spec": {"canary": {"analysis": {"metrics": [{"query": "up", "min": 1}]}}}},
        "spec.canary.analysis.metrics[0]",
        "needs a name",
    ),
    (
        "query without threshold",
        {"spec": {"canary": {"analysis": {"metrics": [{"name": "up", "query": "up"}]}}}},
        "spec.canary.analysis.metrics[0]",
        "needs a threshold",
    ),
    (
        "unknown query variable",
        {
            "spec": {
                "canary": {
                    "analysis": {
                        "metrics": [{"name": "q", "query": "x{pod='{{ pod }}'}", "max": 1}]
                    }
                }
            }
        },
        "spec.canary.analysis.metrics[0]",
        "unknown variables ['pod']",
    ),
    (
        "accuracy above 1",
        {"spec": {"canary": {"analysis": {"metrics": [{"template": "accuracy", "min": 85}]}}}},
        "spec.canary.analysis.metrics[0]",
        "fraction in [0, 1]",
    ),
    (
        "min above max",
        {
            "spec": {
                "canary": {
                    "analysis": {"metrics": [{"name": "q", "query": "up", "min": 5, "max": 1}]}
                }
            }
        },
        "spec.canary.analysis.metrics[0]",
        "exceeds max",
    ),
    (
        "maxMs on accuracy",
        {"spec": {"canary": {"analysis": {"metrics": [{"template": "accuracy", "maxMs": 5}]}}}},
        "spec.canary.analysis.metrics[0]",
        "maxMs is for latency",
    ),
    (
        "ratio below 1",
        {
            "spec": {
                "canary": {
                    "analysis": {"metrics": [{"template": "latency-p99", "maxRatioVsStable": 0.5}]}
                }
            }
        },
        "spec.canary.analysis.metrics[0].maxRatioVsStable",
        "greater than or equal to 1",
    ),
    (
        "duplicate check names",
        {
            "spec": {
                "canary": {
                    "analysis": {
                        "metrics": [{"template": "accuracy"}, {"template": "accuracy", "min": 0.9}]
                    }
                }
            }
        },
        "spec.canary.analysis.metrics",
        "unique",
    ),
    (
        "head on a latency check",
        {
            "spec": {
                "canary": {
                    "analysis": {"metrics": [{"template": "latency-p99", "head": "direction"}]}
                }
            }
        },
        "spec.canary.analysis.metrics[0]",
        "head is for the templates accuracy and mean-absolute-error",
    ),
    (
        "head on a query check",
        {
            "spec": {
                "canary": {
                    "analysis": {
                        "metrics": [{"name": "q", "query": "up", "min": 0, "head": "direction"}]
                    }
                }
            }
        },
        "spec.canary.analysis.metrics[0]",
        "head is for the templates accuracy and mean-absolute-error",
    ),
    (
        "head check named like another check",
        {
            "spec": {
                "canary": {
                    "analysis": {
                        "metrics": [
                            {"template": "accuracy", "head": "direction"},
                            {"name": "accuracy-direction", "template": "accuracy"},
                        ]
                    }
                }
            }
        },
        "spec.canary.analysis.metrics",
        "unique",
    ),
    (
        "failureLimit 0",
        {"spec": {"canary": {"analysis": {"failureLimit": 0}}}},
        "spec.canary.analysis.failureLimit",
        "greater than or equal to 1",
    ),
    (
        "unknown policy",
        {"spec": {"canary": {"analysis": {"onError": "ignore"}}}},
        "spec.canary.analysis.onError",
        "'rollback' or 'pause'",
    ),
    (
        "bad sha256",
        {"spec": {"model": {"source": {"sha256": "abc"}}}},
        "spec.model.source.sha256",
        "64 lowercase hex",
    ),
    (
        "bad source scheme",
        {"spec": {"model": {"source": {"uri": "ftp://x/m.pt"}}}},
        "spec.model.source.uri",
        "is not valid",
    ),
    (
        "unknown handler",
        {"spec": {"model": {"handler": "resnet"}}},
        "spec.model.handler",
        "unknown handler 'resnet'; use one of sequence-classifier",
    ),
    (
        "version not a label value",
        {"spec": {"model": {"version": "2.0.0+build.1"}}},
        "spec.model.version",
        "label value",
    ),
    (
        "missing version",
        {"spec": {"model": {"version": None}}},
        "spec.model.version",
        "required field is missing",
    ),
    ("misspelt field", {"spec": {"canary": {"step": [1]}}}, "spec.canary.step", "unknown field"),
    (
        "gateway-api without gatewayRef",
        {"spec": {"traffic": {"router": "gateway-api"}}},
        "spec.traffic.gatewayRef",
        "needs gatewayRef",
    ),
    (
        "gatewayRef with replicas",
        {"spec": {"traffic": {"gatewayRef": {"name": "gw"}}}},
        "spec.traffic.gatewayRef",
        "only with router: gateway-api",
    ),
    (
        "autoscaling bounds",
        {"spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
        "spec.autoscaling",
        "exceeds maxReplicas",
    ),
    (
        "unknown notification type",
        {"spec": {"notifications": [{"type": "sms", "secretRef": {"name": "h", "key": "url"}}]}},
        "spec.notifications[0].type",
        "'webhook', 'slack' or 'teams'",
    ),
    (
        "notification without secretRef",
        {"spec": {"notifications": [{"type": "slack"}]}},
        "spec.notifications[0].secretRef",
        "required field is missing",
    ),
    (
        "unknown notification event",
        {
            "spec": {
                "notifications": [
                    {"type": "slack", "secretRef": {"name": "h", "key": "url"}, "events": ["x"]}
                ]
            }
        },
        "spec.notifications[0].events[0]",
        "'stepAdvanced', 'promoted', 'rolledBack', 'paused' or 'failed'",
    ),
    (
        "unknown autoscaling engine",
        {"spec": {"autoscaling": {"engine": "vpa"}}},
        "spec.autoscaling.engine",
        "'hpa', 'prometheus' or 'keda'",
    ),
    (
        "query signal without a query",
        {"spec": {"autoscaling": {"engine": "prometheus", "signal": "query", "target": 5}}},
        "spec.autoscaling.query",
        "signal: query needs query",
    ),
    (
        "query signal without a target",
        {"spec": {"autoscaling": {"engine": "prometheus", "signal": "query", "query": "up"}}},
        "spec.autoscaling.target",
        "needs a target",
    ),
    (
        "hpa behavior with another engine",
        {"spec": {"autoscaling": {"engine": "keda", "behavior": {"scaleDown": {}}}}},
        "spec.autoscaling.behavior",
        "used only with engine: hpa",
    ),
    ("name not a DNS label", {"metadata": {"name": "Fraud_LSTM"}}, "metadata.name", "DNS label"),
    (
        "pod label the operator sets",
        {"spec": {"runtime": {"podLabels": {"torchrollout.io/revision": "x"}}}},
        "spec.runtime.podLabels",
        "set by the operator",
    ),
    (
        "envFrom with two sources",
        {
            "spec": {
                "runtime": {
                    "envFrom": [{"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}]
                }
            }
        },
        "spec.runtime.envFrom[0]",
        "exactly one of configMapRef or secretRef",
    ),
    (
        "toleration without key",
        {"spec": {"runtime": {"tolerations": [{"effect": "NoSchedule"}]}}},
        "spec.runtime.tolerations[0]",
        "needs operator: Exists",
    ),
    (
        "env value and valueFrom",
        {
            "spec": {
                "runtime": {
                    "env": [
                        {
                            "name": "A",
                            "value": "x",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                        }
                    ]
                }
            }
        },
        "spec.runtime.env[0]",
        "not both",
    ),
    (
        "negative gpus",
        {"spec": {"runtime": {"gpus": -1}}},
        "spec.runtime.gpus",
        "greater than or equal to 0",
    ),
    (
        "token for an s3 source",
        {
            "spec": {
                "model": {
                    "source": {
                        "uri": "s3://models/m.pt",
                        "tokenSecretRef": {"name": "s", "key": "k"},
                    }
                }
            }
        },
        "spec.model.source",
        "for https:// sources",
    ),
    (
        "evaluation data on a claim",
        {"spec": {"canary": {"evaluation": {"datasetUri": "pvc://data/eval.jsonl"}}}},
        "spec.canary.evaluation",
        "cannot mount a claim",
    ),
    (
        "archive store scheme",
        {"spec": {"archive": {"store": "https://example.com/archives"}}},
        "spec.archive.store",
        "s3://bucket/prefix or pvc://claim/path",
    ),
    (
        "confidence on a threshold check",
        {
            "spec": {
                "canary": {
                    "analysis": {"metrics": [{"template": "latency-p99", "confidence": 0.9}]}
                }
            }
        },
        "spec.canary.analysis.metrics[0]",
        "confidence is for the template latency-distribution",
    ),
    (
        "thresholds on latency-distribution",
        {
            "spec": {
                "canary": {
                    "analysis": {
                        "metrics": [{"template": "latency-distribution", "maxRatioVsStable": 1.2}]
                    }
                }
            }
        },
        "spec.canary.analysis.metrics[0]",
        "set confidence and minEffect, not min, max, maxMs, maxDropVsStable or maxRatioVsStable",
    ),
    (
        "confidence of 1",
        {
            "spec": {
                "canary": {
                    "analysis": {"metrics": [{"template": "latency-distribution", "confidence": 1}]}
                }
            }
        },
        "spec.canary.analysis.metrics[0].confidence",
        "confidence must lie in [0.5, 1), e.g. 0.95",
    ),
    (
        "effect size written as a slowdown",
        {
            "spec": {
                "canary": {
                    "analysis": {
                        "metrics": [{"template": "latency-distribution", "minEffect": 0.2}]
                    }
                }
            }
        },
        "spec.canary.analysis.metrics[0].minEffect",
        "minEffect is P(canary slower) and must lie in [0.5, 1]",
    ),
]


@pytest.mark.parametrize(
    ("override", "path", "fragment"),
    [pytest.param(o, p, f, id=n) for n, o, p, f in INVALID],
)
def test_invalid_specs_name_the_field_and_the_fix(
    override: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_model_deployment(merged(BASE, {**override, "status": None}))
    problems = {p.path: p.message for p in caught.value.problems}
    assert path in problems, problems
    assert fragment in problems[path]


def test_defaults_are_documented_values() -> None:
    md = parse_model_deployment(merged(BASE, {"spec": {"canary": None}, "status": None}))
    canary = md.spec.canary
    assert canary.steps == [1, 10, 25, 50]
    assert canary.interval_seconds == 30
    assert canary.progress_deadline_seconds == 300
    assert canary.rollback_window == 3
    analysis = canary.analysis
    assert (analysis.min_samples, analysis.failure_limit, analysis.inconclusive_limit) == (50, 2, 5)
    assert analysis.consecutive_error_limit == 4
    assert (analysis.on_inconclusive, analysis.on_error) == ("rollback", "rollback")
    checks = {c.name: (c.min, c.max) for c in analysis.resolved_checks()}
    assert checks == {"latency-p99": (None, 500.0), "error-rate": (None, 0.05)}
    assert md.spec.traffic.router == "replicas"
    assert md.model_name == "fraud"


def test_template_defaults_apply_only_when_no_threshold_is_set() -> None:
    metrics = [{"template": "accuracy"}, {"template": "latency-p99", "maxRatioVsStable": 1.2}]
    md = parse_model_deployment(
        merged(BASE, {"spec": {"canary": {"analysis": {"metrics": metrics}}}, "status": None})
    )
    accuracy, latency = md.spec.canary.analysis.resolved_checks()
    assert (accuracy.min, accuracy.max) == (0.85, None)
    assert (latency.max, latency.max_ratio_vs_stable) == (None, 1.2)


def test_latency_distribution_defaults_are_documented_values() -> None:
    metrics = [
        {"template": "latency-distribution"},
        {
            "name": "strict",
            "template": "latency-distribution",
            "confidence": 0.99,
            "minEffect": 0.64,
        },
    ]
    md = parse_model_deployment(
        merged(BASE, {"spec": {"canary": {"analysis": {"metrics": metrics}}}, "status": None})
    )
    default, strict = md.spec.canary.analysis.resolved_checks()
    assert (default.confidence, default.min_effect, default.min_samples) == (0.95, 0.56, 50)
    assert (strict.confidence, strict.min_effect) == (0.99, 0.64)
    assert default.compares_with_stable
    assert (default.min, default.max, default.unit) == (None, None, "ms")


def test_custom_handler_module_is_accepted() -> None:
    md = parse_model_deployment(
        merged(BASE, {"spec": {"model": {"handler": "s3://m/handlers/mine.py"}}, "status": None})
    )
    assert md.spec.model.handler.endswith("mine.py")


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"model": {"version": "3.0.0"}}, False),
        ({"model": {"config": {"hidden": 64}}}, False),
        ({"runtime": {"resources": {"limits": {"memory": "4Gi"}}}}, False),
        ({"canary": {"steps": [5, 50]}}, True),
        ({"paused": True}, True),
        ({"runtime": {"replicas": 5}}, True),
    ],
    ids=["version", "config", "resources", "policy", "paused", "replicas"],
)
def test_revision_changes_only_with_what_the_pods_run(change: dict[str, Any], same: bool) -> None:
    before = parse_model_deployment(merged(BASE, {"status": None}))
    after = parse_model_deployment(merged(BASE, {"spec": change, "status": None}))
    assert (compute_revision(before.spec) == compute_revision(after.spec)) is same


def test_the_revision_is_the_same_for_the_file_and_what_the_api_server_stores() -> None:
    # The API server stores a YAML 0.0 as JSON 0: both must name the same pods.
    written = merged(
        BASE, {"status": None, "spec": {"model": {"sampleInput": {"input": [[0.0, 1.5]]}}}}
    )
    stored = merged(
        BASE, {"status": None, "spec": {"model": {"sampleInput": {"input": [[0, 1.5]]}}}}
    )
    changed = merged(
        BASE, {"status": None, "spec": {"model": {"sampleInput": {"input": [[0.5, 1.5]]}}}}
    )
    revision = compute_revision(parse_model_deployment(written).spec)
    assert compute_revision(parse_model_deployment(stored).spec) == revision
    assert compute_revision(parse_model_deployment(changed).spec) != revision
