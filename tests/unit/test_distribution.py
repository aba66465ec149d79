"""The latency-distribution check: Mann-Whitney U on bucketed latencies, and its verdicts.

Histograms here are exact: a revision's latencies are log-normal (median m, spread 0.4),
and each cumulative bucket holds n x CDF(le), in the handlers' bucket layout. A canary
"20% slower at every percentile" has median 1.2 m and the same spread. The textbook cases
pin U, z and p to values worked out by hand.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.support.exporter import BUCKETS
from tests.unit.builders import measured, resource, run, tick
from torchrollout.engine import CheckMeasurements, Histogram, Measurement, assess_check
from torchrollout.engine.distribution import (
    bucket_counts,
    common_bounds,
    mann_whitney,
    quantile,
    upper_tail,
)
from torchrollout.errors import TicksError
from torchrollout.metrics import StaticProvider, Target, measure_tick
from torchrollout.metrics.templates import queries_for
from torchrollout.spec import MetricCheck, ResolvedCheck, Verdict

CANARY = Target("risk", "fraud", revision="canary1", version="2.0.0", interval="30s")
STABLE = Target("risk", "fraud", revision="stable1", version="1.0.0", interval="30s")


def lognormal(n: float, median: float, spread: float = 0.4) -> Histogram:
    """n latencies of a log-normal law (median in seconds), in cumulative buckets."""

    def below(le: float) -> float:
        return 0.5 * math.erfc(-math.log(le / median) / (spread * math.sqrt(2)))

    return Histogram.of({**{le: n * below(le) for le in BUCKETS}, math.inf: n})


def check(**fields: Any) -> ResolvedCheck:
    return MetricCheck.model_validate({"template": "latency-distribution", **fields}).resolve(50)


def pair(canary: Histogram, stable: Histogram) -> CheckMeasurements:
    return CheckMeasurements(Measurement.of_histogram(canary), Measurement.of_histogram(stable))


# -- the test itself, by hand ----------------------------------------------------------------


def test_tortoise_and_hare_no_ties() -> None:
    # Finishing order T H H H H H T T T T T H: one bucket per finisher, fastest first.
    # A hare is slower than a tortoise in 5 x 1 + 1 x 6 = 11 pairs (U), of 36; under H0
    # U has mean 18 and variance 6 x 6 x 13 / 12 = 39, so z = (11 - 18 - 0.5) / sqrt(39).
    order = "THHHHHTTTTTH"
    hares = [float(c == "H") for c in order]
    tortoises = [float(c == "T") for c in order]
    hares_slower = mann_whitney(hares, tortoises)
    assert hares_slower.u == 11
    assert hares_slower.effect == pytest.approx(11 / 36)
    assert hares_slower.z == pytest.approx(-7.5 / math.sqrt(39))
    assert hares_slower.p_value == pytest.approx(0.8851, abs=1e-4)
    tortoises_slower = mann_whitney(tortoises, hares)
    assert tortoises_slower.u == 25  # 36 - 11
    assert tortoises_slower.z == pytest.approx(6.5 / math.sqrt(39))
    assert tortoises_slower.p_value == pytest.approx(0.1490, abs=1e-4)


def test_ties_within_a_bucket_use_midranks_and_the_tie_correction() -> None:
    # Canary 1, 2, 3 and stable 3, 2, 1 observations in three buckets (n1 = n2 = 6, N = 12).
    # U = 1 x (0 + 3/2) + 2 x (3 + 2/2) + 3 x (5 + 1/2) = 26, of 36 pairs.
    # Every bucket holds t = 4: sum(t^3 - t) = 180, so
    # var = 36/12 x (13 - 180 / (12 x 11)) = 34.909..., z = (26 - 18 - 0.5) / sqrt(var).
    test = mann_whitney([1, 2, 3], [3, 2, 1])
    variance = 36 / 12 * (13 - 180 / 132)
    assert test.u == 26
    assert test.effect == pytest.approx(26 / 36)
    assert test.z == pytest.approx(7.5 / math.sqrt(variance))
    assert test.p_value == pytest.approx(0.1022, abs=1e-4)


@pytest.mark.parametrize(
    ("first", "second"),
    [([0, 0], [0, 0]), ([5, 0], [0, 0]), ([5, 0], [7, 0])],
    ids=["empty", "one-side-empty", "all-tied"],
)
def test_no_pairs_or_all_ties_are_no_evidence(first: list[float], second: list[float]) -> None:
    test = mann_whitney(first, second)
    assert (test.p_value, test.effect) == (1.0, 0.5)


def test_the_normal_tail() -> None:
    assert upper_tail(0) == pytest.approx(0.5)
    assert upper_tail(1.6448536) == pytest.approx(0.05)


def test_buckets_are_counted_on_the_common_bounds_and_never_negative() -> None:
    fine = Histogram.of({0.05: 10, 0.1: 9.6, 0.25: 30, math.inf: 31})  # 0.1 dips: extrapolation
    coarse = Histogram.of({0.1: 5, 0.5: 20, math.inf: 20})
    bounds = common_bounds(fine, coarse)
    assert bounds == (0.1, math.inf)
    assert bucket_counts(fine, bounds) == [9.6, 31 - 9.6]
    assert bucket_counts(fine, (0.05, 0.1, 0.25, math.inf)) == [10, 0, 20, 1]


def test_quantiles_interpolate_in_their_bucket_as_prometheus_does() -> None:
    bounds = (0.05, 0.1, math.inf)
    assert quantile(0.5, [0, 10, 0], bounds) == pytest.approx(0.075)
    assert quantile(0.5, [10, 0, 0], bounds) == pytest.approx(0.025)
    assert quantile(0.99, [0, 0, 10], bounds) == 0.1  # in +Inf: the highest finite bound
    assert quantile(0.5, [0, 0, 0], bounds) is None


# -- verdicts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "canary", "stable", "verdict", "message"),
    [
        ({}, lognormal(300, 0.05), lognormal(300, 0.05), Verdict.SUCCESSFUL, "no significant"),
        (
            {},
            lognormal(300, 0.06),
            lognormal(300, 0.05),
            Verdict.FAILED,
            "canary slower than stable: p=2.2e-07, P(canary slower)=0.61 >= 0.56",
        ),
        (
            {},
            lognormal(40, 0.06),
            lognormal(300, 0.05),
            Verdict.INCONCLUSIVE,
            "canary: 40 samples, fewer than the 50 required",
        ),
        (
            {},
            lognormal(300, 0.06),
            lognormal(12, 0.05),
            Verdict.INCONCLUSIVE,
            "stable: 12 samples, fewer than the 50 required",
        ),
        (
            {},
            lognormal(1e7, 0.0505),
            lognormal(1e7, 0.05),
            Verdict.SUCCESSFUL,
            "by a negligible effect: p<1e-15, P(canary slower)=0.51 < 0.56",
        ),
        ({}, lognormal(300, 0.05), lognormal(300, 0.06), Verdict.SUCCESSFUL, "no significant"),
        ({"minEffect": 0.65}, lognormal(300, 0.06), lognormal(300, 0.05), Verdict.SUCCESSFUL, ""),
        (
            {"minSamples": 10},
            lognormal(60, 0.06),
            lognormal(60, 0.05),
            Verdict.FAILED,
            "p=0.012",
        ),
        (
            {"minSamples": 10, "confidence": 0.99},
            lognormal(60, 0.06),
            lognormal(60, 0.05),
            Verdict.SUCCESSFUL,
            "no significant slowdown at 0.99 confidence: p=0.012",
        ),
    ],
    ids=[
        "identical",
        "20pct-slower-everywhere",
        "few-canary-samples",
        "few-stable-samples",
        "huge-sample-negligible-shift",
        "canary-faster",
        "effect-below-a-higher-floor",
        "significant-at-95",
        "not-significant-at-99",
    ],
)
def test_verdicts(
    fields: dict[str, Any],
    canary: Histogram,
    stable: Histogram,
    verdict: Verdict,
    message: str,
) -> None:
    result = assess_check(check(**fields), pair(canary, stable))
    assert result.verdict is verdict, result.message
    assert message in result.message


def test_the_status_says_what_was_found() -> None:
    result = assess_check(check(), pair(lognormal(300, 0.06), lognormal(310, 0.05)))
    assert result.verdict is Verdict.FAILED
    assert result.threshold == "P(canary slower) < 0.56 or p >= 0.05"
    assert result.samples == 300
    # Medians in ms, interpolated in the (50, 75] ms bucket as histogram_quantile does.
    assert result.value is not None and 55 < result.value < 65
    assert result.stable_value is not None and 48 < result.stable_value < 52
    assert result.message.endswith("(median 61.3 ms vs 50 ms; 300 vs 310 samples)")


@pytest.mark.parametrize(
    ("measured", "verdict", "message"),
    [
        (
            CheckMeasurements(Measurement.error("Prometheus at http://p timed out")),
            Verdict.ERROR,
            "canary: Prometheus at http://p timed out",
        ),
        (
            CheckMeasurements(
                Measurement.of_histogram(lognormal(300, 0.05)), Measurement.error("HTTP 503")
            ),
            Verdict.ERROR,
            "stable: HTTP 503",
        ),
        (
            CheckMeasurements(Measurement.of(61.0, 300), Measurement.of(50.0, 300)),
            Verdict.ERROR,
            "measurement is a single value",
        ),
        (
            CheckMeasurements(Measurement.no_data("no data: no latency histogram series")),
            Verdict.INCONCLUSIVE,
            "canary: no data: no latency histogram series",
        ),
        (
            CheckMeasurements(Measurement.of_histogram(lognormal(300, 0.05))),
            Verdict.INCONCLUSIVE,
            "no stable revision measured to compare with",
        ),
        (
            pair(
                Histogram.of({0.05: 100, 0.1: 100}),  # no +Inf bucket
                lognormal(300, 0.05),
            ),
            Verdict.ERROR,
            "share no +Inf bucket",
        ),
        (None, Verdict.INCONCLUSIVE, "no measurement this tick"),
    ],
    ids=[
        "canary-error",
        "stable-error",
        "single-values",
        "canary-no-data",
        "no-stable",
        "no-inf-bucket",
        "nothing",
    ],
)
def test_what_cannot_be_compared(
    measured: CheckMeasurements | None, verdict: Verdict, message: str
) -> None:
    result = assess_check(check(), measured)
    assert result.verdict is verdict
    assert message in result.message


# -- measuring -----------------------------------------------------------------------------


def test_the_query_reads_the_histograms_buckets_over_the_interval() -> None:
    queries = queries_for(check(), CANARY)
    assert queries.histogram
    assert queries.value == (
        "sum by (le) (increase(torchrollout_inference_latency_seconds_bucket"
        '{namespace="risk",revision="canary1"}[30s]))'
    )


def test_a_tick_measures_both_revisions() -> None:
    provider = StaticProvider(
        {
            ("latency-distribution", "canary1"): Measurement.of_histogram(lognormal(300, 0.06)),
            ("latency-distribution", "stable1"): Measurement.of_histogram(lognormal(300, 0.05)),
        }
    )
    measured = measure_tick(provider, [check()], canary=CANARY, stable=STABLE)
    assert sorted(provider.calls) == [
        ("latency-distribution", "canary1"),
        ("latency-distribution", "stable1"),
    ]
    assert assess_check(check(), measured["latency-distribution"]).verdict is Verdict.FAILED


# -- simulate ------------------------------------------------------------------------------


def as_ticks(histogram: Histogram) -> dict[str, float]:
    """A histogram as a ticks file writes it: {"0.05": count, ..., "+Inf": count}."""
    return {("+Inf" if math.isinf(b.le) else f"{b.le:g}"): b.count for b in histogram.buckets}


def test_simulate_judges_the_histograms_of_a_ticks_file() -> None:
    metrics = [{"template": "latency-distribution"}]
    md = resource(spec={"canary": {"analysis": {"metrics": metrics}}})
    slower = {
        "canaryBuckets": as_ticks(lognormal(300, 0.06)),
        "stableBuckets": as_ticks(lognormal(300, 0.05)),
    }
    same = {**slower, "canaryBuckets": as_ticks(lognormal(300, 0.05))}
    values = {"canary": 61.0, "stable": 50.0, "samples": 300}
    out = run(
        md,
        [
            tick(0),
            tick(30, {"latency-distribution": same}),
            tick(60, {"latency-distribution": values}),
            tick(90, {"latency-distribution": slower}),
            tick(120, {"latency-distribution": slower}),
        ],
    )
    verdicts = [line["verdicts"].get("latency-distribution") for line in out]
    assert verdicts == [None, "Successful", "Error", "Failed", "Failed"]
    assert "single value" in out[2]["checks"][0]["message"]
    assert out[-1]["phase"] == "RolledBack"
    assert "latency-distribution: canary slower than stable: p=" in out[-1]["reason"]


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ({"0.05": 3}, "it has no +Inf"),
        ({"fast": 3, "+Inf": 4}, "'fast' is not a number"),
        ({"0.05": "3", "+Inf": 4}, "must be a number"),
        ([1, 2], "must map upper bounds in seconds to cumulative counts"),
    ],
    ids=["no-inf", "bad-bound", "bad-count", "not-a-map"],
)
def test_malformed_buckets_in_a_ticks_file_name_the_line(buckets: Any, message: str) -> None:
    with pytest.raises(TicksError, match="line 1") as caught:
        measured({"latency-distribution": {"canaryBuckets": buckets}})
    assert message in str(caught.value)
