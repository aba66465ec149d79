"""Every answer a Prometheus server can give becomes a Measurement, never an exception.

Driven through httpx's MockTransport: the answers a healthy server rarely gives
(non-JSON, HTTP 503, matrix results, unreadable samples) are hard to provoke for real.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from torchrollout.errors import PrometheusError
from torchrollout.metrics import PrometheusProvider, Target, queries_for
from torchrollout.spec import MetricCheck, Template, Verdict


def answering(status: int, body: Any) -> PrometheusProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return PrometheusProvider(
        "http://prom:9090", client=httpx.Client(transport=httpx.MockTransport(handler))
    )


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [1700000000, v]} for v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("status", "body", "verdict", "value", "message"),
    [
        (200, vector("0.93"), None, 0.93, ""),
        (
            200,
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "2.5"]}},
            None,
            2.5,
            "",
        ),
        (200, vector(), Verdict.INCONCLUSIVE, None, "no series"),
        (200, vector("NaN"), Verdict.INCONCLUSIVE, None, "NaN"),
        (200, vector("1", "2"), Verdict.ERROR, None, "returned 2 series"),
        (200, vector("+Inf"), None, float("inf"), ""),
        (200, vector("abc"), Verdict.ERROR, None, "unreadable sample"),
        (
            200,
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            Verdict.ERROR,
            None,
            "returned a matrix",
        ),
        (
            400,
            {"status": "error", "errorType": "bad_data", "error": "parse error"},
            Verdict.ERROR,
            None,
            "parse error",
        ),
        (503, "Service Unavailable", Verdict.ERROR, None, "HTTP 503 without JSON"),
        (200, ["not", "an", "object"], Verdict.ERROR, None, "rejected the query"),
    ],
    ids=[
        "vector",
        "scalar",
        "empty",
        "nan",
        "two-series",
        "inf",
        "garbage",
        "matrix",
        "bad-query",
        "http-503",
        "odd-json",
    ],
)
def test_answers(
    status: int, body: Any, verdict: Verdict | None, value: float | None, message: str
) -> None:
    measured = answering(status, body).query("up")
    assert measured.verdict is verdict
    assert measured.value == value
    assert message in measured.message


def test_a_url_without_scheme_is_refused_at_construction() -> None:
    with pytest.raises(PrometheusError, match="must start with http"):
        PrometheusProvider("prometheus:9090")


def buckets(*pairs: tuple[str, str]) -> dict[str, Any]:
    result = [{"metric": {"le": le}, "value": [1700000000, v]} for le, v in pairs]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("body", "verdict", "samples", "message"),
    [
        (buckets(("+Inf", "31.2"), ("0.05", "10"), ("0.1", "30.5")), None, 31, ""),
        (buckets(), Verdict.INCONCLUSIVE, None, "no latency histogram series"),
        (buckets(("0.05", "10"), ("0.1", "30")), Verdict.ERROR, None, "no le=+Inf bucket"),
        (buckets(("0.05", "10"), ("+Inf", "NaN")), Verdict.INCONCLUSIVE, None, "NaN"),
        (buckets(("0.05", "1"), ("0.05", "2")), Verdict.ERROR, None, "two buckets le=0.05"),
        (vector("3"), Verdict.ERROR, None, "unreadable histogram bucket"),
        (
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}},
            Verdict.ERROR,
            None,
            "returned a scalar, not histogram buckets",
        ),
    ],
    ids=["buckets", "empty", "no-inf", "nan", "duplicate-le", "no-le", "scalar"],
)
def test_histogram_answers(
    body: dict[str, Any], verdict: Verdict | None, samples: int | None, message: str
) -> None:
    measured = answering(200, body).query_histogram("sum by (le) (increase(x_bucket[30s]))")
    assert measured.verdict is verdict
    assert measured.samples == samples
    assert measured.value is None
    assert message in measured.message
    if verdict is None:
        assert measured.histogram is not None
        assert [(b.le, b.count) for b in measured.histogram.buckets] == [
            (0.05, 10.0),
            (0.1, 30.5),
            (math.inf, 31.2),
        ]


def test_a_distribution_check_is_measured_as_a_histogram() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["query"])
        return httpx.Response(200, json=buckets(("0.05", "4"), ("+Inf", "9")))

    provider = PrometheusProvider(
        "http://prom:9090", client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    target = Target("risk", "fraud", revision="r1", version="2.0.0", interval="30s")
    check = MetricCheck(template=Template.LATENCY_DISTRIBUTION).resolve(0)
    measured = provider.measure(check, target)
    assert measured.histogram is not None and measured.samples == 9
    assert asked == [queries_for(check, target).value]  # one query: +Inf is the count
