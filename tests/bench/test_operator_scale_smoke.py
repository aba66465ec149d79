"""bench/operator_scale.py works end to end on the real control plane (tiny counts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "operator_scale.py"


@pytest.mark.kube
@pytest.mark.timeout(300)
def test_the_fleet_benchmark_measures_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"],
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = done.stdout
    for column in ("all Succeeded", "RSS/resource", "CPU/resource", "idle CPU", "reaction"):
        assert column in table
    assert "ratio 4 vs 2: time per resource" in table
    assert "idle CPU" in table.splitlines()[-1]
