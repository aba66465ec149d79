"""Every command answers hostile input with a message and its documented exit code.

Each case runs an installed console script as users do, against one class of bad input
(tests/cli/hostile.py), and asserts: the documented exit code, no traceback, a message that
names the file (or server) and the problem, and an end within TIMEOUT_S. Cases that could
blow up run under a RLIMIT_AS of MEMORY_LIMIT, so a blow-up fails instead of swapping.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.hostile import make_hostile, nested

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
GOOD_MD = ROOT / "examples" / "policies" / "good-canary.yaml"
GOOD_TICKS = ROOT / "examples" / "policies" / "good-canary.jsonl"
REHEARSAL = ROOT / "examples" / "rehearsal"
TIMEOUT_S = 30
MEMORY_LIMIT = 2 * 1024**3
USAGE, FAILED = 2, 1

# What the message must say for each input class, besides the file name.
SAYS = {
    "missing": "No such file",
    "directory": "Is a directory",
    "empty": "empty",
    "not-utf8": "not UTF-8 text (byte 0xff at",
    "binary": "not UTF-8 text",
    "deep": "nested deeper than 64 levels",
    "deep-line": "nested too deeply",
    "several": "more than one YAML document",
    "bomb": "aliases expand",
    "huge": "MiB limit",
}


@dataclass(frozen=True)
class Case:
    """One command against one input class: `argv` with {file} and the fixture paths."""

    argv: tuple[str, ...]
    hostile: str
    exit_code: int
    bounded: bool = False  # run under the memory limit

    @property
    def id(self) -> str:
        before = self.argv[: self.argv.index("{file}")]
        words = [w for w in before[:2] if w != "torchrollout"]
        option = [before[-1]] if before[-1].startswith("-") else []
        return " ".join([*words, *option, self.hostile])


def cases(argv: tuple[str, ...], hostile: list[str], exit_code: int) -> list[Case]:
    return [Case(argv, h, exit_code, bounded=h in {"bomb", "huge"}) for h in hostile]


EVERY_CLASS = ["missing", "directory", "empty", "not-utf8", "binary", "deep", "several", "bomb"]
TABLE = [
    *cases(("torchrollout", "validate", "{file}"), [*EVERY_CLASS, "huge"], FAILED),
    *cases(("torchrollout", "render", "-f", "{file}"), ["not-utf8", "bomb", "huge"], USAGE),
    *cases(
        ("torchrollout", "simulate", "-f", "{file}", "--ticks", "{ticks}"),
        ["not-utf8", "several"],
        USAGE,
    ),
    *cases(
        ("torchrollout", "simulate", "--ticks", "{file}", "-f", "{md}"),
        ["missing", "not-utf8", "deep-line"],
        USAGE,
    ),
    *cases(
        (
            "torchrollout",
            "rehearse",
            "--stable",
            "{file}",
            "--canary",
            "{canary}",
            "--traffic",
            "{traffic}",
        ),
        ["not-utf8", "bomb"],
        USAGE,
    ),
    *cases(
        (
            "torchrollout",
            "rehearse",
            "--traffic",
            "{file}",
            "--stable",
            "{stable}",
            "--canary",
            "{canary}",
        ),
        ["missing", "not-utf8", "binary", "deep-line", "huge"],
        USAGE,
    ),
    *cases(
        (
            "torchrollout",
            "archive",
            "build",
            "--config",
            "{file}",
            "--source",
            "{file}",
            "--handler",
            "image-classifier",
            "--name",
            "m",
            "--version",
            "1",
            "--output",
            "{out}",
        ),
        ["missing", "directory", "not-utf8", "deep", "huge"],
        USAGE,
    ),
    *cases(
        ("kubectl-torchrollout", "status", "m", "--kubeconfig", "{file}"),
        ["missing", "not-utf8", "deep"],
        USAGE,
    ),
    *cases(
        ("torchrollout", "operator", "-n", "ns", "--metrics-port", "0", "--kubeconfig", "{file}"),
        ["missing", "not-utf8"],
        USAGE,
    ),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The hostile files by class, and good companions for the other arguments."""
    folder = tmp_path_factory.mktemp("hostile")
    hostile = make_hostile(folder)
    hostile["deep-line"] = folder / "deep-line.jsonl"
    hostile["deep-line"].write_text(nested(100_000) + "\n")
    good = folder / "good"
    good.mkdir()
    traffic = good / "traffic.jsonl"
    traffic.write_text('{"data": [1, 2, 3], "label": 1}\n')
    return {
        **hostile,
        "md": GOOD_MD,
        "ticks": GOOD_TICKS,
        "stable": REHEARSAL / "stable.yaml",
        "canary": REHEARSAL / "good.yaml",
        "traffic": traffic,
        "out": good,
    }


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(argv: list[str], *, bounded: bool = False) -> subprocess.CompletedProcess[str]:
    """An installed console script, with a wall-clock bound and maybe a memory bound."""
    limit: Callable[[], None] | None = _limit_memory if bounded else None
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        preexec_fn=limit,
        stdin=subprocess.DEVNULL,
    )


