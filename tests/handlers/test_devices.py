"""Where a handler runs its model, and in which precision, checked on the CPU.

`place` is table-tested with CUDA faked present or absent; the rest loads real archives in
this process: bf16 autocast on the CPU answers like fp32 for every family, fp16 falls back
to fp32 with one log line, the CPU fallback is logged once per load, and an unknown
precision stops the load. The GPU half is `bench/gpu_check.py`, run on a CUDA machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.handlers.answers import differences
from tests.support.fixtures import build, example
from tests.support.models import FAMILIES, FamilyModel, make_input
from torchrollout.archive.errors import LoadError
from torchrollout.archive.smoke import LoadedArchive, load_archive

# Importable once tests.support.models has put model-handlers/ on sys.path (above).
import torchrollout_runtime as runtime  # isort: skip

BF16_TOLERANCE = 2e-2  # bf16 keeps 8 bits of mantissa: about 2 decimal digits
PLACES = [
    # id, CUDA present, gpu_id, config, device, autocast dtype, fragments of the log lines
    ("no-cuda", False, None, {}, "cpu", None, ["running on the CPU: no CUDA"]),
    ("no-cuda-gpu-id", False, 0, {}, "cpu", None, ["running on the CPU: no CUDA"]),
    ("no-gpu-id", True, None, {}, "cpu", None, ["TorchServe assigned no gpu_id"]),
    ("gpu", True, 1, {}, "cuda:1", None, []),
    ("gpu-bf16", True, 0, {"precision": "bf16"}, "cuda:0", torch.bfloat16, []),
    ("gpu-fp16", True, 0, {"precision": "fp16"}, "cuda:0", torch.float16, []),
    ("cpu-bf16", False, None, {"precision": "bf16"}, "cpu", torch.bfloat16, ["no CUDA"]),
    (
        "cpu-fp16",
        False,
        None,
        {"precision": "fp16"},
        "cpu",
        None,
        ["no CUDA", "precision fp16 is not supported on the CPU: running the forward in fp32"],
    ),
    (
        "quantized",
        True,
        0,
        {"quantize": "dynamic-int8"},
        "cpu",
        None,
        ["quantize dynamic-int8 has CPU kernels only"],
    ),
]


@pytest.mark.parametrize(
    ("cuda", "gpu_id", "config", "device", "dtype", "notes"),
    [pytest.param(*row[1:], id=row[0]) for row in PLACES],
)
def test_placement_follows_cuda_and_the_gpu_torchserve_assigned(
    monkeypatch: pytest.MonkeyPatch,
    cuda: bool,
    gpu_id: int | None,
    config: dict[str, Any],
    device: str,
    dtype: torch.dtype | None,
    notes: list[str],
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    placement = runtime.place(config, gpu_id)
    assert placement.device == torch.device(device)
    assert placement.autocast == dtype
    assert len(placement.notes) == len(notes)
    for note, fragment in zip(placement.notes, notes, strict=True):
        assert fragment in note


@pytest.mark.parametrize("precision", ["int8", "FP32", 16, None])
def test_an_unknown_precision_names_the_key_and_the_allowed_values(precision: Any) -> None:
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, fp16, got"):
        runtime.place({"precision": precision}, None)


def test_an_unknown_precision_stops_the_load(examples_dir: Path, tmp_path: Path) -> None:
    ex = example(examples_dir, "sequence-classifier", "v1")
    with pytest.raises(LoadError, match="precision: expected one of fp32, bf16, fp16, got 'fp8'"):
        _load(tmp_path, ex.weights, ex.family, {**ex.config, "precision": "fp8"})


def test_outputs_come_back_to_the_cpu_in_float32() -> None:
    output = {"a": torch.ones(2, dtype=torch.bfloat16), "b": [torch.zeros(1, dtype=torch.half)]}
    host = runtime.to_host(output)
    assert host["a"].dtype == torch.float32 and host["b"][0].dtype == torch.float32
    assert host["a"].device.type == "cpu"


def _archive(tmp: Path, weights: Path, handler: str, config: dict[str, Any]) -> Path:
    """A fresh archive (its build loads it once too, for the smoke test)."""
    name = f"m{len(list(tmp.glob('m*')))}"
    output = tmp / name
    return build(
        weights=weights, handler=handler, config=config, name=name, version="1", output=output
    ).archive


def _load(tmp: Path, weights: Path, handler: str, config: dict[str, Any]) -> LoadedArchive:
    archive = _archive(tmp, weights, handler, config)
    return load_archive(archive, tmp / "load" / archive.stem, model_name=archive.stem)


Case = tuple[Path, str, dict[str, Any], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def cases(examples_dir: Path, family_models: dict[str, FamilyModel]) -> dict[str, Case]:
    """Per family: weights, handler, config and 64 requests' instances (no labels)."""
    found: dict[str, Case] = {}
    for family in ("sequence-classifier", "sequence-regressor", "lstm-autoencoder-anomaly"):
        ex = example(examples_dir, family, "v1")
        bodies = [{"input": line["input"]} for line in ex.traffic()[:64]]
        found[family] = (ex.weights, family, ex.config, bodies)
    for name, fm in family_models.items():
        kind = FAMILIES[name][2] if name in FAMILIES else {"steps": 10, "features": 3}
        gen = torch.Generator().manual_seed(7)
        bodies = [make_input(kind, gen) for _ in range(64)]
        found[name] = (fm.weights, fm.handler, fm.config_data(), bodies)
    return found


