"""Rehearsal inputs, checked before any server starts: YAMLs, traffic, the command line.

The command-line cases run the real CLI in a subprocess with inputs that fail fast (a
missing prometheus binary stops it before anything is built), so they need no server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.rehearsal.support import deployment, write_yaml
from torchrollout.errors import SpecError
from torchrollout.rehearsal import RehearsalError, load_pair
from torchrollout.rehearsal.resources import load_revision
from torchrollout.rehearsal.traffic import LoadGenerator, Route, Router, read_traffic

pytestmark = pytest.mark.timeout(60)


# -- the YAMLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("models/v1/model.pt", "{base}/models/v1/model.pt"),
        ("../models/v1/model.pt", "{parent}/models/v1/model.pt"),
        ("file://models/v1/model.pt", "{base}/models/v1/model.pt"),
        ("file:///srv/model.pt", "/srv/model.pt"),
        ("/srv/model.pt", "/srv/model.pt"),
    ],
)
def test_local_sources_are_relative_to_the_yaml(
    tmp_path: Path, written: str, expected: str
) -> None:
    path = write_yaml(tmp_path / "md" / "stable.yaml", deployment("1.0.0", source=written))
    uri = load_revision(path).spec.model.source.uri
    wanted = expected.format(base=tmp_path / "md", parent=tmp_path)
    assert uri in {wanted, f"file://{wanted}"}


def test_remote_sources_are_left_alone(tmp_path: Path) -> None:
    source = "https://models.example/v1/model.pt"
    path = write_yaml(tmp_path / "stable.yaml", deployment("1.0.0", source=source))
    assert load_revision(path).spec.model.source.uri == source


def test_the_interval_override_is_validated_like_the_field(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "canary.yaml", deployment("2.0.0"))
    assert load_revision(path, interval_override="3s").spec.canary.interval_seconds == 3
    with pytest.raises(SpecError, match=r"spec\.canary\.interval"):
        load_revision(path, interval_override="3 seconds")


@pytest.mark.parametrize(
    ("canary", "message"),
    [
        (deployment("2.0.0", name="other"), "differ in metadata"),
        (deployment("1.0.0"), "same revision"),
    ],
)
def test_the_two_yamls_must_be_one_resource_at_two_revisions(
    tmp_path: Path, canary: dict[str, object], message: str
) -> None:
    stable = write_yaml(tmp_path / "stable.yaml", deployment("1.0.0"))
    with pytest.raises(RehearsalError, match=message):
        load_pair(stable, write_yaml(tmp_path / "canary.yaml", canary))


# -- the traffic file ---------------------------------------------------------------------


def test_malformed_traffic_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_text(
        '# a comment\n\n{"input": [[1, 2, 3]], "label": "up"}\nnot json\n[1, 2]\n'
        '{"input": "the model will refuse this"}\n'
    )
    traffic = read_traffic(path)
    assert (len(traffic.bodies), traffic.labeled, traffic.skipped) == (2, 1, 2)
    assert traffic.first_problem.startswith("line 4: not JSON")


def test_a_traffic_file_without_bodies_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_text("nope\n")
    with pytest.raises(RehearsalError, match=r"no request bodies.*line 1"):
        read_traffic(path)


# -- the load generator -------------------------------------------------------------------


class _Answers(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200 if "label" in body else 400)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    """Two loopback HTTP servers playing the stable and canary TorchServes."""
    running = [ThreadingHTTPServer(("127.0.0.1", 0), _Answers) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever) for s in running]
    for thread in threads:
        thread.start()
    yield {
        r: f"http://127.0.0.1:{s.server_address[1]}"
        for r, s in zip(("old", "new"), running, strict=True)
    }
    for server in running:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join()


def poll(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not done within {timeout:g}s"
        time.sleep(0.05)


@pytest.mark.parametrize(("weight", "to_new"), [(0, False), (100, True)])
def test_requests_follow_the_weight_and_refusals_count_as_4xx(
    tmp_path: Path, servers: dict[str, str], weight: int, to_new: bool
) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_text('{"input": [[1]], "label": 1}\n{"input": [[1]]}\n')
    router = Router(servers, Route("old", "new", weight))
    generator = LoadGenerator(read_traffic(path), router, model_name="m", rate=200, threads=2)
    generator.start()
    try:
        poll(lambda: sum(generator.stats.totals().values()) >= 40)
    finally:
        generator.stop()
    served = generator.stats.by_revision
    assert set(served) == {"new" if to_new else "old"}
    counts = next(iter(served.values()))
    assert counts["2xx"] > 0 and counts["4xx"] > 0 and abs(counts["2xx"] - counts["4xx"]) <= 2


def test_a_mirror_copies_requests_to_the_canary_which_answers_nobody(
    tmp_path: Path, servers: dict[str, str]
) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_text('{"input": [[1]], "label": 1}\n')
    router = Router(servers, Route("old", "new", weight=0, mirror=100))
    generator = LoadGenerator(read_traffic(path), router, model_name="m", rate=200, threads=2)
    generator.start()
    try:
        poll(lambda: generator.stats.by_revision.get("new", Counter())["2xx"] >= 20)
    finally:
        generator.stop()
    served = generator.stats.by_revision
    # Every request reached the stable; each was copied to the canary once.
    assert abs(served["old"]["2xx"] - served["new"]["2xx"]) <= 2


def test_an_unreachable_server_is_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_text('{"input": [[1]], "label": 1}\n')
    router = Router({"old": "http://127.0.0.1:9"}, Route("old"))
    generator = LoadGenerator(read_traffic(path), router, model_name="m", rate=50, threads=1)
    generator.start()
    try:
        poll(lambda: generator.stats.totals()["failed"] > 0)
    finally:
        generator.stop()
    assert set(generator.stats.totals()) == {"failed"}


# -- the command line ---------------------------------------------------------------------


def rehearse(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torchrollout", "rehearse", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def good_inputs(tmp_path: Path) -> list[str | Path]:
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text('{"input": [[1, 2, 3]], "label": "up"}\n')
    return [
        "--stable",
        write_yaml(tmp_path / "stable.yaml", deployment("1.0.0")),
        "--canary",
        write_yaml(tmp_path / "canary.yaml", deployment("2.0.0")),
        "--traffic",
        traffic,
    ]


def test_an_invalid_model_deployment_exits_2_naming_the_field(
    tmp_path: Path, good_inputs: list[str | Path]
) -> None:
    document = deployment("2.0.0", canary={"steps": [50, 10]})
    good_inputs[3] = write_yaml(tmp_path / "broken.yaml", document)
    done = rehearse(*good_inputs)
    assert done.returncode == 2, done.stderr
    assert "spec.canary.steps: steps must increase strictly" in done.stderr
    assert "broken.yaml" in done.stderr


def test_a_missing_prometheus_exits_2_saying_how_to_install_it(
    good_inputs: list[str | Path],
) -> None:
    done = rehearse(*good_inputs, "--prometheus-bin", "/nonexistent")
    assert done.returncode == 2, done.stderr
    assert "'/nonexistent' was not found" in done.stderr
    assert "apt-get install -y --no-install-recommends prometheus" in done.stderr


def test_skipped_traffic_lines_are_warned_about(
    tmp_path: Path, good_inputs: list[str | Path]
) -> None:
    traffic = Path(good_inputs[5])
    traffic.write_text(traffic.read_text() + "oops\n{broken\n")
    done = rehearse(*good_inputs, "--prometheus-bin", "/nonexistent")
    assert done.returncode == 2
    assert "warning:" in done.stderr
    assert "skipped 2 lines that are not JSON objects (first: line 2: not JSON" in done.stderr


def test_a_report_into_a_missing_folder_is_refused_before_starting(
    tmp_path: Path, good_inputs: list[str | Path]
) -> None:
    done = rehearse(*good_inputs, "--report", tmp_path / "no" / "such" / "report.json")
    assert done.returncode == 2
    assert "--report" in done.stderr and "does not exist" in done.stderr


def test_a_report_path_that_is_a_folder_is_refused_before_starting(
    tmp_path: Path, good_inputs: list[str | Path]
) -> None:
    done = rehearse(*good_inputs, "--report", tmp_path)
    assert done.returncode == 2
    assert f"--report {tmp_path}: is a folder; give a file name" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_work_folder_too_deep_for_torchserve_sockets_is_refused_at_once(
    tmp_path: Path, good_inputs: list[str | Path]
) -> None:
    deep = tmp_path / ("a-long-folder-name-" * 4)
    done = rehearse(*good_inputs, "--workdir", deep)
    assert done.returncode == 2
    assert "too deep for TorchServe's worker sockets" in done.stderr
    assert not deep.exists()
