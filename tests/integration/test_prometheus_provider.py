"""PrometheusProvider against a real Prometheus scraping exporters with known rates.

Two exporters play the stable and the canary revision; Prometheus labels them with
`namespace` and `revision` as the chart's ServiceMonitor does. Every built-in template
and every failure mode of a query is measured for real.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.exporter import Exporter
from torchrollout.engine import assess_check
from torchrollout.local.prometheus import PrometheusServer, ScrapeTarget
from torchrollout.metrics import PrometheusProvider, Target, measure_tick
from torchrollout.spec import MetricCheck, Verdict

pytestmark = pytest.mark.prometheus

STABLE = Target("risk", "fraud", revision="stable1234", version="1.0.0", interval="5s")
CANARY = Target("risk", "fraud", revision="canary5678", version="2.0.0", interval="5s")
IDLE = Target("risk", "fraud", revision="idle000000", version="0.1.0", interval="5s")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProvider]:
    with Exporter() as stable, Exporter() as canary, Exporter() as idle:
        stable.rates.__dict__.update(requests=100, errors=1, labeled=10, correct=9.5)
        stable.rates.latency_seconds = 0.02
        canary.rates.__dict__.update(requests=100, errors=5, labeled=10, correct=8)
        canary.rates.latency_seconds = 0.2
        canary.rates.abs_error = 25.0
        targets = [
            ScrapeTarget(e.address, {"namespace": "risk", "revision": t.revision})
            for e, t in ((stable, STABLE), (canary, CANARY), (idle, IDLE))
        ]
        workdir = tmp_path_factory.mktemp("prometheus")
        with PrometheusServer(targets, workdir=workdir) as server:
            server.wait_for_targets()
            time.sleep(6)  # let 5s windows fill with scrapes at 1s
            provider = PrometheusProvider(server.url)
            yield provider
            provider.close()


def check(**fields: object) -> MetricCheck:
    return MetricCheck.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "target", "low", "high"),
    [
        ({"template": "accuracy"}, STABLE, 0.94, 0.96),
        ({"template": "accuracy"}, CANARY, 0.79, 0.81),
        ({"template": "error-rate"}, STABLE, 0.009, 0.011),
        ({"template": "error-rate"}, CANARY, 0.049, 0.051),
        ({"template": "latency-mean"}, STABLE, 19.5, 20.5),
        ({"template": "latency-p99"}, STABLE, 10.0, 25.0),  # inside the (10, 25] ms bucket
        ({"template": "latency-p99"}, CANARY, 100.0, 250.0),
        ({"template": "mean-absolute-error", "max": 5}, CANARY, 2.4, 2.6),
    ],
    ids=lambda v: v.revision if isinstance(v, Target) else None,
)
def test_templates_measure_the_revision_they_name(
    prometheus: PrometheusProvider,
    fields: dict[str, object],
    target: Target,
    low: float,
    high: float,
) -> None:
    measured = prometheus.measure(check(**fields).resolve(0), target)
    assert measured.verdict is None, measured.message
    assert measured.value is not None
    assert low <= measured.value <= high
    assert measured.samples is not None and measured.samples > 0


def test_a_revision_without_traffic_is_inconclusive(prometheus: PrometheusProvider) -> None:
    measured = prometheus.measure(check(template="accuracy").resolve(0), IDLE)
    assert measured.verdict is Verdict.INCONCLUSIVE
    assert "NaN" in measured.message


def test_an_unknown_revision_has_no_data(prometheus: PrometheusProvider) -> None:
    unknown = Target("risk", "fraud", "nothere", "9.9.9", "5s")
    measured = prometheus.measure(check(template="latency-mean").resolve(0), unknown)
    assert measured.verdict is Verdict.INCONCLUSIVE
    assert "no series" in measured.message


def test_several_series_are_an_error(prometheus: PrometheusProvider) -> None:
    fields = {"name": "raw", "query": 'torchrollout_labeled{namespace="{{ namespace }}"}', "min": 0}
    measured = prometheus.measure(check(**fields).resolve(0), CANARY)
    assert measured.verdict is Verdict.ERROR
    assert "returned 3 series; aggregate it" in measured.message


def test_a_bad_query_is_an_error_with_prometheus_reason(prometheus: PrometheusProvider) -> None:
    measured = prometheus.measure(
        check(name="typo", query="sum(rate(x[5s]", min=0).resolve(0), CANARY
    )
    assert measured.verdict is Verdict.ERROR
    assert "rejected the query (HTTP 400)" in measured.message


def test_custom_query_variables_select_the_revision(prometheus: PrometheusProvider) -> None:
    query = (
        'sum(increase(torchrollout_correct{revision="{{ revision }}"}[{{ interval }}]))'
        ' / sum(increase(torchrollout_labeled{revision="{{ revision }}"}[{{ interval }}]))'
    )
    measured = prometheus.measure(check(name="acc", query=query, min=0.9).resolve(0), CANARY)
    assert measured.value is not None and 0.79 <= measured.value <= 0.81
    assert measured.samples is None


def test_a_tick_judges_the_canary_against_its_baseline(prometheus: PrometheusProvider) -> None:
    checks = [
        check(template="accuracy", min=0.7, maxDropVsStable=0.05).resolve(10),
        check(template="error-rate", max=0.1).resolve(10),
    ]
    measured = measure_tick(prometheus, checks, canary=CANARY, stable=STABLE)
    verdicts = {c.name: assess_check(c, measured[c.name]) for c in checks}
    assert verdicts["accuracy"].verdict is Verdict.FAILED  # 0.80 vs 0.95: a 0.15 drop
    assert "below stable" in verdicts["accuracy"].message
    assert verdicts["error-rate"].verdict is Verdict.SUCCESSFUL
    assert measured["error-rate"].stable is None  # absolute checks do not query the stable


def test_latency_distribution_reads_each_revisions_buckets(
    prometheus: PrometheusProvider,
) -> None:
    distribution = check(template="latency-distribution").resolve(0)
    for target, le in ((STABLE, 0.025), (CANARY, 0.25)):  # 20 ms and 200 ms requests
        measured = prometheus.measure(distribution, target)
        assert measured.verdict is None, measured.message
        assert measured.histogram is not None and measured.samples is not None
        counts = {b.le: b.count for b in measured.histogram.buckets}
        assert counts[math.inf] == pytest.approx(100 * 5, rel=0.3)  # 100/s over 5s
        assert {bound for bound, count in counts.items() if count > 0} == {
            bound for bound in counts if bound >= le
        }


def test_a_tick_fails_a_canary_slower_than_its_baseline(prometheus: PrometheusProvider) -> None:
    checks = [
        check(template="latency-distribution").resolve(50),
        check(template="latency-p99", maxMs=500).resolve(50),
    ]
    measured = measure_tick(prometheus, checks, canary=CANARY, stable=STABLE)
    verdicts = {c.name: assess_check(c, measured[c.name]) for c in checks}
    assert verdicts["latency-p99"].verdict is Verdict.SUCCESSFUL
    distribution = verdicts["latency-distribution"]
    assert distribution.verdict is Verdict.FAILED, distribution.message
    # Every canary request (200 ms) is slower than every stable one (20 ms).
    assert "canary slower than stable: p<1e-15, P(canary slower)=1.00 >= 0.56" in (
        distribution.message
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (IDLE, "canary: 0 samples"),
        (Target("risk", "fraud", "nothere", "9", "5s"), "no latency histogram series"),
    ],
    ids=["idle", "unknown"],
)
def test_latency_distribution_without_traffic_is_inconclusive(
    prometheus: PrometheusProvider, target: Target, message: str
) -> None:
    distribution = check(template="latency-distribution").resolve(10)
    measured = measure_tick(prometheus, [distribution], canary=target, stable=STABLE)
    result = assess_check(distribution, measured["latency-distribution"])
    assert result.verdict is Verdict.INCONCLUSIVE
    assert message in result.message


def test_a_canary_scraped_once_is_read_whole_by_the_fast_watch(tmp_path: Path) -> None:
    """With one sample in the range, increase() has nothing to say; counters that start at
    zero with the canary's pods do, a scrape sooner."""
    young = Target("risk", "fraud", revision="young12345", version="2.0.0", interval="2s")
    with Exporter() as exporter:
        exporter.rates.__dict__.update(requests=40, errors=40)
        target = ScrapeTarget(exporter.address, {"namespace": "risk", "revision": young.revision})
        with PrometheusServer([target], workdir=tmp_path, scrape_interval="10s") as server:
            server.wait_for_targets()  # one scrape now, the next in 10 s
            provider = PrometheusProvider(server.url)
            error_rate = check(template="error-rate").resolve(5)
            windowed = provider.measure(error_rate, young)
            whole = provider.measure(error_rate, replace(young, since_start=True))
            provider.close()
    assert windowed.verdict is Verdict.INCONCLUSIVE
    assert whole.value == pytest.approx(1.0)
    assert whole.samples is not None and whole.samples >= 1


def test_an_unreachable_prometheus_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = PrometheusProvider(f"http://127.0.0.1:{port}", timeout=1.0)
    measured = provider.measure(check(template="accuracy").resolve(0), CANARY)
    assert measured.verdict is Verdict.ERROR
    assert "unreachable" in measured.message


def test_a_silent_prometheus_times_out_as_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # accepts connections, never answers
        provider = PrometheusProvider(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=0.5)
        measured = provider.measure(check(template="accuracy").resolve(0), CANARY)
    assert measured.verdict is Verdict.ERROR
    assert "timed out" in measured.message


def test_a_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    from torchrollout.local.prometheus import LocalServerError

    with pytest.raises(LocalServerError, match="apt-get install"):
        PrometheusServer([], workdir=tmp_path, binary="no-such-prometheus").start()
