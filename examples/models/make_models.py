"""Train the tiny, deterministic example models rehearsal and tests use.

    python examples/models/make_models.py --output DIR

For three families (sequence classifier, sequence regressor, LSTM autoencoder) it trains on
seeded synthetic data, in a few seconds on a CPU: a stable v1, a better-or-equal v2 (more
training), and a clearly worse v3 (mislabeled data, or barely trained with a bad
threshold). It writes, per family:

    DIR/<family>/traffic.jsonl       labeled held-out requests, one request body per line
    DIR/<family>/v<N>/model.pt       state_dict weights (load with weights_only=True)
    DIR/<family>/v<N>/config.json    handler config (architecture, classes, threshold...)
    DIR/<family>/v<N>/sample.json    a sample request body for the archive smoke test
    DIR/accuracy.json                every version's measured score on its family's traffic

Models are generated, never committed. The architectures are those in model-handlers/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "model-handlers"))
from torchrollout_models import build_model

SEED = 20261123
STEPS, FEATURES, HORIZON = 16, 3, 4
CLASSES = ["down", "flat", "up"]


def _trend_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy series whose feature-0 slope decides the class: down / flat / up."""
    labels = torch.randint(0, 3, (n,), generator=gen)
    slope = (labels.float() - 1.0) * 0.06
    t = torch.arange(STEPS).float()
    x = torch.randn(n, STEPS, FEATURES, generator=gen) * 0.4
    x[:, :, 0] += slope[:, None] * t[None, :]
    return x, labels


