"""Replicas from a load signal, the HPA's way, as a pure function.

`scale` takes a revision's current replicas, the signal's value (or None when it could not
be read), the policy and the recommendations of the last minutes, and says how many replicas
the revision should have and why:

1. raw = ceil(current x value / target), unless value/target is within 1 +- tolerance
   (then current: noise does not scale);
2. stabilization: a scale-up goes to the lowest recommendation of the up window, a
   scale-down to the highest of the down window (so one dip or spike does not flap);
3. rate limits: at most one change per `period`; up by at most `maxScaleUpPercent`
   (or 4 pods, whichever is more), down by at most `maxScaleDownPercent`;
4. bounds: [minReplicas, maxReplicas].

A missing signal holds the replicas where they are (it never scales to zero or to max).
`last_scale_time` is when the replicas were last changed (or first seen): inside the down
window they count as a recommendation, and inside `period` nothing changes.
The recommendations are kept in the status, so a restarted operator stabilizes the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from torchrollout.spec.scaling import AutoscalingSpec
from torchrollout.spec.status import Recommendation

# The HPA's other default scale-up policy: 4 pods per period, whichever allows more.
MIN_SCALE_UP_PODS = 4
RECOMMENDATIONS_LIMIT = 64


@dataclass(frozen=True)
class ScalingDecision:
    """How many replicas, why, and the recommendations to remember."""

    desired: int
    reason: str
    recommendations: tuple[Recommendation, ...]


def scale(
    policy: AutoscalingSpec,
    *,
    current: int,
    value: float | None,
    recommendations: tuple[Recommendation, ...] | list[Recommendation],
    last_scale_time: datetime | None,
    now: datetime,
    why_no_value: str = "",
) -> ScalingDecision:
    """The replicas a revision at `current` should have now (see the module docstring)."""
    low, high = policy.min_replicas, policy.max_replicas
    bounded = min(high, max(low, current))
    window = max(policy.scale_up_stabilization_seconds, policy.scale_down_stabilization_seconds)
    kept = tuple(r for r in recommendations if r.at >= now - timedelta(seconds=window))
    if value is None or math.isnan(value) or value < 0:
        reason = f"holding {bounded}: no signal ({why_no_value or 'no value'})"
        return ScalingDecision(bounded, reason, kept)
    target = policy.signal_target
    ratio = value / target
    if current <= 0:
        raw = low
    elif abs(ratio - 1) <= policy.tolerance:
        raw = current
    else:
        raw = math.ceil(current * ratio)
    raw = min(high, max(low, raw))
    history = (*kept, Recommendation(at=now, replicas=raw))[-RECOMMENDATIONS_LIMIT:]
    said = f"{policy.signal} {value:.3g} against target {target:g}"
    desired = _stabilized(policy, current, raw, history, last_scale_time, now)
    if desired != raw:
        window_of = "up" if raw > current else "down"
        seconds = (
            policy.scale_up_stabilization_seconds
            if raw > current
            else policy.scale_down_stabilization_seconds
        )
        why = f"{said}: {raw} recommended, {desired} after the {seconds}s scale-{window_of} window"
    else:
        why = f"{said}: {raw} recommended"
    limited = _rate_limited(policy, current, desired, last_scale_time, now)
    if limited != desired:
        why = f"{why}; {limited} within the scaling rate (period {policy.scale_period_seconds}s)"
    final = min(high, max(low, limited))
    if final != limited:
        why = f"{why}; bounded to [{low}, {high}]"
    return ScalingDecision(final, why, history)


def _stabilized(
    policy: AutoscalingSpec,
    current: int,
    raw: int,
    history: tuple[Recommendation, ...],
    last_scale_time: datetime | None,
    now: datetime,
) -> int:
    def within(seconds: int) -> list[int]:
        since = now - timedelta(seconds=seconds)
        return [r.replicas for r in history if r.at >= since]

    if raw > current:
        # Up only as far as every recommendation of the up window agrees.
        return max(current, min(within(policy.scale_up_stabilization_seconds)))
    if raw < current:
        # Down only as far as every recommendation of the down window agrees; replicas set
        # (or first seen) inside the window count as one, so a fresh revision waits too.
        window = policy.scale_down_stabilization_seconds
        held = within(window)
        if last_scale_time is not None and last_scale_time > now - timedelta(seconds=window):
            held.append(current)
        return min(current, max(held))
    return current


def _rate_limited(
    policy: AutoscalingSpec,
    current: int,
    desired: int,
    last_scale_time: datetime | None,
    now: datetime,
) -> int:
    if desired == current:
        return current
    recent = (
        last_scale_time is not None
        and (now - last_scale_time).total_seconds() < policy.scale_period_seconds
    )
    if recent:
        return current
    if desired > current:
        ceiling = max(
            math.floor(current * (1 + policy.max_scale_up_percent / 100)),
            current + MIN_SCALE_UP_PODS,
        )
        return min(desired, ceiling)
    floor = math.ceil(current * (1 - policy.max_scale_down_percent / 100))
    return max(desired, floor)
