"""Latency of each handler family through a real TorchServe vs the raw forward pass.

    .venv/bin/python bench/handlers.py [--requests 400] [--warmup 50]

Builds an archive per family (the trained examples from examples/models/make_models.py and
the tiny models of tests/support/models.py), serves them all from one TorchServe on loopback,
then per family sends sequential requests (one keep-alive httpx client, the same input each
time) and times the raw model's forward on that input in this process (batch of one, one
thread, inference mode). It prints p50/p99 of both, their ratio, the milliseconds
TorchServe + handler add, and the handler's own p50 in this process (no TorchServe: parsing,
validation, forward, answer), which splits the added time into handler and server shares.
The metrics' cost is measured separately: the same classifier archived twice, with
`"metrics": false` in one config, requests interleaved between them.
Run by hand; not part of the test suite. Everything is written to a temp dir.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.fixtures import build, example, make_examples  # noqa: E402
from tests.support.models import (  # noqa: E402
    keep_inductor_cache_in,
    raw_forward,
    raw_model,
    write_family_models,
)

from torchrollout.archive.handlers import metrics_config  # noqa: E402
from torchrollout.archive.smoke import load_archive  # noqa: E402
from torchrollout.archive.torchserve import TorchServe  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def time_calls(call: Callable[[], object], count: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)  # what the handler does in the worker (torch_threads default 1)
    with tempfile.TemporaryDirectory(prefix="torchrollout-bench-") as tmp:
        root = Path(tmp)
        keep_inductor_cache_in(root / "inductor")
        examples = make_examples(root / "examples")
        cases: dict[str, tuple[Path, str, dict[str, Any], Any]] = {}
        for family in ("sequence-classifier", "sequence-regressor", "lstm-autoencoder-anomaly"):
            ex = example(examples, family, "v1")
            cases[family] = (ex.weights, family, ex.config, {"input": ex.sample["input"]})
        for name, fm in write_family_models(root / "families").items():
            cases[f"{fm.handler} ({name})"] = (fm.weights, fm.handler, fm.config_data(), fm.sample)
        seq = cases["sequence-classifier"]
        cases["metrics-off"] = (seq[0], seq[1], {**seq[2], "metrics": False}, seq[3])

        archives: dict[str, Path] = {}
        names: dict[str, str] = {}
        for k, (label, (weights, handler, config, _)) in enumerate(cases.items()):
            names[label] = f"m{k}"
            archives[names[label]] = build(
                weights=weights,
                handler=handler,
                config=config,
                name=names[label],
                version="1.0.0",
                output=root / "archives",
            ).archive
        print(f"starting TorchServe with {len(archives)} models...", file=sys.stderr)
        with (
            TorchServe(
                models=archives, workdir=root / "ts", metrics_config=metrics_config()
            ) as server,
            httpx.Client(timeout=30.0) as client,
        ):
            for label, (_, _, _, instance) in cases.items():  # every worker warm first
                for _ in range(args.warmup):
                    client.post(f"{server.inference_url}/predictions/{names[label]}", json=instance)
            header = (
                f"{'family':38} {'TS p50':>7} {'TS p99':>7} {'raw p50':>7} {'raw p99':>7}"
                f" {'ratio':>6} {'added p50':>9} {'handler p50':>11}"
            )
            print(header)
            print("-" * len(header))
            for label, (weights, _, config, instance) in cases.items():
                if label == "metrics-off":
                    continue
                url = f"{server.inference_url}/predictions/{names[label]}"

                def served(url: str = url, body: Any = instance) -> None:
                    response = client.post(url, json=body)
                    response.raise_for_status()

                model = raw_model(config, weights)

                def raw(model: torch.nn.Module = model, body: Any = instance) -> None:
                    raw_forward(model, body)

                # The handler alone, in this process: parsing, validation, forward, answer,
                # metric lines (formatted, then dropped by the logger level).
                loaded = load_archive(
                    archives[names[label]], root / "load" / label, model_name=names[label]
                )

                def handler(loaded: Any = loaded, body: Any = instance) -> None:
                    loaded.handle([body])

                ts50, ts99 = percentiles(time_calls(served, args.requests, args.warmup))
                raw50, raw99 = percentiles(time_calls(raw, args.requests, args.warmup))
                handler50, _ = percentiles(time_calls(handler, args.requests, args.warmup))
                print(
                    f"{label:38} {ts50:7.3f} {ts99:7.3f} {raw50:7.3f} {raw99:7.3f}"
                    f" {ts50 / raw50:6.1f} {ts50 - raw50:9.3f} {handler50:11.3f}"
                )
            on_url = f"{server.inference_url}/predictions/{names['sequence-classifier']}"
            off_url = f"{server.inference_url}/predictions/{names['metrics-off']}"
            labeled = {**seq[3], "label": "flat"}
            on: list[float] = []
            off: list[float] = []
            for k in range(args.warmup + args.requests * 2):
                target, sink = (on_url, on) if k % 2 else (off_url, off)
                start = time.perf_counter()
                client.post(target, json=labeled).raise_for_status()
                if k >= args.warmup:
                    sink.append((time.perf_counter() - start) * 1000)
            on50, on99 = percentiles(on)
            off50, off99 = percentiles(off)
            print()
            print("metrics cost (sequence-classifier, labeled requests, interleaved):")
            print(f"  metrics on : p50 {on50:.3f} ms  p99 {on99:.3f} ms")
            print(f"  metrics off: p50 {off50:.3f} ms  p99 {off99:.3f} ms")
            print(f"  added by metrics at p50: {on50 - off50:.3f} ms")


if __name__ == "__main__":
    main()
