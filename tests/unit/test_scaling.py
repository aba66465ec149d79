"""The scaling function: the HPA's algorithm on a load signal, as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from torchrollout.engine.scaling import scale
from torchrollout.spec.scaling import AutoscalingSpec
from torchrollout.spec.status import Recommendation

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def policy(**fields: Any) -> AutoscalingSpec:
    base: dict[str, Any] = {"engine": "prometheus", "minReplicas": 1, "maxReplicas": 10}
    return AutoscalingSpec.model_validate({**base, **fields})


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


# current, value (target 10 req/s per replica), earlier recommendations (seconds ago,
# replicas), last scaled (seconds ago), policy fields -> desired, a phrase of the reason
CASES: list[
    tuple[str, int, float | None, list[tuple[float, int]], float | None, dict[str, Any], int, str]
] = [
    ("steady at the target", 3, 10.0, [], None, {}, 3, "3 recommended"),
    ("noise inside the tolerance", 3, 10.9, [], None, {}, 3, "3 recommended"),
    ("noise just outside", 3, 11.5, [], None, {}, 4, "4 recommended"),
    ("a spike scales up at once", 2, 30.0, [], None, {}, 6, "6 recommended"),
    ("up by 100% or 4 pods per period", 2, 60.0, [], None, {}, 6, "within the scaling rate"),
    ("up at most to max", 8, 100.0, [], None, {}, 10, "10 recommended"),
    (
        "a gentler scale-up percent",
        10,
        30.0,
        [],
        None,
        {"maxReplicas": 50, "maxScaleUpPercent": 50},
        15,
        "within the scaling rate",
    ),
    ("one change per period", 2, 30.0, [], 5.0, {}, 2, "within the scaling rate"),
    ("after the period it may change", 2, 30.0, [], 20.0, {}, 6, "6 recommended"),
    ("down waits for the down window", 6, 5.0, [(100, 6)], None, {}, 6, "300s scale-down window"),
    ("down once the window has passed", 6, 5.0, [(400, 6)], None, {}, 3, "3 recommended"),
    ("replicas set inside the window hold", 6, 5.0, [], 100.0, {}, 6, "scale-down window"),
    ("replicas set before the window may go", 6, 5.0, [], 400.0, {}, 3, "3 recommended"),
    (
        "down to the highest of the window",
        6,
        5.0,
        [(200, 4), (100, 5)],
        None,
        {},
        5,
        "scale-down window",
    ),
    (
        "a scale-down percent",
        10,
        1.0,
        [],
        None,
        {"maxScaleDownPercent": 20},
        8,
        "within the scaling rate",
    ),
    ("never below min", 3, 0.0, [], None, {"minReplicas": 2}, 2, "2 recommended"),
    (
        "an up window waits for agreement",
        2,
        30.0,
        [(20, 2)],
        None,
        {"scaleUpStabilizationSeconds": 60},
        2,
        "60s scale-up window",
    ),
    ("a missing signal holds", 4, None, [], None, {}, 4, "holding 4: no signal"),
    ("a missing signal never leaves the bounds", 12, None, [], None, {}, 10, "holding 10"),
    (
        "queue latency against its own target",
        2,
        120.0,
        [],
        None,
        {"signal": "queue-latency"},
        5,
        "queue-latency 120",
    ),
]


@pytest.mark.parametrize(
    ("current", "value", "earlier", "scaled", "fields", "desired", "says"),
    [pytest.param(*row[1:], id=row[0]) for row in CASES],
)
def test_replicas_follow_the_signal_within_windows_rates_and_bounds(
    current: int,
    value: float | None,
    earlier: list[tuple[float, int]],
    scaled: float | None,
    fields: dict[str, Any],
    desired: int,
    says: str,
) -> None:
    decision = scale(
        policy(**fields),
        current=current,
        value=value,
        recommendations=[Recommendation(at=ago(s), replicas=r) for s, r in earlier],
        last_scale_time=ago(scaled) if scaled is not None else None,
        now=NOW,
        why_no_value="Prometheus unreachable",
    )
    assert decision.desired == desired
    assert says in decision.reason


def test_flapping_load_does_not_flap_the_replicas() -> None:
    """Load alternating high and low every 15 s: up at once, never down inside the window."""
    spec = policy()
    replicas, history, last = 2, (), None
    seen = []
    for tick in range(20):
        now = NOW + timedelta(seconds=15 * tick)
        value = 20.0 if tick % 2 == 0 else 4.0
        decision = scale(
            spec,
            current=replicas,
            value=value * 2 / replicas,  # a fixed load spread over the replicas
            recommendations=history,
            last_scale_time=last,
            now=now,
        )
        if decision.desired != replicas:
            last = now
        replicas, history = decision.desired, decision.recommendations
        seen.append(replicas)
    assert seen[0] == 4
    assert seen == sorted(seen)  # it never went down while the load kept coming back


def test_a_drop_in_load_scales_down_after_the_window_and_not_before() -> None:
    spec = policy(scaleDownStabilizationSeconds=60)
    replicas, history, last = 8, (), NOW  # first seen now, at 8
    timeline = []
    for tick in range(10):
        now = NOW + timedelta(seconds=15 * tick)
        decision = scale(
            spec,
            current=replicas,
            value=2.0 * 8 / replicas,  # the load of 2 replicas' worth, spread over 8
            recommendations=history,
            last_scale_time=last,
            now=now,
        )
        if decision.desired != replicas:
            last = now
        replicas, history = decision.desired, decision.recommendations
        timeline.append(replicas)
    assert timeline[:4] == [8, 8, 8, 8]  # the window still holds the first 8
    assert timeline[-1] == 2


def test_recommendations_older_than_both_windows_are_forgotten() -> None:
    spec = policy(scaleDownStabilizationSeconds=60)
    old = [Recommendation(at=ago(120), replicas=9), Recommendation(at=ago(30), replicas=3)]
    decision = scale(
        spec, current=3, value=10.0, recommendations=old, last_scale_time=None, now=NOW
    )
    assert [r.replicas for r in decision.recommendations] == [3, 3]
