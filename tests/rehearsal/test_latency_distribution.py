"""A canary 20% slower at every percentile: within every threshold, failed by latency-distribution.

Real archives, TorchServes and Prometheus through the `rehearse` CLI, as in test_rehearse.py.
Both revisions serve the same trained weights with a custom handler that waits, per batch, a
latency drawn in turn from a log-normal law's quantiles (median 60 ms, spread 0.2); the
canary's config scales it by 1.2, so every percentile of its latency is 20% higher. Its p99
(about 115 ms; up to 250 ms as read from the histogram's buckets) stays below `maxMs: 500`,
its accuracy and error rate match the stable's; only the comparison of the two latency
histograms fails it, and two failed ticks roll it back.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rehearsal.support import write_yaml
from tests.rehearsal.test_rehearse import Setup, assert_nothing_left, finish, start
from tests.support.fixtures import make_examples

pytestmark = [pytest.mark.torchserve, pytest.mark.prometheus, pytest.mark.timeout(150)]

PACED_HANDLER = '''
"""The sequence classifier, plus a wait per batch: config pace.medianMs x exp(spread x z),
z running through 20 quantiles of the standard normal law in a fixed order."""
import math
import statistics
import time

from torchrollout_base import ClassifierHandler

QUANTILES = [statistics.NormalDist().inv_cdf((7 * k % 20 + 0.5) / 20) for k in range(20)]


class PacedClassifier(ClassifierHandler):
    calls = 0

    def forward(self, batch):
        pace = self.config["pace"]
        z = QUANTILES[self.calls % len(QUANTILES)]
        self.calls += 1
        time.sleep(pace["medianMs"] * math.exp(pace["spread"] * z) / 1000)
        return super().forward(batch)
'''

POLICY: dict[str, Any] = {
    "steps": [25, 50],
    "interval": "5s",
    "analysis": {
        "metrics": [
            {"template": "accuracy", "min": 0.85, "maxDropVsStable": 0.05},
            {"template": "latency-p99", "maxMs": 500},
            {"template": "error-rate", "max": 0.05},
            {"template": "latency-distribution"},
        ],
        "minSamples": 20,
        "failureLimit": 2,
    },
}


def paced(version: str, weights: Path, handler: Path, median_ms: float) -> dict[str, Any]:
    return {
        "apiVersion": "torchrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "market-trend", "namespace": "rehearsal"},
        "spec": {
            "model": {
                "version": version,
                "source": {"uri": str(weights)},
                "handler": str(handler),
                "config": {
                    "architecture": {
                        "kind": "lstm",
                        "input_size": 3,
                        "hidden_size": 16,
                        "num_classes": 3,
                    },
                    "classes": ["down", "flat", "up"],
                    "input": {"shape": [None, 3]},
                    "pace": {"medianMs": median_ms, "spread": 0.2},
                },
            },
            "canary": POLICY,
        },
    }


@pytest.fixture
def tmpdir_short() -> Iterator[Path]:
    """A TMPDIR for the CLI: short, as TorchServe's worker sockets live under it."""
    folder = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: make setup installs Debian's package")
    root = tmp_path_factory.mktemp("slower")
    models = make_examples(root / "models")
    handler = root / "paced_classifier.py"
    handler.write_text(PACED_HANDLER)
    weights = models / "sequence-classifier" / "v1" / "model.pt"
    examples = root / "examples"
    write_yaml(examples / "stable.yaml", paced("1.0.0", weights, handler, 60.0))
    write_yaml(examples / "slower.yaml", paced("1.1.0", weights, handler, 72.0))
    traffic = models / "sequence-classifier" / "traffic.jsonl"
    return Setup(root, examples, traffic)


def test_a_canary_slower_everywhere_passes_the_thresholds_but_not_the_distribution_check(
    setup: Setup, tmp_path: Path, tmpdir_short: Path
) -> None:
    run = start(setup, tmp_path, tmpdir_short, "slower", "--rate", "60")
    exit_code, stderr = finish(run)
    assert exit_code == 1, stderr
    report = json.loads((run.out / "report.json").read_text())
    assert report["outcome"]["result"] == "rolled-back"
    analysed = [t for t in report["ticks"] if t["verdict"] is not None]
    assert [t["verdict"] for t in analysed] == ["Failed", "Failed"]
    for tick in analysed:
        checks = {c["name"]: c for c in tick["checks"]}
        verdicts = {name: c["verdict"] for name, c in checks.items()}
        assert verdicts == {
            "accuracy": "Successful",
            "latency-p99": "Successful",
            "error-rate": "Successful",
            "latency-distribution": "Failed",
        }, [c["message"] for c in tick["checks"]]
        distribution = checks["latency-distribution"]
        assert distribution["message"].startswith("canary slower than stable: p")
        assert ">= 0.56" in distribution["message"]
        assert distribution["value"] > distribution["stableValue"]  # the medians, in ms
        assert checks["latency-p99"]["value"] < 500
    assert "latency-distribution: canary slower than stable" in report["outcome"]["message"]
    assert_nothing_left(run, report)
