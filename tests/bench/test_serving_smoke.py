"""bench/serving.py --smoke runs every code path of the serving bench against a real
TorchServe in seconds; its tables must name every measured column, so a silent break (a
mode or a figure that stopped being measured) fails here rather than in a long run by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLUMNS = [
    # per family and mode: ours, the no-op, the raw forward
    *("family", "conn", "inst", "pred/s", "p50", "p99", "cpu ms/req cli/fe/wk"),
    *("noop pred/s", "noop p50", "noop p99", "noop cpu", "ours/noop", "raw pred/s"),
    # per family: the goals
    *("min ours/noop", "p99@100/s", "noop p99@100/s", "handler p50", "best 1-inst pred/s"),
    *("noop best", ">=1000/s", "goals: "),
    # the sweep
    *("settings", "1 conn p50", "32 conn pred/s", "32 conn p50", "32 conn p99", "8x32 pred/s"),
    "best: ",
]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """The bench's TMPDIR: every path it makes is in there. Short, unlike tmp_path, since
    TorchServe puts its workers' Unix sockets (at most 107 bytes of path) below it."""
    folder = Path(tempfile.mkdtemp(prefix="trb-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_bench(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "serving.py"), *args],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


@pytest.mark.torchserve
def test_smoke_measures_every_column(short_tmp: Path) -> None:
    done = run_bench("--smoke", tmp=short_tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    missing = [c for c in COLUMNS if c not in done.stdout]
    assert not missing, f"columns missing from the output: {missing}\n{done.stdout}"
    # one row per mode (connections x instances)
    for conns, n in [(1, 1), (8, 1), (32, 1), (1, 32), (8, 32), (32, 32)]:
        assert re.search(rf"^mlp-policy \(policy\) +{conns} +{n} ", done.stdout, re.M), done.stdout
    assert "sweep 2/2" in done.stderr  # progress lines while it works


def processes_under(folder: Path) -> list[str]:
    """Command lines of live processes that name `folder` (TorchServe's carry its config)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in text:
            found.append(text)
    return found


@pytest.mark.torchserve
def test_a_server_that_does_not_start_is_one_line_and_leaves_no_process(short_tmp: Path) -> None:
    done = run_bench("--smoke", "--start-timeout", "0.5", tmp=short_tmp)
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("serving bench: TorchServe did not start: not ready in time"), last
    assert processes_under(short_tmp) == []
