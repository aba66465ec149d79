"""Session fixtures for the handler tests: example models, archives, one real TorchServe.

TorchServe starts once per session with every archive (`served`), on free loopback ports,
in a temp working dir; it is stopped with SIGTERM (its whole process group) at the end.
Besides the shared family models, `seq-heads` is a multi-output sequence model with two
classification heads and a regression head (`architecture.regression_heads`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.support.fixtures import build, example
from tests.support.models import (
    FamilyModel,
    build_model,
    make_input,
    write_family_models,
    write_formats,
)
from torchrollout.archive.handlers import metrics_config
from torchrollout.archive.torchserve import TorchServe

HEADS_CONFIG: dict[str, Any] = {
    "architecture": {
        "kind": "bilstm-attention",
        "input_size": 3,
        "hidden_size": 8,
        "heads": {"direction": 3, "regime": 2},
        "regression_heads": {"max_profit": 1},
    },
    "classes": {"direction": ["down", "flat", "up"], "regime": ["calm", "volatile"]},
}


def write_heads_model(folder: Path, config: dict[str, Any] = HEADS_CONFIG) -> FamilyModel:
    """Seeded random-init weights of a multi-output model (by default `HEADS_CONFIG`)."""
    torch.manual_seed(3000)
    model = build_model(config["architecture"]).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps(config))
    sample = make_input({"steps": 10, "features": 3}, torch.Generator().manual_seed(3001))
    handler = "sequence-classifier"
    return FamilyModel("seq-heads", handler, folder / "model.pt", folder / "config.json", sample)


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FamilyModel]:
    """The shared tiny family models plus `seq-heads`."""
    models = write_family_models(tmp_path_factory.mktemp("families"))
    models["seq-heads"] = write_heads_model(tmp_path_factory.mktemp("heads"))
    return models


@pytest.fixture(scope="session")
def format_files(examples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ex = example(examples_dir, "sequence-classifier", "v1")
    return write_formats(tmp_path_factory.mktemp("formats"), ex.weights, ex.config, steps=16)


@dataclass(frozen=True)
class Served:
    """What the session's TorchServe serves: model name -> (version), and its URLs."""

    server: TorchServe
    versions: dict[str, str]

    def predict(self, client: httpx.Client, model: str, body: object) -> httpx.Response:
        return client.post(f"{self.server.inference_url}/predictions/{model}", json=body)


@pytest.fixture(scope="session")
def archives(
    examples_dir: Path,
    family_models: dict[str, FamilyModel],
    format_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, str]]:
    """Every archive the session serves: name -> (.mar, version)."""
    out = tmp_path_factory.mktemp("archives")
    seq = example(examples_dir, "sequence-classifier", "v1")
    trained = [
        # name, example, version, batch size, max batch delay (ms)
        ("seqcls", seq, "1.0.0", None, None),
        ("seqcls-batched", example(examples_dir, "sequence-classifier", "v2"), "2.0.0", 8, 150),
        ("metrics-probe", seq, "1.0.0-probe", None, None),
        ("regressor", example(examples_dir, "sequence-regressor", "v1"), "1.0.0", None, None),
        ("anomaly", example(examples_dir, "lstm-autoencoder-anomaly", "v1"), "1.0.0", None, None),
    ]
    result: dict[str, tuple[Path, str]] = {}
    for name, ex, version, batch_size, delay in trained:
        built = build(
            weights=ex.weights,
            handler=ex.family,  # the example folders are named after their handlers
            config=ex.config,
            name=name,
            version=version,
            output=out,
            sample=ex.sample,
            batch_size=batch_size,
            max_batch_delay_ms=delay,
        )
        result[name] = (built.archive, version)
    for name, fm in family_models.items():
        built = build(
            weights=fm.weights,
            handler=fm.handler,
            config=fm.config_data(),
            name=name,
            version="0.1.0",
            output=out,
            sample=fm.sample,
        )
        result[name] = (built.archive, "0.1.0")
    built = build(
        weights=format_files["export"],
        handler="sequence-classifier",
        config={"classes": ["down", "flat", "up"], "input": {"shape": [16, 3]}},
        name="seqcls-pt2",
        version="1.0.0",
        output=out,
        sample=seq.sample,
    )
    result["seqcls-pt2"] = (built.archive, "1.0.0")
    return result


@pytest.fixture(scope="session")
def served(
    archives: dict[str, tuple[Path, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    server = TorchServe(
        models={name: mar for name, (mar, _) in archives.items()},
        workdir=tmp_path_factory.mktemp("torchserve"),
        metrics_config=metrics_config(),
    )
    server.start(timeout=180)
    try:
        yield Served(server, {name: version for name, (_, version) in archives.items()})
    finally:
        server.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as c:
        yield c
