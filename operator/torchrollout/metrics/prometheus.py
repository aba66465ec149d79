"""`PrometheusProvider`: checks measured with instant queries against Prometheus's HTTP API.

Every outcome is a Measurement, never an exception: an unreachable server, a timeout,
an HTTP error or a rejected query are Error; an empty result or NaN is Inconclusive
(no traffic yet is not a bad model); several series are Error, because a check must
reduce to one number and the query should say how (sum, avg, max). A distribution check
reads a histogram instead: one series per `le` bucket, which must include +Inf.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from torchrollout.engine.types import Histogram, Measurement
from torchrollout.errors import PrometheusError
from torchrollout.metrics.templates import Target, queries_for
from torchrollout.spec.checks import ResolvedCheck
from torchrollout.spec.status import Verdict


class PrometheusProvider:
    """Measures checks on a Prometheus server at `url`.

    `client` is the test seam: pass an httpx.Client with a MockTransport to drive
    every answer a server can give.
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, client: httpx.Client | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise PrometheusError(f"Prometheus URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def measure(self, check: ResolvedCheck, target: Target) -> Measurement:
        queries = queries_for(check, target)
        if queries.histogram:
            return self.query_histogram(queries.value)
        measured = self.query(queries.value)
        if queries.samples is None or measured.verdict is not None:
            return measured
        counted = self.query(queries.samples)
        if counted.value is not None:
            samples: int | None = round(counted.value)
        else:  # no series counted means nothing was counted; an error means unknown
            samples = 0 if counted.verdict is Verdict.INCONCLUSIVE else None
        return Measurement(value=measured.value, samples=samples)

    def query(self, promql: str) -> Measurement:
        """One instant query as a Measurement."""
        data = self._instant(promql)
        return data if isinstance(data, Measurement) else _from_result(data, promql)

    def query_histogram(self, promql: str) -> Measurement:
        """One instant query returning cumulative `le` buckets, as a histogram Measurement."""
        data = self._instant(promql)
        return data if isinstance(data, Measurement) else _histogram_from_result(data, promql)

    def _instant(self, promql: str) -> dict[str, Any] | Measurement:
        """The `data` of a successful answer, or an Error measurement saying what failed."""
        try:
            response = self._client.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.TimeoutException:
            return Measurement.error(f"Prometheus at {self.url} timed out")
        except httpx.HTTPError as exc:
            return Measurement.error(f"Prometheus at {self.url} is unreachable: {exc}")
        try:
            body: Any = response.json()
        except ValueError:
            return Measurement.error(
                f"Prometheus at {self.url} answered HTTP {response.status_code} without JSON"
            )
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error", "") if isinstance(body, dict) else ""
            return Measurement.error(
                f"Prometheus rejected the query (HTTP {response.status_code}): {detail}; "
                f"query: {promql}"
            )
        data = body.get("data")
        return data if isinstance(data, dict) else {}


def _from_result(data: dict[str, Any], promql: str) -> Measurement:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return _sample(result)
    if kind != "vector" or not isinstance(result, list):
        return Measurement.error(f"the query returned a {kind}, not one number; query: {promql}")
    if not result:
        return Measurement.no_data("no data: the query returned no series (no traffic yet?)")
    if len(result) > 1:
        return Measurement.error(
            f"the query returned {len(result)} series; aggregate it to one (sum, avg, max)"
        )
    return _sample(result[0].get("value"))


def _histogram_from_result(data: dict[str, Any], promql: str) -> Measurement:
    kind, result = data.get("resultType"), data.get("result")
    if kind != "vector" or not isinstance(result, list):
        return Measurement.error(
            f"the query returned a {kind}, not histogram buckets; query: {promql}"
        )
    if not result:
        return Measurement.no_data("no data: no latency histogram series (no traffic yet?)")
    counts: dict[float, float] = {}
    for series in result:
        metric = series.get("metric") if isinstance(series, dict) else None
        le: Any = metric.get("le") if isinstance(metric, dict) else None
        try:
            bound, count = float(le), float(series["value"][1])
        except (TypeError, ValueError, IndexError, KeyError):
            return Measurement.error(
                f"Prometheus returned an unreadable histogram bucket {series!r}; query: {promql}"
            )
        if bound in counts:
            return Measurement.error(
                f"the histogram has two buckets le={le}; aggregate it by le; query: {promql}"
            )
        counts[bound] = count
    if math.inf not in counts:
        return Measurement.error(f"the histogram has no le=+Inf bucket; query: {promql}")
    if any(math.isnan(count) for count in counts.values()):
        return Measurement.no_data(
            "no data: the histogram's counts are NaN (no traffic in the interval?)"
        )
    return Measurement.of_histogram(Histogram.of(counts))


def _sample(pair: Any) -> Measurement:
    try:
        value = float(pair[1])
    except (TypeError, ValueError, IndexError):
        return Measurement.error(f"Prometheus returned an unreadable sample {pair!r}")
    if math.isnan(value):
        return Measurement.no_data(
            "no data: the query returned NaN (0/0: no traffic in the interval)"
        )
    return Measurement(value=value)
