"""`torchrollout simulate` as users run it: the committed policy examples and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

POLICIES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def simulate(yaml_file: Path, ticks: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torchrollout",
            "simulate",
            "-f",
            str(yaml_file),
            "--ticks",
            str(ticks),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("case", "exit_code", "phases"),
    [
        ("good-canary", 0, ["Progressing", "Progressing", "Succeeded"]),
        ("bad-canary", 1, ["Progressing", "Progressing", "Progressing", "RolledBack"]),
        (
            "prometheus-outage",
            0,
            ["Progressing"] * 4 + ["Paused", "Progressing", "Succeeded"],
        ),
        ("instant-rollback", 0, ["Succeeded"]),
    ],
)
def test_policy_examples(case: str, exit_code: int, phases: list[str]) -> None:
    done = simulate(POLICIES / f"{case}.yaml", POLICIES / f"{case}.jsonl")
    assert done.returncode == exit_code, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["phase"] for line in lines] == phases
    for line in lines:
        assert {"t", "phase", "canaryWeight", "stepIndex", "verdicts", "reason"} <= set(line)


def test_bad_canary_says_which_check_failed_and_why() -> None:
    done = simulate(POLICIES / "bad-canary.yaml", POLICIES / "bad-canary.jsonl")
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["verdicts"]["accuracy"] == "Failed"
    assert "accuracy: 0.69 is below the minimum 0.85" in last["reason"]
    assert last["stableVersion"] == "2.0.0"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "ticks line 2: not JSON"),
        ('{"t": -1}', '"t" must be seconds'),
        ('{"t": 5, "canaryReady": "yes"}', '"canaryReady" must be true or false'),
        ('{"t": 5, "checks": {"accuracy": {"canary": "high"}}}', '"canary" must be a number'),
        ('{"t": 5, "check": {}}', "unknown keys ['check']"),
        ("[1, 2]", "each line must be a JSON object"),
    ],
)
def test_malformed_ticks_exit_2_naming_the_line(tmp_path: Path, line: str, message: str) -> None:
    ticks = tmp_path / "ticks.jsonl"
    ticks.write_text('{"t": 0}\n' + line + "\n")
    done = simulate(POLICIES / "good-canary.yaml", ticks)
    assert done.returncode == 2
    assert message in done.stderr


def test_invalid_resource_exits_2_naming_the_field(tmp_path: Path) -> None:
    broken = tmp_path / "md.yaml"
    text = (POLICIES / "good-canary.yaml").read_text().replace("steps: [10, 50]", "steps: [50, 10]")
    broken.write_text(text)
    done = simulate(broken, POLICIES / "good-canary.jsonl")
    assert done.returncode == 2
    assert "spec.canary.steps: steps must increase strictly" in done.stderr
    assert done.stdout == ""


def test_validate_reports_each_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: ModelDeployment\nmetadata: {name: x}\nspec: {}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchrollout",
            "validate",
            str(POLICIES / "good-canary.yaml"),
            str(broken),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "good-canary.yaml: ok, fraud-lstm version 2.0.0 revision" in done.stdout
    assert "spec.model: required field is missing" in done.stderr


def test_validate_warns_of_steps_whole_replicas_cannot_give(tmp_path: Path) -> None:
    coarse = tmp_path / "coarse.yaml"
    text = (POLICIES / "good-canary.yaml").read_text()
    document = yaml.safe_load(text)
    document["spec"]["runtime"] = {"replicas": 4}
    document["spec"]["canary"]["steps"] = [10, 50]
    coarse.write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [sys.executable, "-m", "torchrollout", "validate", str(coarse)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0  # a warning, not an error
    assert "step 10% gives 20% with the replicas router (1 canary pod beside 4 stable)" in (
        done.stderr
    )
    assert "6 would give 10% within 5 points" in done.stderr
    assert "step 50%" not in done.stderr  # 4 beside 4 is 50%
