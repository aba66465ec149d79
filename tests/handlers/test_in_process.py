"""Handler behaviour without a server: archives loaded through `ts` in this process.

Covers what the TorchServe tests do not need a server for: per-request statuses inside one
batch, label validation per family (multi-output labels may name some heads only), request
limits, metrics switched off by config, the architecture's head declarations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.fixtures import build, example
from tests.support.models import FamilyModel
from torchrollout.archive.smoke import LoadedArchive, load_archive


def _load(tmp: Path, name: str, **build_args: Any) -> LoadedArchive:
    built = build(name=name, version="1.0.0", output=tmp / "out", **build_args)
    return load_archive(built.archive, tmp / "load", model_name=name)


@pytest.fixture(scope="module")
def seqcls(examples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedArchive:
    ex = example(examples_dir, "sequence-classifier", "v1")
    return _load(
        tmp_path_factory.mktemp("seqcls"),
        "seqcls",
        weights=ex.weights,
        handler="sequence-classifier",
        config={**ex.config, "max_instances": 4},
    )


def test_one_batch_answers_each_request_with_its_own_status(
    seqcls: LoadedArchive, examples_dir: Path
) -> None:
    good = example(examples_dir, "sequence-classifier", "v1").traffic()[0]
    answers = seqcls.handle([good, {"input": [[1.0]]}, {"instances": [good, good]}])
    assert [status for status, _ in answers] == [200, 400, 200]
    assert answers[0][1]["prediction"] in ("down", "flat", "up")
    assert answers[1][1] == {
        "code": 400,
        "type": "InternalServerException",
        "message": "input: expected a nested list of shape [N, 3] of finite numbers (float32), "
        "got shape [1, 1]",
    }
    assert len(answers[2][1]["predictions"]) == 2


def test_a_lone_bad_request_raises_prediction_exception(seqcls: LoadedArchive) -> None:
    [(status, answer)] = seqcls.handle([{"input": [[1.0, 2.0, "x"]]}])
    assert status == 400
    assert answer["message"].startswith("input: expected a nested list")


@pytest.mark.parametrize(
    ("bad", "value", "field"),
    [
        ([], None, None),
        ([0], float("nan"), "instances[0].input"),
        ([2], float("inf"), "instances[2].input"),
        ([1, 3], float("-inf"), "instances[1].input"),
    ],
)
def test_the_first_instance_holding_nan_or_infinity_is_named(
    seqcls: LoadedArchive,
    examples_dir: Path,
    bad: list[int],
    value: float | None,
    field: str | None,
) -> None:
    good = example(examples_dir, "sequence-classifier", "v1").traffic()[0]
    instances = [{"input": [list(row) for row in good["input"]]} for _ in range(4)]
    for k in bad:
        instances[k]["input"][-1][0] = value
    [(status, answer)] = seqcls.handle([{"instances": instances}])
    if field is None:
        assert status == 200 and len(answer["predictions"]) == 4
    else:
        assert (status, answer["message"]) == (
            400,
            f"{field}: NaN or Infinity is not allowed; expected finite numbers",
        )


def test_too_many_instances_in_one_request(seqcls: LoadedArchive, examples_dir: Path) -> None:
    good = example(examples_dir, "sequence-classifier", "v1").traffic()[0]
    [(status, answer)] = seqcls.handle([{"instances": [good] * 5}])
    assert status == 400
    assert answer["message"] == "instances: 5 instances; at most 4 per request"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"input": 5},
            "input: expected a nested list of shape [N, 3] of finite numbers (float32), "
            "got a number",
        ),
        ({"input": 0.5}, "got a number"),
        ({"input": "x" * 10_000}, "got a string"),
        ({"instances": [7]}, 'instances[0]: expected an object with "input", got a number'),
        ({"instances": [[1.0]]}, 'instances[0]: expected an object with "input", got a list'),
        # A huge label is quoted cut short: the message goes back in the answer and the log.
        ({"label": "z" * 100_000}, "got 'zzzzzzzzzz"),
    ],
)
def test_refusals_name_what_came_and_quote_it_short(
    seqcls: LoadedArchive, examples_dir: Path, body: dict[str, Any], message: str
) -> None:
    good = example(examples_dir, "sequence-classifier", "v1").traffic()[0]
    [(status, answer)] = seqcls.handle([{"input": good["input"], **body}])
    assert status == 400
    assert message in answer["message"]
    assert len(answer["message"]) < 300


LABELS = [
    ("seq-multi", {"direction": "up", "regime": "calm"}, 200),
    ("seq-multi", {"direction": 2, "regime": 1}, 200),
    ("seq-multi", {"direction": "up"}, 200),  # a head left out is not counted
    ("seq-multi", {"direction": "up", "regime": None}, 200),
    ("seq-multi", {}, "label: expected an object with a label for some of"),
    ("seq-multi", "up", "label: expected an object"),
    ("seq-multi", {"direction": "up", "regime": "stormy"}, "label.regime: expected a class"),
    ("seq-multi", {"direction": "up", "trend": 1}, "label: unknown head 'trend'"),
    ("seq-heads", {"direction": "up", "regime": "calm", "max_profit": 11.0}, 200),
    ("seq-heads", {"max_profit": -3}, 200),
    ("seq-heads", {"max_profit": "high"}, "label.max_profit: expected a finite number"),
    ("seq-heads", {"max_profit": [1.0, 2.0]}, "label.max_profit: expected a finite number"),
    ("seq-heads", {"sideways": 1}, "the model's heads: ['direction', 'regime', 'max_profit']"),
    ("policy", "buy", 200),
    ("policy", 7, "label: expected a class index in [0, 3]"),
    ("policy", True, "label: expected a class index"),
]


@pytest.mark.parametrize(("family", "label", "expected"), LABELS)
def test_labels_are_validated_per_family(
    family_models: dict[str, FamilyModel],
    tmp_path: Path,
    family: str,
    label: Any,
    expected: int | str,
) -> None:
    fm = family_models[family]
    loaded = _load(
        tmp_path, family, weights=fm.weights, handler=fm.handler, config=fm.config_data()
    )
    [(status, answer)] = loaded.handle([{**fm.sample, "label": label}])
    if expected == 200:
        assert status == 200, answer
    else:
        assert status == 400
        assert str(expected) in answer["message"]


@pytest.mark.parametrize(
    ("family", "label", "message"),
    [
        ("sequence-regressor", [1.0, 2.0], "label: expected a list of 4 finite numbers"),
        ("sequence-regressor", [1.0, 2.0, None, 3.0], "label: expected a list of 4"),
        ("lstm-autoencoder-anomaly", "yes", "label: expected true/false"),
    ],
)
def test_regression_and_anomaly_labels(
    examples_dir: Path, tmp_path: Path, family: str, label: Any, message: str
) -> None:
    ex = example(examples_dir, family, "v1")
    loaded = _load(tmp_path, "m", weights=ex.weights, handler=family, config=ex.config)
    [(status, answer)] = loaded.handle([{"input": ex.sample["input"], "label": label}])
    assert status == 400
    assert message in answer["message"]


def test_metrics_can_be_switched_off_by_config(examples_dir: Path, tmp_path: Path) -> None:
    ex = example(examples_dir, "sequence-classifier", "v1")
    loaded = _load(
        tmp_path,
        "quiet",
        weights=ex.weights,
        handler="sequence-classifier",
        config={**ex.config, "metrics": False},
    )
    handler = loaded.service._entry_point.__self__
    assert handler.metrics.enabled is False
    [(status, _)] = loaded.handle([ex.sample])
    assert status == 200


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ({"heads": {"direction": 3}, "regression_heads": {"direction": 1}}, "either a class"),
        ({"regression_heads": {"max profit": 1}}, "head name 'max profit' must match"),
        ({"regression_heads": {"max_profit": 0}}, "regression_heads.max_profit: expected a pos"),
        ({"regression_heads": {}}, "architecture.regression_heads: expected a non-empty map"),
    ],
)
def test_head_declarations_are_checked_when_the_model_is_built(
    architecture: dict[str, Any], message: str
) -> None:
    from tests.support.models import build_model

    with pytest.raises(ValueError, match=message):
        build_model({"kind": "bilstm-attention", "input_size": 3, **architecture})


def test_a_regression_only_model_answers_numbers(tmp_path: Path) -> None:
    from tests.handlers.conftest import HEADS_CONFIG, write_heads_model

    arch = {**HEADS_CONFIG["architecture"], "regression_heads": {"max_profit": 1, "band": 2}}
    del arch["heads"]
    fm = write_heads_model(tmp_path / "m", {"architecture": arch})
    loaded = _load(tmp_path, "reg", weights=fm.weights, handler=fm.handler, config=fm.config_data())
    [(status, answer)] = loaded.handle([{**fm.sample, "label": {"band": [1.0, 2.0]}}])
    assert status == 200, answer
    outputs = answer["outputs"]
    assert set(outputs) == {"max_profit", "band"}
    assert isinstance(outputs["max_profit"]["prediction"], float)
    assert len(outputs["band"]["prediction"]) == 2
