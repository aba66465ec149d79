"""Checks that judge one head of a multi-output model: names, spec validation, PromQL, CRD.

A check may name a head (`{template: accuracy, head: direction}`); it then reads the
handlers' per-head counters selected by their `Head` label. The spec refuses a head the
model's config does not declare, or of the wrong kind for the template; the CEL rules the
CRD can hold are in the table of test_spec.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import BASE, merged
from torchrollout.errors import SpecError
from torchrollout.metrics.templates import Target, queries_for
from torchrollout.spec import ModelDeployment, parse_model_deployment
from torchrollout.spec.checks import ModelHeads
from torchrollout.spec.crd import render_crd

HEADS_CONFIG: dict[str, Any] = {
    "architecture": {
        "kind": "bilstm-attention",
        "input_size": 3,
        "heads": {"direction": 3, "regime": 2},
        "regression_heads": {"max_profit": 1},
    }
}
TARGET = Target("risk", "fraud", revision="r1", version="2.0.0", interval="30s")


def deployment(metrics: list[dict[str, Any]], config: Any = HEADS_CONFIG) -> ModelDeployment:
    return parse_model_deployment(
        merged(
            BASE,
            {
                "spec": {
                    "model": {"config": config},
                    "canary": {"analysis": {"metrics": metrics}},
                },
                "status": None,
            },
        )
    )


def problems(metrics: list[dict[str, Any]], config: Any = HEADS_CONFIG) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        deployment(metrics, config)
    return {p.path: p.message for p in caught.value.problems}


def test_a_head_check_is_named_after_its_template_and_head() -> None:
    md = deployment(
        [
            {"template": "accuracy", "min": 0.9},
            {"template": "accuracy", "head": "direction", "min": 0.9},
            {"template": "accuracy", "head": "regime"},
            {"template": "mean-absolute-error", "head": "max_profit", "max": 2.5},
            {"name": "profit", "template": "mean-absolute-error", "head": "max_profit", "max": 1},
        ]
    )
    checks = md.spec.canary.analysis.resolved_checks()
    assert [(c.name, c.head, c.min, c.max) for c in checks] == [
        ("accuracy", None, 0.9, None),
        ("accuracy-direction", "direction", 0.9, None),
        ("accuracy-regime", "regime", 0.85, None),  # the template's default threshold
        ("mean-absolute-error-max_profit", "max_profit", None, 2.5),
        ("profit", "max_profit", None, 1.0),
    ]


def _selector(head: str) -> str:
    return f'{{namespace="risk",revision="r1",Head="{head}"}}'


QUERIES = [
    (
        {"template": "accuracy", "head": "direction"},
        f"sum(increase(torchrollout_head_correct{_selector('direction')}[30s]))"
        f" / sum(increase(torchrollout_head_labeled{_selector('direction')}[30s]))",
        f"sum(increase(torchrollout_head_labeled{_selector('direction')}[30s]))",
    ),
    (
        {"template": "mean-absolute-error", "head": "max_profit", "max": 2.5},
        f"sum(increase(torchrollout_head_abs_error_sum{_selector('max_profit')}[30s]))"
        f" / sum(increase(torchrollout_head_labeled{_selector('max_profit')}[30s]))",
        f"sum(increase(torchrollout_head_labeled{_selector('max_profit')}[30s]))",
    ),
    (  # without a head: the whole-model counters, as before
        {"template": "accuracy"},
        'sum(increase(torchrollout_correct{namespace="risk",revision="r1"}[30s]))'
        ' / sum(increase(torchrollout_labeled{namespace="risk",revision="r1"}[30s]))',
        'sum(increase(torchrollout_labeled{namespace="risk",revision="r1"}[30s]))',
    ),
]


@pytest.mark.parametrize(("check", "value", "samples"), QUERIES)
def test_head_checks_read_the_per_head_counters_by_their_head_label(
    check: dict[str, Any], value: str, samples: str
) -> None:
    [resolved] = deployment([check]).spec.canary.analysis.resolved_checks()
    queries = queries_for(resolved, TARGET)
    assert queries.value == value
    assert queries.samples == samples


REFUSED = [
    (
        "unknown head",
        [{"template": "accuracy"}, {"template": "accuracy", "head": "trend"}],
        HEADS_CONFIG,
        "canary.analysis.metrics[1].head: the model has no head 'trend'; its heads: "
        "direction, regime (classification); max_profit (regression)",
    ),
    (
        "accuracy on a regression head",
        [{"template": "accuracy", "head": "max_profit"}],
        HEADS_CONFIG,
        "canary.analysis.metrics[0].head: 'max_profit' is a regression head: accuracy judges "
        "a classification head (direction, regime); use mean-absolute-error",
    ),
    (
        "mean absolute error on a classification head",
        [{"template": "mean-absolute-error", "head": "regime", "max": 1}],
        HEADS_CONFIG,
        "canary.analysis.metrics[0].head: 'regime' is a classification head: "
        "mean-absolute-error judges a regression head (max_profit); use accuracy",
    ),
    (
        "a head of TorchScript weights not among their targets",
        [{"template": "accuracy", "head": "regime"}],
        {"targets": ["direction"]},
        "canary.analysis.metrics[0].head: the model has no head 'regime'; its heads: "
        "direction (classification)",
    ),
]


@pytest.mark.parametrize(
    ("metrics", "config", "message"),
    [pytest.param(m, c, msg, id=name) for name, m, c, msg in REFUSED],
)
def test_a_head_the_model_does_not_have_is_refused_naming_the_check(
    metrics: list[dict[str, Any]], config: dict[str, Any], message: str
) -> None:
    assert problems(metrics, config) == {"spec": message}


@pytest.mark.parametrize(
    "config",
    [{}, {"architecture": {"kind": "lstm", "num_classes": 3}}, {"custom": {"heads": 1}}],
    ids=["no-config", "single-output", "custom-handler"],
)
def test_heads_are_not_checked_when_the_config_declares_none(config: dict[str, Any]) -> None:
    # Nothing to check against: a custom handler may emit per-head metrics of its own.
    deployment([{"template": "accuracy", "head": "anything"}], config)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("max profit", "is not valid"),
        ("1st", "is not valid"),
        ('x"}', "is not valid"),  # it goes into a PromQL string
        ("a" * 64, "at most 63 characters"),
    ],
)
def test_a_head_is_an_identifier(head: str, message: str) -> None:
    found = problems([{"template": "accuracy", "head": head}], {})
    assert message in found["spec.canary.analysis.metrics[0].head"]


def test_model_heads_come_from_the_architecture_or_the_targets() -> None:
    expected = ModelHeads(("direction", "regime"), ("max_profit",))
    assert ModelHeads.of_config(HEADS_CONFIG) == expected
    assert ModelHeads.of_config({"targets": ["a", "b"]}) == ModelHeads(("a", "b"), ())
    only_values = {"architecture": {"regression_heads": {"y": 2}}, "targets": ["y"]}
    assert ModelHeads.of_config(only_values) == ModelHeads((), ("y",))
    assert ModelHeads.of_config({"architecture": {"heads": "direction"}}) is None


def test_the_crd_holds_the_head_field_and_its_rules() -> None:
    spec = render_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    analysis = spec["properties"]["canary"]["properties"]["analysis"]["properties"]["metrics"]
    check = analysis["items"]
    head = check["properties"]["head"]
    assert head["type"] == "string" and head["maxLength"] == 63
    assert head["pattern"] == "^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
    rules = {r["message"]: r for r in check["x-kubernetes-validations"]}
    rule = rules["head is for the templates accuracy and mean-absolute-error"]
    assert rule["fieldPath"] == ".head"
    assert "['accuracy', 'mean-absolute-error']" in rule["rule"]
    [unique] = analysis["x-kubernetes-validations"]
    assert "x.template + '-' + x.head" in unique["rule"]
