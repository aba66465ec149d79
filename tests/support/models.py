"""Tiny models for every handler family, written as the archive builder consumes them.

`write_family_models(dir)` saves, per family, seeded random-init state_dict weights, the
handler config and a known input; `raw_model(config, weights)` rebuilds the same network in
this process so a test can compare TorchServe's answer with the plain forward pass.
`write_formats(dir)` adds TorchScript and torch.export (.pt2) copies of one classifier.
Trained example models come from `examples/models/make_models.py` instead.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
HANDLERS_DIR = REPO / "model-handlers"
if str(HANDLERS_DIR) not in sys.path:
    sys.path.insert(0, str(HANDLERS_DIR))

from torchrollout_models import build_model  # noqa: E402


@dataclass(frozen=True)
class FamilyModel:
    """One tiny model on disk: the handler to serve it with and a known input."""

    name: str
    handler: str
    weights: Path
    config: Path
    sample: dict[str, Any]

    def config_data(self) -> dict[str, Any]:
        return json.loads(self.config.read_text())  # type: ignore[no-any-return]


def _series(gen: torch.Generator, steps: int, features: int) -> list[list[float]]:
    return [
        [round(v, 4) for v in row] for row in torch.randn(steps, features, generator=gen).tolist()
    ]


def _graph(gen: torch.Generator, nodes: int, features: int) -> dict[str, Any]:
    adjacency = (torch.rand(nodes, nodes, generator=gen) > 0.5).float()
    adjacency = ((adjacency + adjacency.T) > 0).float().fill_diagonal_(0)
    return {"nodes": _series(gen, nodes, features), "adjacency": adjacency.tolist()}


FAMILIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # name: (handler, config, input kind)
    "seq-multi": (
        "sequence-classifier",
        {
            "architecture": {
                "kind": "bilstm-attention",
                "input_size": 3,
                "hidden_size": 8,
                "heads": {"direction": 3, "regime": 2},
            },
            "classes": {"direction": ["down", "flat", "up"], "regime": ["calm", "volatile"]},
        },
        {"steps": 10, "features": 3},
    ),
    "seq-gru": (
        "sequence-classifier",
        {"architecture": {"kind": "gru", "input_size": 3, "hidden_size": 8, "num_classes": 4}},
        {"steps": 12, "features": 3},
    ),
    "transformer": (
        "transformer-classifier",
        {
            "architecture": {
                "kind": "transformer",
                "input_size": 4,
                "d_model": 16,
                "nhead": 2,
                "num_layers": 1,
                "dim_feedforward": 32,
                "max_len": 32,
                "num_classes": 3,
            }
        },
        {"steps": 8, "features": 4},
    ),
    "cnn1d": (
        "cnn1d-classifier",
        {"architecture": {"kind": "cnn1d", "input_size": 2, "channels": [8, 8], "num_classes": 3}},
        {"steps": 20, "features": 2},
    ),
    "gcn": (
        "graph-classifier",
        {"architecture": {"kind": "gcn", "input_size": 5, "hidden_size": 8, "num_classes": 2}},
        {"graph": 6, "features": 5},
    ),
    "policy": (
        "mlp-policy",
        {
            "architecture": {
                "kind": "mlp-policy",
                "input_size": 6,
                "hidden_sizes": [16],
                "num_actions": 4,
            },
            "classes": ["hold", "buy", "sell", "close"],
        },
        {"vector": 6},
    ),
}


def make_input(kind: dict[str, Any], gen: torch.Generator) -> dict[str, Any]:
    if "graph" in kind:
        return _graph(gen, kind["graph"], kind["features"])
    if "vector" in kind:
        return {"input": [round(v, 4) for v in torch.randn(kind["vector"], generator=gen).tolist()]}
    return {"input": _series(gen, kind["steps"], kind["features"])}


def write_family_models(folder: Path) -> dict[str, FamilyModel]:
    """Seeded random-init models for the families the example models do not cover."""
    out: dict[str, FamilyModel] = {}
    for k, (name, (handler, config, kind)) in enumerate(sorted(FAMILIES.items())):
        torch.manual_seed(1000 + k)
        model = build_model(config["architecture"]).eval()
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), target / "model.pt")
        (target / "config.json").write_text(json.dumps(config))
        sample = make_input(kind, torch.Generator().manual_seed(2000 + k))
        out[name] = FamilyModel(name, handler, target / "model.pt", target / "config.json", sample)
    return out


def raw_model(config: dict[str, Any], weights: Path) -> torch.nn.Module:
    """The network a state_dict archive serves, rebuilt here for reference answers."""
    model = build_model(config["architecture"])
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def raw_forward(model: torch.nn.Module, instance: dict[str, Any]) -> Any:
    """Forward one instance (as a request carries it) through the raw model, batch of one."""
    with torch.inference_mode():
        if "nodes" in instance:
            return model(
                torch.tensor([instance["nodes"]], dtype=torch.float32),
                torch.tensor([instance["adjacency"]], dtype=torch.float32),
            )
        return model(torch.tensor([instance["input"]], dtype=torch.float32))


def keep_inductor_cache_in(folder: Path) -> None:
    """torch.export and .pt2 loading create a torchinductor_<user> cache in the temp dir when
    inductor is first imported; tests point it into their own temp folder instead."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def write_formats(
    folder: Path, weights: Path, config: dict[str, Any], steps: int
) -> dict[str, Path]:
    """TorchScript (traced) and torch.export copies of a state_dict sequence classifier."""
    model = raw_model(config, weights)
    features = int(config["architecture"]["input_size"])
    example = torch.randn(2, steps, features)
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation; export's LSTM notes
        traced = torch.jit.trace(model, example)
        traced.save(str(folder / "model.torchscript.pt"))
        program = torch.export.export(
            model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)
        )
        torch.export.save(program, str(folder / "model.pt2"))
    return {"torchscript": folder / "model.torchscript.pt", "export": folder / "model.pt2"}