def assert_answered(done: subprocess.CompletedProcess[str], exit_code: int, *says: str) -> None:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == exit_code, output
    for text in says:
        assert text in output, output


@pytest.mark.parametrize("case", TABLE, ids=lambda case: case.id)
def test_hostile_input_is_answered(case: Case, paths: dict[str, Path]) -> None:
    """The documented exit code and a message naming the file and its problem."""
    file = paths[case.hostile]
    argv = [arg.format(file=file, **paths) for arg in case.argv]
    done = run(argv, bounded=case.bounded)
    assert_answered(done, case.exit_code, str(file), SAYS[case.hostile])


@pytest.fixture(scope="module")
def closed_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig whose API server is 127.0.0.1 on a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: ns}}]\n"
        "current-context: c\nusers: [{name: u, user: {token: t}}]\n"
    )
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["kubectl-torchrollout", "status", "m"],
        ["kubectl-torchrollout", "pause", "m"],
        ["torchrollout", "operator", "-n", "ns", "--metrics-port", "0"],
    ],
    ids=["kubectl-status", "kubectl-pause", "operator"],
)
def test_unreachable_api_server_is_answered(argv: list[str], closed_kubeconfig: Path) -> None:
    """Exit 2 at once with the server's address, not a retry loop or a traceback."""
    done = run([*argv, "--kubeconfig", str(closed_kubeconfig)])
    assert_answered(done, USAGE, "127.0.0.1", "cannot reach the API server")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["kubectl-torchrollout", "promote"], "Missing argument"),
        (["kubectl-torchrollout", "status", "m", "--bogus"], "No such option"),
        (["torchrollout", "operator"], "--all-namespaces"),
        (["torchrollout", "operator", "-A", "--timer-seconds", "0"], "--timer-seconds"),
        (["torchrollout", "operator", "-A", "--resync-seconds", "nan"], "--resync-seconds"),
        (["torchrollout", "operator", "-A", "--metrics-port", "70000"], "--metrics-port"),
        (["torchrollout", "operator", "-A", "--prometheus-url", "nowhere"], "--prometheus-url"),
        (["torchrollout", "validate"], "Missing argument"),
    ],
    ids=[
        "kubectl-no-name",
        "kubectl-unknown-option",
        "operator-no-namespace",
        "operator-timer-zero",
        "operator-resync-nan",
        "operator-port-out-of-range",
        "operator-prometheus-not-a-url",
        "validate-no-file",
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], says: str) -> None:
    assert_answered(run(argv), USAGE, says)


ARCHIVE_BUILD = ["torchrollout", "archive", "build", "--handler", "image-classifier"]


@pytest.mark.parametrize(
    ("option", "target", "says"),
    [
        pytest.param("--output", "{file}", "not a folder", id="output-is-a-file"),
        pytest.param("--output", "{file}/sub", "cannot create", id="output-under-a-file"),
        pytest.param("--output", "/dev/full", "not a folder", id="output-is-a-device"),
        pytest.param("--ca-bundle", "{file}", "no certificate in it", id="ca-bundle-not-pem"),
        pytest.param("--ca-bundle", "{file}.missing", "No such file", id="ca-bundle-missing"),
    ],
)
def test_unusable_places_are_refused_before_building(
    option: str, target: str, says: str, paths: dict[str, Path]
) -> None:
    """Output places and the CA bundle are checked before anything is fetched or built."""
    where = target.format(file=paths["not-utf8"], out=paths["out"])
    defaults = {"--output": str(paths["out"]), "--ca-bundle": None}
    options = {**defaults, option: where}
    argv = [*ARCHIVE_BUILD, "--source", str(paths["missing"]), "--name", "m", "--version", "1"]
    for name, value in options.items():
        argv += [name, value] if value is not None else []
    assert_answered(run(argv), USAGE, where, says)
