"""Is the canary slower than the stable? Two latency histograms compared, Kayenta's way.

Thresholds catch a broken model; a model a little slower everywhere needs the two latency
distributions compared. `mann_whitney` runs a one-sided Mann-Whitney U test on bucketed
samples: every observation in a bucket ties with the others there (midranks, with the
standard tie correction of the variance), and the p-value comes from the normal
approximation with a continuity correction. Its effect size is the common-language one,
P(a canary request is slower than a stable one), ties counted half: 0.5 is no difference.
A huge sample makes any difference significant, so a check fails only when the effect
also reaches its floor (`minEffect`).

`assess_distribution` is `assess_check` for the distribution templates: it never raises,
and a measurement without a histogram (a provider that only gives single values) is an
Error that says so. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torchrollout.engine.types import CheckMeasurements, Histogram
from torchrollout.spec.checks import DEFAULT_CONFIDENCE, DEFAULT_MIN_EFFECT, ResolvedCheck
from torchrollout.spec.status import CheckStatus, Verdict


@dataclass(frozen=True)
class MannWhitney:
    """The one-sided test "the first sample is larger (slower)" on bucketed counts."""

    u: float
    """Pairs (first, second) where the first is in a later bucket, plus half the pairs tied."""
    z: float
    p_value: float
    effect: float
    """U / (n1 n2): P(first > second) + P(tie) / 2."""
    first_count: float
    second_count: float


def mann_whitney(first: Sequence[float], second: Sequence[float]) -> MannWhitney:
    """The test on counts per bucket, fastest bucket first (both over the same buckets).

    Counts may be fractional (Prometheus' `increase()` extrapolates); the formulas hold
    for weights. With no pairs, or every observation in one bucket, there is no evidence
    either way: p = 1 and an effect of 0.5.
    """
    if len(first) != len(second):
        raise ValueError("both samples must be counted over the same buckets")
    n1, n2 = sum(first), sum(second)
    u = 0.0
    below = 0.0  # second-sample observations in faster buckets
    ties = 0.0  # sum of t^3 - t over buckets holding t observations
    for a, b in zip(first, second, strict=True):
        u += a * (below + b / 2)
        below += b
        t = a + b
        ties += t**3 - t
    pairs = n1 * n2
    n = n1 + n2
    if pairs <= 0:
        return MannWhitney(0.0, 0.0, 1.0, 0.5, n1, n2)
    variance = pairs / 12 * ((n + 1) - ties / (n * (n - 1)))
    effect = u / pairs
    if variance <= 0:
        return MannWhitney(u, 0.0, 1.0, effect, n1, n2)
    z = (u - pairs / 2 - 0.5) / math.sqrt(variance)
    return MannWhitney(u, z, upper_tail(z), effect, n1, n2)


def upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def common_bounds(first: Histogram, second: Histogram) -> tuple[float, ...]:
    """The `le` bounds both histograms have, in order: buckets both can be counted in.

    Revisions built with other bucket layouts still compare, on the coarser common one.
    """
    return tuple(sorted({b.le for b in first.buckets} & {b.le for b in second.buckets}))


def bucket_counts(histogram: Histogram, bounds: Sequence[float]) -> list[float]:
    """Observations per bucket between consecutive `bounds` (the first from 0).

    Cumulative counts are made non-decreasing and non-negative first: `increase()`
    extrapolates each bucket's series on its own, which can leave a bucket a fraction
    below the one before it. A bound missing (or not finite) holds no observations.
    """
    cumulative = {b.le: b.count for b in histogram.buckets}
    counts, reached = [], 0.0
    for le in bounds:
        raw = cumulative.get(le, reached)
        value = max(reached, raw) if math.isfinite(raw) else reached
        counts.append(value - reached)
        reached = value
    return counts


def quantile(q: float, counts: Sequence[float], bounds: Sequence[float]) -> float | None:
    """The q-quantile of bucketed counts, interpolated in its bucket as Prometheus'
    `histogram_quantile` does (in +Inf: the highest finite bound); None without counts."""
    total = sum(counts)
    if total <= 0:
        return None
    rank, below, lower = q * total, 0.0, 0.0
    for count, upper in zip(counts, bounds, strict=True):
        if count > 0 and below + count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / count
        below += count
        lower = upper if not math.isinf(upper) else lower
    return lower


def assess_distribution(check: ResolvedCheck, measured: CheckMeasurements) -> CheckStatus:
    """The verdict of a distribution check for one tick.

    Error when either side could not be measured; Inconclusive when either has no data
    or fewer samples than the check needs; Failed when the canary is slower at the
    check's confidence *and* by at least its effect size; Successful otherwise. `value`
    and `stableValue` are the two median latencies in milliseconds.
    """
    confidence = DEFAULT_CONFIDENCE if check.confidence is None else check.confidence
    min_effect = DEFAULT_MIN_EFFECT if check.min_effect is None else check.min_effect
    result = CheckStatus(
        name=check.name,
        verdict=Verdict.INCONCLUSIVE,
        threshold=check.describe_threshold(),
        samples=measured.canary.samples,
    )
    sides = {"canary": measured.canary, "stable": measured.stable}
    for side, m in sides.items():
        if m is not None and m.verdict is Verdict.ERROR:
            message = f"{side}: {m.message}" if m.message else f"{side}: measurement failed"
            return result.model_copy(update={"verdict": Verdict.ERROR, "message": message})
    for side, m in sides.items():
        if m is not None and m.verdict is None and m.histogram is None:
            message = (
                f"{check.name} compares latency histograms, but the {side}'s measurement is a "
                "single value, not a histogram's buckets"
            )
            return result.model_copy(update={"verdict": Verdict.ERROR, "message": message})
    canary = measured.canary.histogram
    stable = measured.stable.histogram if measured.stable is not None else None
    if canary is None or stable is None:
        side, m = ("canary", measured.canary) if canary is None else ("stable", measured.stable)
        if m is None:
            message = "no stable revision measured to compare with"
        else:
            message = f"{side}: {m.message or 'no data'}"
        return result.model_copy(update={"message": message})

    bounds = common_bounds(canary, stable)
    if not bounds or not math.isinf(bounds[-1]):
        message = "the canary's and the stable's histograms share no +Inf bucket to compare on"
        return result.model_copy(update={"verdict": Verdict.ERROR, "message": message})
    canary_counts, stable_counts = bucket_counts(canary, bounds), bucket_counts(stable, bounds)
    medians = {
        "value": _ms(quantile(0.5, canary_counts, bounds)),
        "stable_value": _ms(quantile(0.5, stable_counts, bounds)),
    }
    result = result.model_copy(update=medians)
    for side, counts in (("canary", canary_counts), ("stable", stable_counts)):
        samples = round(sum(counts))
        if samples < check.min_samples:
            message = f"{side}: {samples} samples, fewer than the {check.min_samples} required"
            return result.model_copy(update={"message": message})

    test = mann_whitney(canary_counts, stable_counts)
    p = f"p<{_TINY:g}" if test.p_value < _TINY else f"p={test.p_value:.2g}"
    found = f"{p}, P(canary slower)={test.effect:.2f}"
    detail = (
        f"median {_show(medians['value'])} vs {_show(medians['stable_value'])}; "
        f"{test.first_count:.0f} vs {test.second_count:.0f} samples"
    )
    significant = test.p_value < 1 - confidence
    if significant and test.effect >= min_effect:
        message = f"canary slower than stable: {found} >= {min_effect:g} ({detail})"
        return result.model_copy(update={"verdict": Verdict.FAILED, "message": message})
    if significant:
        message = f"canary slower than stable by a negligible effect: {found} < {min_effect:g}"
    else:
        message = f"no significant slowdown at {confidence:g} confidence: {found}"
    return result.model_copy(
        update={"verdict": Verdict.SUCCESSFUL, "message": f"{message} ({detail})"}
    )


# Below this a p-value printed as a number says nothing more (the normal tail underflows).
_TINY = 1e-15


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _show(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.3g} ms"