def _decisions(answer: dict[str, Any]) -> Any:
    """The discrete part of an answer: its class or anomaly flag (per head if multi-output)."""
    if "outputs" in answer:
        return {head: _decisions(part) for head, part in answer["outputs"].items()}
    if "anomaly" in answer:
        return answer["anomaly"]
    return answer["prediction"] if "probabilities" in answer else None


TRAINED = ["sequence-classifier", "sequence-regressor", "lstm-autoencoder-anomaly"]
RANDOM_INIT = ["seq-multi", "seq-heads", "seq-gru", "transformer", "cnn1d", "gcn", "policy"]


@pytest.mark.parametrize("name", TRAINED + RANDOM_INIT)
def test_bf16_on_the_cpu_answers_like_fp32(
    cases: dict[str, Case], tmp_path: Path, name: str
) -> None:
    weights, handler, config, instances = cases[name]
    answers = {}
    for precision in ("fp32", "bf16"):
        loaded = _load(tmp_path, weights, handler, {**config, "precision": precision})
        [(status, answer)] = loaded.handle([{"instances": instances}])
        assert status == 200, answer
        answers[precision] = answer["predictions"]
    assert answers["bf16"] != answers["fp32"], "bf16 changed nothing: was autocast on?"
    # Probabilities and numbers within the tolerance; classes equal except at near ties,
    # which random-init models have plenty of (a GCN's two classes at 0.5 +- 0.001).
    assert differences(answers["fp32"], answers["bf16"], BF16_TOLERANCE) == []
    if name in TRAINED:
        # Trained models are far from ties: every class and flag is the same, none excused.
        assert list(map(_decisions, answers["bf16"])) == list(map(_decisions, answers["fp32"]))


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_bf16_autocast_runs_torchscript_and_export_weights_too(
    examples_dir: Path, format_files: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    ex = example(examples_dir, "sequence-classifier", "v1")
    bodies = [{"instances": [{"input": line["input"]} for line in ex.traffic()[:32]]}]
    config = {"classes": ["down", "flat", "up"], "input": {"shape": [16, 3]}}
    answers = {}
    for precision in ("fp32", "bf16"):
        loaded = _load(tmp_path, format_files[fmt], ex.family, {**config, "precision": precision})
        [(status, answer)] = loaded.handle(bodies)
        assert status == 200, answer
        answers[precision] = answer["predictions"]
    assert answers["bf16"] != answers["fp32"]
    assert differences(answers["fp32"], answers["bf16"], BF16_TOLERANCE) == []
    assert list(map(_decisions, answers["bf16"])) == list(map(_decisions, answers["fp32"]))


def _lines(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


def test_the_cpu_fallback_is_logged_once_naming_why(
    examples_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ex = example(examples_dir, "sequence-classifier", "v1")
    archive = _archive(tmp_path, ex.weights, ex.family, ex.config)
    caplog.set_level(logging.INFO, logger="torchrollout_base")
    caplog.clear()  # the build's own smoke-test load logged too
    loaded = load_archive(archive, tmp_path / "load", model_name="cpu")
    for _ in range(3):
        assert loaded.handle([ex.sample])[0][0] == 200
    why = "no CUDA" if not torch.cuda.is_available() else "no gpu_id"
    [line] = _lines(caplog, "running on the CPU")
    assert line.startswith("torchrollout model cpu: running on the CPU: ") and why in line


def test_fp16_on_the_cpu_runs_fp32_and_says_so_once(
    examples_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ex = example(examples_dir, "sequence-classifier", "v1")
    bodies = [{"instances": [{"input": line["input"]} for line in ex.traffic()[:16]]}]
    fp32 = _load(tmp_path, ex.weights, ex.family, ex.config).handle(bodies)
    archive = _archive(tmp_path, ex.weights, ex.family, {**ex.config, "precision": "fp16"})
    caplog.set_level(logging.INFO, logger="torchrollout_base")
    caplog.clear()  # the build's own smoke-test load logged too
    fp16 = load_archive(archive, tmp_path / "load", model_name="fp16")
    assert fp16.handle(bodies) == fp32
    assert fp16.handle(bodies) == fp32
    assert len(_lines(caplog, "precision fp16 is not supported on the CPU")) == 1