def _bandwidth_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Daily-cycle bandwidth with noise: a window of 24 steps -> the next HORIZON steps."""
    phase = torch.rand(n, 1, generator=gen) * 6.283
    level = 1.0 + torch.rand(n, 1, generator=gen)
    t = torch.arange(24 + HORIZON).float()[None, :]
    series = level + 0.5 * torch.sin(phase + t * 0.4)
    series = series + torch.randn(series.shape, generator=gen) * 0.03
    return series[:, :24, None], series[:, 24:]


def _telemetry_data(n: int, gen: torch.Generator, anomaly_rate: float) -> tuple[Any, Any]:
    """Smooth two-channel telemetry; anomalies carry a burst of large noise."""
    phase = torch.rand(n, 1, 1, generator=gen) * 6.283
    t = torch.arange(STEPS).float()[None, :, None]
    x = torch.cat([torch.sin(phase + t * 0.5), torch.cos(phase + t * 0.3)], dim=2) * 0.8
    labels = torch.rand(n, generator=gen) < anomaly_rate
    burst = torch.randn(n, STEPS, 2, generator=gen) * 1.2
    mask = torch.zeros(n, STEPS, 1)
    start = torch.randint(0, STEPS - 4, (n,), generator=gen)
    for k in range(n):
        if labels[k]:
            mask[k, start[k] : start[k] + 4] = 1.0
    return x + burst * mask, labels


def _train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    seed: int,
) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def _write_version(
    folder: Path, model: nn.Module, config: dict[str, Any], sample: dict[str, Any]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "sample.json").write_text(json.dumps(sample) + "\n")


def _write_traffic(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _r(x: torch.Tensor) -> Any:
    return [[round(v, 5) for v in row] for row in x.tolist()]


def make_classifier(out: Path) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(SEED)
    x, y = _trend_data(1500, gen)
    tx, ty = _trend_data(300, gen)
    arch = {"kind": "lstm", "input_size": FEATURES, "hidden_size": 16, "num_classes": 3}
    config = {"architecture": arch, "classes": CLASSES, "input": {"shape": [None, FEATURES]}}
    # v3 learnt from mislabeled data: every "up" example was labeled "flat".
    mislabeled = torch.where(y == 2, torch.ones_like(y), y)
    plans = {"v1": (y, 80), "v2": (y, 250), "v3": (mislabeled, 80)}
    family = out / "sequence-classifier"
    scores = {}
    for version, (labels, steps) in plans.items():
        torch.manual_seed(SEED)
        loss = nn.functional.cross_entropy
        model = _train(build_model(arch), x, labels, loss, steps=steps, seed=SEED)
        with torch.inference_mode():
            accuracy = float((model(tx).argmax(-1) == ty).float().mean())
        scores[version] = {"accuracy": round(accuracy, 4), "train_steps": steps}
        _write_version(family / version, model, config, {"input": _r(tx[0]), "label": CLASSES[0]})
    traffic = [{"input": _r(tx[k]), "label": CLASSES[int(ty[k])]} for k in range(len(tx))]
    _write_traffic(family / "traffic.jsonl", traffic)
    return scores


def make_regressor(out: Path) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(SEED + 1)
    x, y = _bandwidth_data(1500, gen)
    tx, ty = _bandwidth_data(300, gen)
    arch = {"kind": "gru-regressor", "input_size": 1, "hidden_size": 16, "horizon": HORIZON}
    config = {"architecture": arch, "input": {"shape": [None, 1]}}
    family = out / "sequence-regressor"
    scores = {}
    for version, steps in {"v1": 150, "v2": 400, "v3": 10}.items():
        torch.manual_seed(SEED)
        model = _train(build_model(arch), x, y, nn.functional.mse_loss, steps=steps, seed=SEED)
        with torch.inference_mode():
            mae = float((model(tx) - ty).abs().mean())
        scores[version] = {"mae": round(mae, 4), "train_steps": steps}
        sample = {"input": _r(tx[0]), "label": [round(v, 5) for v in ty[0].tolist()]}
        _write_version(family / version, model, config, sample)
    traffic = [
        {"input": _r(tx[k]), "label": [round(v, 5) for v in ty[k].tolist()]} for k in range(300)
    ]
    _write_traffic(family / "traffic.jsonl", traffic)
    return scores


def make_autoencoder(out: Path) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(SEED + 2)
    x, _ = _telemetry_data(1500, gen, anomaly_rate=0.0)
    tx, ty = _telemetry_data(300, gen, anomaly_rate=0.2)
    arch = {"kind": "lstm-autoencoder", "input_size": 2, "hidden_size": 16}
    family = out / "lstm-autoencoder-anomaly"
    scores = {}
    # v3 is barely trained and its threshold flags a third of normal windows.
    plans = {"v1": (150, 0.99, 1.5), "v2": (300, 0.99, 1.5), "v3": (5, 0.65, 1.0)}
    for version, (steps, quantile, margin) in plans.items():
        torch.manual_seed(SEED)
        model = _train(build_model(arch), x, x, nn.functional.mse_loss, steps=steps, seed=SEED)
        with torch.inference_mode():
            train_err = ((model(x) - x) ** 2).mean(dim=(1, 2))
            threshold = float(torch.quantile(train_err, quantile)) * margin
            flags = ((model(tx) - tx) ** 2).mean(dim=(1, 2)) > threshold
        accuracy = float((flags == ty).float().mean())
        scores[version] = {
            "accuracy": round(accuracy, 4),
            "threshold": round(threshold, 6),
            "train_steps": steps,
        }
        config = {"architecture": arch, "threshold": threshold, "input": {"shape": [STEPS, 2]}}
        _write_version(family / version, model, config, {"input": _r(tx[0]), "label": bool(ty[0])})
    _write_traffic(
        family / "traffic.jsonl",
        [{"input": _r(tx[k]), "label": bool(ty[k])} for k in range(len(tx))],
    )
    return scores


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    # One thread: the same numbers on every machine, and faster for models this small.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        scores = {
            "sequence-classifier": make_classifier(out),
            "sequence-regressor": make_regressor(out),
            "lstm-autoencoder-anomaly": make_autoencoder(out),
        }
    finally:
        torch.set_num_threads(threads)
    (out / "accuracy.json").write_text(json.dumps(scores, indent=2) + "\n")
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps({"output": str(out), "seconds": seconds, **scores}))
    return scores


if __name__ == "__main__":
    main()
