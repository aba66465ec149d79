"""Critical checks and the fast watch: a plainly broken canary goes at once, noise does not.

The resource watches a critical error-rate (the template's default) and a critical accuracy
check with `fastInterval: 2s` (a 4 s window): its fast sample floor is
max(5, ceil(50 x 4 / 30)) = 7 requests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.unit.builders import measured, resource, status_after, tick
from torchrollout.engine import Observation, decide
from torchrollout.engine.decide import grouped_problems
from torchrollout.engine.fast import catastrophe, fast_checks, fast_min_samples
from torchrollout.simulation import SIMULATION_START
from torchrollout.spec import ModelDeployment, Phase
from torchrollout.spec.status import CheckStatus, Verdict

READY = Observation(canary_ready=True)
CHECKS = [
    {"template": "accuracy", "min": 0.85, "critical": True},
    {"template": "error-rate", "max": 0.05},
]
GOOD = {
    "accuracy": {"canary": 0.92, "samples": 200},
    "error-rate": {"canary": 0.0, "samples": 400},
}


def at(seconds: float) -> datetime:
    return SIMULATION_START + timedelta(seconds=seconds)


def watched(**canary: Any) -> ModelDeployment:
    spec = {"canary": {"fastInterval": "2s", "analysis": {"metrics": CHECKS}, **canary}}
    md = resource(spec=spec)
    return resource(spec=spec, status=status_after(md, [tick(0)]))  # at step 1 since t=0


def test_error_rate_is_critical_by_default_and_other_templates_are_not() -> None:
    md = resource(
        spec={"canary": {"analysis": {"metrics": [*CHECKS[1:], {"template": "latency-p99"}]}}}
    )
    assert [c.name for c in fast_checks(md.spec)] == ["error-rate"]
    assert fast_min_samples(watched().spec, fast_checks(watched().spec)[0]) == 7


@pytest.mark.parametrize(
    ("case", "fast", "rolled_back"),
    [
        ("every request fails", {"error-rate": {"canary": 1.0, "samples": 40}}, True),
        ("half fail: the catastrophic line", {"error-rate": {"canary": 0.5, "samples": 40}}, True),
        ("bad but not catastrophic", {"error-rate": {"canary": 0.3, "samples": 400}}, False),
        ("cold canary, two requests", {"error-rate": {"canary": 1.0, "samples": 2}}, False),
        ("burst below the floor", {"error-rate": {"canary": 1.0, "samples": 6}}, False),
        ("burst over, recovered", {"error-rate": {"canary": 0.0, "samples": 40}}, False),
        ("Prometheus down: Error, not Failed", {"error-rate": {"error": "unreachable"}}, False),
        ("no data yet", {}, False),
        ("accuracy collapsed", {"accuracy": {"canary": 0.2, "samples": 40}}, True),
        ("accuracy poor, above the floor", {"accuracy": {"canary": 0.5, "samples": 40}}, False),
    ],
)
def test_a_catastrophic_fast_reading_rolls_back_in_the_same_decision(
    case: str, fast: dict[str, Any], rolled_back: bool
) -> None:
    md = watched()
    decision = decide(md, observation=READY, fast=measured(fast), now=at(5))
    assert (decision.status.phase is Phase.ROLLING_BACK) is rolled_back, case
    if rolled_back:
        assert decision.weight == 0
        assert decision.status.message.startswith("rolling back 2.0.0: fast watch: ")
        assert "catastrophic" in decision.status.message
        assert [e.reason for e in decision.events] == ["RollingBack"]
        # Decided again on the same input (an operator restarted before applying): the same.
        again = decide(md, observation=READY, fast=measured(fast), now=at(5))
        assert again.status == decision.status
    else:
        assert decision.status.phase is Phase.PROGRESSING
        assert decision.requeue_after is not None and decision.requeue_after <= 2


def test_a_non_critical_error_rate_is_not_watched_between_ticks() -> None:
    md = watched(analysis={"metrics": [{"template": "error-rate", "critical": False}]})
    fast = measured({"error-rate": {"canary": 1.0, "samples": 400}})
    decision = decide(md, observation=READY, fast=fast, now=at(5))
    assert decision.status.phase is Phase.PROGRESSING
    assert decision.requeue_after == pytest.approx(25)  # nothing watched: the next tick


def test_the_catastrophic_error_rate_is_configurable() -> None:
    md = watched(analysis={"metrics": CHECKS, "catastrophicErrorRate": 0.2})
    reason = catastrophe(md.spec, measured({"error-rate": {"canary": 0.3, "samples": 40}}))
    assert reason == (
        "error-rate 0.3 over the last 4s (40 requests) is at or above the catastrophic 0.2"
    )


@pytest.mark.parametrize(
    ("checks", "after_one_failed_tick"),
    [
        ({**GOOD, "error-rate": {"canary": 0.08, "samples": 400}}, Phase.ROLLING_BACK),
        ({**GOOD, "accuracy": {"canary": 0.80, "samples": 200}}, Phase.ROLLING_BACK),
    ],
)
def test_a_failed_critical_check_rolls_back_on_its_first_tick(
    checks: dict[str, Any], after_one_failed_tick: Phase
) -> None:
    md = watched()
    assert md.spec.canary.analysis.failure_limit == 2
    decision = decide(md, observation=READY, measurements=measured(checks), now=at(30))
    assert decision.status.phase is after_one_failed_tick
    assert "(critical: " in decision.status.message


def test_a_failed_ordinary_check_waits_for_the_failure_limit() -> None:
    md = watched(analysis={"metrics": [{"template": "latency-p99", "maxMs": 100}]})
    slow = measured({"latency-p99": {"canary": 300.0, "samples": 400}})
    decision = decide(md, observation=READY, measurements=slow, now=at(30))
    assert decision.status.phase is Phase.PROGRESSING
    assert [e.reason for e in decision.events] == ["AnalysisFailed"]


def test_a_tick_of_metric_errors_is_a_warning_naming_the_cause_once() -> None:
    md = watched()
    errors = {name: {"error": "Prometheus at http://p:9090 is unreachable"} for name in GOOD}
    decision = decide(md, observation=READY, measurements=measured(errors), now=at(30))
    (event,) = decision.events
    assert (event.type, event.reason) == ("Warning", "AnalysisError")
    assert event.message == (
        "2 checks (accuracy, error-rate): Prometheus at http://p:9090 is unreachable"
    )


@pytest.mark.parametrize(
    ("messages", "lines"),
    [
        ([("a", "down"), ("b", "down"), ("c", "down")], ["3 checks (a, b, c): down"]),
        (
            [("a", "down"), ("b", "0.7 is below the minimum 0.85")],
            ["a: down", "b: 0.7 is below the minimum 0.85"],
        ),
        ([("a", "")], []),
    ],
)
def test_problems_are_said_once_per_cause(
    messages: list[tuple[str, str]], lines: list[str]
) -> None:
    results = [
        CheckStatus(name=name, verdict=Verdict.ERROR, message=message) for name, message in messages
    ]
    assert grouped_problems(results) == lines
