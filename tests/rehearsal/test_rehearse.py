"""`torchrollout rehearse` end to end: real archives, TorchServes and Prometheus.

The bundled examples (examples/rehearsal/) are copied beside freshly trained example
models, so their relative paths resolve as they do for `make demo`. Each run goes
through the real CLI in a subprocess with its own TMPDIR; afterwards no process may
have its command line or working directory in that folder, no port of the report may
still listen, and no work folder may be left. The traffic has a few bodies the model
refuses (counted as 4xx) and lines that are not JSON (skipped, with a warning).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.rehearsal.support import listening, processes_using
from tests.support.fixtures import make_examples
from tests.support.models import REPO

pytestmark = [pytest.mark.torchserve, pytest.mark.prometheus, pytest.mark.timeout(150)]

INTERVAL = 4.0
REFUSED = '{"input": [[1.0, 2.0]], "label": "up"}'  # two features where three are expected


@dataclass(frozen=True)
class Setup:
    root: Path
    examples: Path
    traffic: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: make setup installs Debian's package")
    root = tmp_path_factory.mktemp("rehearsal")
    models = make_examples(root / ".work" / "models")
    examples = root / "examples" / "rehearsal"
    shutil.copytree(REPO / "examples" / "rehearsal", examples)
    lines = (models / "sequence-classifier" / "traffic.jsonl").read_text().splitlines()
    mixed = []
    for number, line in enumerate(lines):
        mixed.append(line)
        if number % 25 == 0:
            mixed.append(REFUSED)
    mixed[10:10] = ["this is not json", "[1, 2, 3]"]
    traffic = root / "traffic.jsonl"
    traffic.write_text("\n".join(mixed) + "\n")
    return Setup(root, examples, traffic)


@dataclass
class Run:
    process: subprocess.Popen[str]
    tmpdir: Path
    out: Path
    lines: queue.Queue[str]

    def wait_for_line(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            seen.append(line)
            if text in line:
                return
        pytest.fail(f"{text!r} not printed; output so far:\n{''.join(seen)}")


@pytest.fixture
def tmpdir_short() -> Iterator[Path]:
    """A TMPDIR for the CLI: short, as TorchServe's worker sockets live under it."""
    folder = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def start(setup: Setup, tmp_path: Path, tmpdir: Path, canary: str, *extra: str) -> Run:
    out = tmp_path / "out"
    out.mkdir()
    command = [
        sys.executable,
        "-m",
        "torchrollout",
        "rehearse",
        "--stable",
        str(setup.examples / "stable.yaml"),
        "--canary",
        str(setup.examples / f"{canary}.yaml"),
        "--traffic",
        str(setup.traffic),
        "--interval-override",
        f"{INTERVAL:g}s",
        "--report",
        str(out / "report.json"),
        "--plot",
        str(out / "timeline.png"),
        *extra,
    ]
    env = {**os.environ, "TMPDIR": str(tmpdir), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return Run(process, tmpdir, out, lines)


def finish(run: Run, timeout: float = 120.0) -> tuple[int, str]:
    assert run.process.stderr is not None
    with run.process.stderr:
        stderr = run.process.stderr.read()  # until the process closes it, i.e. exits
    return run.process.wait(timeout=timeout), stderr


def assert_nothing_left(run: Run, report: dict[str, Any] | None = None) -> None:
    """Checked at once after exit: the CLI waits for its children before it exits."""
    assert processes_using(run.tmpdir) == []
    assert list(run.tmpdir.iterdir()) == [], "the work folder was not removed"
    if report is not None:
        servers = report["servers"]
        ports = [int(servers["prometheus"].rsplit(":", 1)[1])]
        ports += [p for ts in servers["torchserve"].values() for p in ts.values()]
        assert [p for p in ports if listening(p)] == []


@pytest.mark.parametrize(
    ("canary", "code", "result"), [("good", 0, "promoted"), ("bad", 1, "rolled-back")]
)
def test_a_rehearsal_promotes_a_good_canary_and_rolls_back_a_bad_one(
    setup: Setup, tmp_path: Path, tmpdir_short: Path, canary: str, code: int, result: str
) -> None:
    run = start(setup, tmp_path, tmpdir_short, canary)
    exit_code, stderr = finish(run)
    assert exit_code == code, stderr
    report = json.loads((run.out / "report.json").read_text())
    assert "skipped 2 lines that are not JSON objects" in stderr
    assert report["outcome"]["result"] == result
    assert report["canary"]["version"] == {"good": "2.0.0", "bad": "3.0.0"}[canary]
    assert report["policy"]["intervalSeconds"] == INTERVAL
    timings = report["timings"]
    analysed = [t for t in report["ticks"] if t["verdict"] is not None]
    if result == "promoted":
        assert [t["verdict"] for t in analysed] == ["Successful", "Successful"]
        assert timings["firstFailingVerdictSeconds"] is None
        assert 2 * INTERVAL <= timings["promotionSeconds"] <= 2 * INTERVAL + 1.5
        assert report["ticks"][-1]["canaryShare"] == 100
    else:
        assert [t["verdict"] for t in analysed] == ["Failed", "Failed"]
        failing = [c for c in analysed[0]["checks"] if c["verdict"] == "Failed"]
        assert [c["name"] for c in failing] == ["accuracy"]
        assert failing[0]["value"] < failing[0]["stableValue"] - 0.05  # maxDropVsStable
        assert INTERVAL <= timings["firstFailingVerdictSeconds"] <= INTERVAL + 0.5
        assert 2 * INTERVAL <= timings["rollbackSeconds"] <= 2 * INTERVAL + 1.5
        assert report["ticks"][-1]["phase"] == "RolledBack"
        assert report["ticks"][-1]["weight"] == 0
    # Refused bodies are the model's answer (4xx), not errors, and crash nothing.
    answered = report["traffic"]["byRevision"]
    assert sum(c.get("4xx", 0) for c in answered.values()) > 0
    assert sum(c.get("5xx", 0) + c.get("failed", 0) for c in answered.values()) == 0
    assert set(answered) == {report["stable"]["revision"], report["canary"]["revision"]}
    assert (run.out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_nothing_left(run, report)


@pytest.mark.parametrize("moment", ["starting TorchServe for version 2.0.0", "canary started"])
def test_ctrl_c_stops_everything_and_exits_130(
    setup: Setup, tmp_path: Path, tmpdir_short: Path, moment: str
) -> None:
    run = start(setup, tmp_path, tmpdir_short, "good")
    run.wait_for_line(moment)
    run.process.send_signal(signal.SIGINT)
    exit_code, stderr = finish(run, timeout=60)

    assert exit_code == 130, stderr
    assert "interrupted by SIGINT; everything stopped" in stderr
    assert "Traceback" not in stderr
    assert not (run.out / "report.json").exists()
    assert_nothing_left(run)
