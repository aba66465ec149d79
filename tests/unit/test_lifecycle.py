"""The canary lifecycle, scenario by scenario, through the engine's replay.

Each case is a resource, a list of ticks and the (phase, weight) expected after each
tick. Base policy (builders.BASE): steps [10, 50], interval 30s, deadline 120s,
failureLimit 2, inconclusiveLimit 3, consecutiveErrorLimit 3, stable 1.0.0, canary 2.0.0.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import BAD_ACCURACY, ERRORS, GOOD, resource, run, status_after, tick

NO_DATA: dict[str, Any] = {}
LOW_SAMPLES = {
    "accuracy": {"canary": 0.92, "stable": 0.91, "samples": 3},
    "latency-p99": {"canary": 40.0, "stable": 38.0, "samples": 3},
}
BASELINE_DROP = {  # absolute min 0.85 passes, but 0.06 below stable
    **GOOD,
    "accuracy": {"canary": 0.88, "stable": 0.94, "samples": 200},
}
SLOWER_THAN_STABLE = {**GOOD, "latency-p99": {"canary": 120.0, "stable": 40.0, "samples": 400}}
PAUSE_ON_ERROR = {"spec": {"canary": {"analysis": {"onError": "pause"}}}}
PAUSE_ON_INCONCLUSIVE = {"spec": {"canary": {"analysis": {"onInconclusive": "pause"}}}}
LIMIT_3 = {"spec": {"canary": {"analysis": {"failureLimit": 3}}, "model": {}}}
PROMOTE = {"torchrollout.io/promote": "1"}
ABORT = {"torchrollout.io/abort": "1"}
RETRY = {"torchrollout.io/retry": "1"}

SCENARIOS: list[tuple[str, dict[str, Any], list[dict[str, Any]], list[tuple[str, int]]]] = [
    (
        "first deploy goes straight to stable, no canary",
        {"status": None},
        [tick(0, stableReady=False), tick(5)],
        [("Building", 0), ("Succeeded", 0)],
    ),
    (
        "first deploy never ready fails at the deadline",
        {"status": None},
        [tick(0, stableReady=False), tick(60, stableReady=False), tick(121, stableReady=False)],
        [("Building", 0), ("Building", 0), ("Failed", 0)],
    ),
    (
        "good canary walks the steps and is promoted",
        {},
        [tick(0), tick(30, GOOD), tick(60, GOOD)],
        [("Progressing", 10), ("Progressing", 50), ("Succeeded", 0)],
    ),
    (
        "bad accuracy rolls back at failureLimit",
        {},
        [tick(0), tick(30, BAD_ACCURACY), tick(60, BAD_ACCURACY)],
        [("Progressing", 10), ("Progressing", 10), ("RolledBack", 0)],
    ),
    (
        "failed then successful alternation below the limit still promotes",
        LIMIT_3,
        [tick(0), tick(30, BAD_ACCURACY), tick(60, GOOD), tick(90, BAD_ACCURACY), tick(120, GOOD)],
        [
            ("Progressing", 10),
            ("Progressing", 10),
            ("Progressing", 50),
            ("Progressing", 50),
            ("Succeeded", 0),
        ],
    ),
    (
        "failures count in total, not in a row",
        {},
        [tick(0), tick(30, BAD_ACCURACY), tick(60, GOOD), tick(90, BAD_ACCURACY)],
        [("Progressing", 10), ("Progressing", 10), ("Progressing", 50), ("RolledBack", 0)],
    ),
    (
        "no data for many ticks is inconclusive, then rolls back",
        {},
        [tick(0), tick(30, NO_DATA), tick(60, NO_DATA), tick(90, NO_DATA)],
        [("Progressing", 10), ("Progressing", 10), ("Progressing", 10), ("RolledBack", 0)],
    ),
    (
        "too few samples is inconclusive, and pauses when the policy says so",
        PAUSE_ON_INCONCLUSIVE,
        [tick(0), tick(30, LOW_SAMPLES), tick(60, LOW_SAMPLES), tick(90, LOW_SAMPLES)],
        [("Progressing", 10), ("Progressing", 10), ("Progressing", 10), ("Paused", 10)],
    ),
    (
        "Prometheus errors then recovery: the streak resets and the canary promotes",
        {},
        [
            tick(0),
            tick(30, ERRORS),
            tick(60, ERRORS),
            tick(90, GOOD),
            tick(120, ERRORS),
            tick(150, GOOD),
        ],
        [
            ("Progressing", 10),
            ("Progressing", 10),
            ("Progressing", 10),
            ("Progressing", 50),
            ("Progressing", 50),
            ("Succeeded", 0),
        ],
    ),
    (
        "errors in a row up to the limit roll back",
        {},
        [tick(0), tick(30, ERRORS), tick(60, ERRORS), tick(90, ERRORS)],
        [("Progressing", 10), ("Progressing", 10), ("Progressing", 10), ("RolledBack", 0)],
    ),
    (
        "errors in a row pause when onError is pause; retry resumes",
        PAUSE_ON_ERROR,
        [
            tick(0),
            tick(30, ERRORS),
            tick(60, ERRORS),
            tick(90, ERRORS),
            tick(100, GOOD),
            tick(110, annotations=RETRY),
            tick(140, GOOD),
        ],
        [
            ("Progressing", 10),
            ("Progressing", 10),
            ("Progressing", 10),
            ("Paused", 10),
            ("Paused", 10),
            ("Progressing", 10),
            ("Progressing", 50),
        ],
    ),
    (
        "a drop against the stable baseline fails though the absolute minimum passes",
        {},
        [tick(0), tick(30, BASELINE_DROP), tick(60, BASELINE_DROP)],
        [("Progressing", 10), ("Progressing", 10), ("RolledBack", 0)],
    ),
    (
        "latency over stable x ratio fails though under the absolute maximum",
        {},
        [tick(0), tick(30, SLOWER_THAN_STABLE), tick(60, SLOWER_THAN_STABLE)],
        [("Progressing", 10), ("Progressing", 10), ("RolledBack", 0)],
    ),
    (
        "a canary never ready rolls back at the progress deadline",
        {},
        [tick(0, canaryReady=False), tick(60, canaryReady=False), tick(121, canaryReady=False)],
        [("Progressing", 0), ("Progressing", 0), ("RolledBack", 0)],
    ),
    (
        "a canary that stops being ready mid-analysis fails its ticks",
        {},
        [tick(0), tick(30, GOOD, canaryReady=False), tick(60, GOOD, canaryReady=False)],
        [("Progressing", 10), ("Progressing", 10), ("RolledBack", 0)],
    ),
    (
        "manual promote skips the remaining steps",
        {},
        [tick(0), tick(10, annotations=PROMOTE)],
        [("Progressing", 10), ("Succeeded", 0)],
    ),
    (
        "manual abort rolls back at once",
        {},
        [tick(0), tick(30, GOOD), tick(40, annotations=ABORT)],
        [("Progressing", 10), ("Progressing", 50), ("RolledBack", 0)],
    ),
    (
        "retry after a rollback starts the canary again from the first step",
        {},
        [
            tick(0),
            tick(10, annotations=ABORT),
            tick(20, annotations=RETRY),
            tick(50, GOOD),
            tick(80, GOOD),
        ],
        [
            ("Progressing", 10),
            ("RolledBack", 0),
            ("Progressing", 10),
            ("Progressing", 50),
            ("Succeeded", 0),
        ],
    ),
    (
        "a new version waits while spec.paused is true",
        {"spec": {"paused": True}},
        [tick(0, BAD_ACCURACY), tick(30, BAD_ACCURACY), tick(60, BAD_ACCURACY)],
        [("Paused", 0), ("Paused", 0), ("Paused", 0)],
    ),
    (
        "a rolled-back canary stays rolled back while the spec names it",
        {},
        [tick(0), tick(30, BAD_ACCURACY), tick(60, BAD_ACCURACY), tick(90, GOOD), tick(120, GOOD)],
        [
            ("Progressing", 10),
            ("Progressing", 10),
            ("RolledBack", 0),
            ("RolledBack", 0),
            ("RolledBack", 0),
        ],
    ),
]


@pytest.mark.parametrize(
    ("spec", "ticks", "expected"),
    [pytest.param(s, t, e, id=name) for name, s, t, e in SCENARIOS],
)
def test_scenario(
    spec: dict[str, Any], ticks: list[dict[str, Any]], expected: list[tuple[str, int]]
) -> None:
    out = run(resource(**spec), ticks)
    assert [(o["phase"], o["canaryWeight"]) for o in out] == expected


def test_promotion_records_history_and_moves_stable() -> None:
    out = run(resource(), [tick(0), tick(30, GOOD), tick(60, GOOD)])
    last = out[-1]
    assert last["stableVersion"] == "2.0.0"
    assert last["canaryVersion"] is None
    assert last["transitions"] == ["Promoting", "Succeeded"]


def test_rollback_passes_through_rolling_back_and_names_the_check() -> None:
    out = run(resource(), [tick(0), tick(30, BAD_ACCURACY), tick(60, BAD_ACCURACY)])
    last = out[-1]
    assert last["transitions"] == ["RollingBack", "RolledBack"]
    assert last["verdicts"] == {"accuracy": "Failed", "latency-p99": "Successful"}
    assert "accuracy: 0.7 is below the minimum 0.85" in last["reason"]
    assert last["stableVersion"] == "1.0.0"


def test_pause_holds_the_step_and_resume_starts_a_fresh_interval() -> None:
    running = status_after(resource(), [tick(0)])
    paused = resource(spec={"paused": True}, status=running)
    out = run(paused, [tick(30, BAD_ACCURACY), tick(60, BAD_ACCURACY), tick(90, BAD_ACCURACY)])
    assert [(o["phase"], o["canaryWeight"], o["failed"]) for o in out] == [("Paused", 10, 0)] * 3
    resumed = resource(status=status_after(paused, [tick(30)]))
    out = run(resumed, [tick(40), tick(50, GOOD), tick(70, GOOD)])
    # resumed at 40: the tick at 50 comes too early and is ignored; the one at 70 counts
    assert [(o["phase"], o["canaryWeight"]) for o in out] == [
        ("Progressing", 10),
        ("Progressing", 10),
        ("Progressing", 50),
    ]
    assert any("next analysis is due" in note for note in out[1]["ignored"])


def test_a_new_version_supersedes_a_running_canary() -> None:
    running = status_after(resource(), [tick(0), tick(30, GOOD)])
    newer = resource(spec={"model": {"version": "3.0.0"}}, status=running)
    out = run(newer, [tick(40), tick(70, GOOD), tick(100, GOOD)])
    assert out[0]["canaryVersion"] == "3.0.0"
    assert (out[0]["phase"], out[0]["canaryWeight"], out[0]["stepIndex"]) == ("Progressing", 10, 0)
    assert any(e.startswith("Superseded: canary 2.0.0") for e in out[0]["events"])
    assert out[-1]["phase"] == "Succeeded"
    assert out[-1]["stableVersion"] == "3.0.0"


def test_reverting_to_a_version_in_the_rollback_window_skips_analysis() -> None:
    history = [
        {"version": "0.9.0", "promotedAt": "2025-12-01T00:00:00Z"},
        {"version": "1.0.0", "promotedAt": "2025-12-10T00:00:00Z"},
    ]
    revert = resource(spec={"model": {"version": "0.9.0"}}, status={"history": history})
    out = run(revert, [tick(0)])
    assert out[0]["phase"] == "Succeeded"
    assert out[0]["stableVersion"] == "0.9.0"
    assert out[0]["transitions"] == ["Promoting", "Succeeded"]
    assert out[0]["verdicts"] == {}


def test_a_version_outside_the_rollback_window_gets_a_full_canary() -> None:
    history = [
        {"version": "0.8.0", "promotedAt": "2025-11-01T00:00:00Z"},
        {"version": "0.9.0", "promotedAt": "2025-12-01T00:00:00Z"},
        {"version": "1.0.0", "promotedAt": "2025-12-10T00:00:00Z"},
    ]
    revert = resource(
        spec={"model": {"version": "0.8.0"}, "canary": {"rollbackWindow": 1}},
        status={"history": history},
    )
    out = run(revert, [tick(0)])
    assert (out[0]["phase"], out[0]["canaryWeight"]) == ("Progressing", 10)


def test_a_rolled_back_version_is_not_in_the_rollback_window() -> None:
    history = [
        {"version": "1.0.0", "promotedAt": "2025-12-10T00:00:00Z"},
        {"version": "2.0.0", "rolledBackAt": "2025-12-11T00:00:00Z"},
    ]
    out = run(resource(status={"history": history}), [tick(0)])
    assert (out[0]["phase"], out[0]["canaryWeight"]) == ("Progressing", 10)


def test_reverting_the_spec_to_stable_cancels_the_canary() -> None:
    running = status_after(resource(), [tick(0), tick(30, GOOD)])
    out = run(resource(spec={"model": {"version": "1.0.0"}}, status=running), [tick(40)])
    assert (out[0]["phase"], out[0]["canaryWeight"], out[0]["canaryVersion"]) == (
        "Succeeded",
        0,
        None,
    )


def test_measurements_before_the_interval_has_passed_are_not_counted() -> None:
    out = run(resource(), [tick(0), tick(10, BAD_ACCURACY), tick(20, BAD_ACCURACY)])
    assert [o["failed"] for o in out] == [0, 0, 0]
    assert all("next analysis is due" in o["ignored"][0] for o in out[1:])


def test_measurements_of_unknown_checks_are_reported_not_counted() -> None:
    out = run(resource(), [tick(0), tick(30, {**GOOD, "acuracy": {"canary": 0.1}})])
    assert out[1]["canaryWeight"] == 50
    assert "measurement of unknown check 'acuracy' ignored" in out[1]["ignored"]


@pytest.mark.parametrize(
    ("measured", "verdict", "message"),
    [
        ({"canary": float("nan"), "samples": 200}, "Inconclusive", "NaN"),
        ({"canary": 0.9, "stable": 0.9, "samples": -5}, "Error", "cannot be negative"),
        ({"canary": 0.9, "samples": 200}, "Inconclusive", "no stable baseline"),
        ({"canary": None, "samples": 200}, "Inconclusive", "no canary value"),
        ({"error": "HTTP 500"}, "Error", "HTTP 500"),
    ],
    ids=["nan", "negative-samples", "no-stable", "null", "backend-error"],
)
def test_odd_measurements_become_verdicts(
    measured: dict[str, Any], verdict: str, message: str
) -> None:
    out = run(resource(), [tick(0), tick(30, {**GOOD, "accuracy": measured})])
    check = next(c for c in out[1]["checks"] if c["name"] == "accuracy")
    assert check["verdict"] == verdict
    assert message in check["message"]
    assert out[1]["canaryWeight"] == 10


def test_requests_are_acted_on_once_per_value() -> None:
    running = status_after(resource(), [tick(0), tick(10, annotations=PROMOTE)])
    # the same annotation value stays on the resource: the next canary is not promoted by it
    newer = resource(spec={"model": {"version": "3.0.0"}}, status=running)
    out = run(newer, [tick(20, annotations=PROMOTE), tick(30, annotations=PROMOTE)])
    assert [o["phase"] for o in out] == ["Progressing", "Progressing"]


def test_a_request_with_nothing_to_do_is_noted() -> None:
    out = run(resource(status={"stableVersion": "2.0.0"}), [tick(0, annotations=ABORT)])
    assert out[0]["phase"] == "Succeeded"
    assert out[0]["ignored"] == ["abort request ignored: nothing to abort in phase Succeeded"]
