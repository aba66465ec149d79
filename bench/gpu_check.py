"""The handlers on a GPU: answers checked against the CPU's, p50 latency per batch and device.

    .venv/bin/python bench/gpu_check.py [--repeats 30]

Per handler family (the trained examples of examples/models/make_models.py, the tiny models of
tests/support/models.py and the multi-output model with a regression head of the handler
tests), the archive is loaded through TorchServe's own loader in this process, as
tests/handlers/test_in_process.py does: on the CPU in fp32, then, with CUDA, on GPU 0 as a
worker TorchServe gave `gpu_id` 0, in fp32 and in bf16. Batches of 1 and 256 instances go
through the handler (parsing, forward, answers; metrics off). The GPU answers must match the
CPU's: the same classes (a near tie excepted), probabilities and numbers within 1e-3 (fp32) or
2e-2 (bf16). It prints the handler's p50 in milliseconds per family, batch and device, and
exits 1 if an answer disagrees. Without CUDA it runs the CPU half, says it needs a GPU and
exits 0. Everything is written to a temp dir.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.handlers.answers import differences  # noqa: E402
from tests.handlers.conftest import write_heads_model  # noqa: E402
from tests.support.fixtures import build, example, make_examples  # noqa: E402
from tests.support.models import (  # noqa: E402
    FAMILIES,
    keep_inductor_cache_in,
    make_input,
    write_family_models,
)

from torchrollout.archive.handlers import CONFIG_FILE  # noqa: E402
from torchrollout.archive.smoke import LoadedArchive, load_archive  # noqa: E402

BATCHES = (1, 256)
# name: (gpu_id TorchServe gives the worker, precision, tolerance against the CPU's answers)
PLACES = {
    "cpu fp32": (None, "fp32", 0.0),
    "gpu fp32": (0, "fp32", 1e-3),
    "gpu bf16": (0, "bf16", 2e-2),
}


def cases(root: Path) -> dict[str, tuple[Path, str, dict[str, Any], list[Any]]]:
    """Family -> (weights, handler, config, 256 instances)."""
    found = {}
    examples = make_examples(root / "examples")
    for family in ("sequence-classifier", "sequence-regressor", "lstm-autoencoder-anomaly"):
        ex = example(examples, family, "v1")
        instances = [{"input": line["input"]} for line in ex.traffic()[: max(BATCHES)]]
        found[family] = (ex.weights, family, ex.config, instances)
    models = write_family_models(root / "families")
    models["seq-heads"] = write_heads_model(root / "heads")
    for name, fm in models.items():
        kind = FAMILIES[name][2] if name in FAMILIES else {"steps": 10, "features": 3}
        gen = torch.Generator().manual_seed(7)
        instances = [make_input(kind, gen) for _ in range(max(BATCHES))]
        found[name] = (fm.weights, fm.handler, fm.config_data(), instances)
    return found


def load(archive: Path, folder: Path, gpu_id: int | None, precision: str) -> LoadedArchive:
    """The archive's handler as a worker TorchServe gave `gpu_id`, in `precision`."""
    loaded = load_archive(archive, folder, model_name=archive.stem)
    config_file = loaded.model_dir / CONFIG_FILE
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "precision": precision}))
    context = loaded.service.context
    context.system_properties["gpu_id"] = gpu_id
    loaded.service._entry_point.__self__.initialize(context)  # again, placed this time
    return loaded


def p50_ms(loaded: LoadedArchive, body: Any, repeats: int) -> float:
    """The handler's p50 for one request, its JSON encoded once (as a client would)."""
    from ts.context import RequestProcessor

    context = loaded.service.context
    rows = [{"body": json.dumps(body).encode()}]
    samples = []
    for k in range(repeats + 5):
        context.request_ids = {0: f"bench-{k}"}
        context.request_processor = [RequestProcessor({})]
        start = time.perf_counter()
        loaded.service._entry_point(rows, context)
        if k >= 5:  # warm-up: the first calls pick kernels and fill caches
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    places = {p: v for p, v in PLACES.items() if gpu or v[0] is None}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="torchrollout-gpu-check-") as tmp:
        root = Path(tmp)
        keep_inductor_cache_in(root / "inductor")
        with contextlib.redirect_stdout(sys.stderr):  # make_models prints its scores
            families = cases(root)
        header = f"{'family':26} {'batch':>5}" + "".join(f" {p + ' ms':>12}" for p in places)
        print(header)
        print("-" * len(header))
        for family, (weights, handler, config, instances) in families.items():
            archive = build(
                weights=weights,
                handler=handler,
                config={**config, "metrics": False},
                name=family.replace("-", "_"),
                version="1.0.0",
                output=root / "archives" / family,
            ).archive
            loaded = {
                place: load(archive, root / "load" / family / place.replace(" ", "-"), gpu_id, prec)
                for place, (gpu_id, prec, _) in places.items()
            }
            for batch in BATCHES:
                body = {"instances": instances[:batch]}
                answers = {place: one.handle([body])[0][1] for place, one in loaded.items()}
                for place, (_, _, tol) in places.items():
                    for line in differences(answers["cpu fp32"], answers[place], tol)[:3]:
                        problems.append(f"{family} batch {batch} {place}{line}")
                p50 = [p50_ms(one, body, args.repeats) for one in loaded.values()]
                print(f"{family:26} {batch:5}" + "".join(f" {v:12.3f}" for v in p50))
    for line in problems:
        print(f"DIFFERS: {line}")
    if not gpu:
        print("no CUDA GPU here: the CPU half ran; run this on a machine with a GPU")
        return 0
    verdict = "differ from" if problems else "match"
    print(f"GPU answers {verdict} the CPU's ({torch.cuda.get_device_name(0)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
