"""A metrics exporter whose series grow at rates a test sets: a stand-in for a TorchServe.

It exposes the names the operator's PromQL reads (the handlers' metrics and TorchServe's
Requests2XX/4XX/5XX, without a `_total` suffix, as TorchServe writes them). Values are
`rate x seconds since start`, computed at scrape time, so a test says "10 labeled
requests a second, 9 correct" and Prometheus sees counters that grow that way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from torchrollout.local.ports import free_port

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


@dataclass
class Rates:
    """Per-second rates of what a revision serves."""

    requests: float = 0.0
    errors: float = 0.0  # 5XX, part of requests
    labeled: float = 0.0
    correct: float = 0.0
    latency_seconds: float = 0.02  # every request takes this long
    abs_error: float = 0.0  # sum of |error| per second
    load: float = 0.0  # a gauge: the load each replica carries, for scaling on a query


@dataclass
class _Series:
    rates: Rates
    labels: dict[str, str]
    started: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _GrowingSeries(Collector):
    """Unlabelled series (`rates`), plus series labelled per revision (`labelled`)."""

    rates: Rates = field(default_factory=Rates)
    labelled: dict[tuple[str, str], _Series] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def collect(self) -> Iterator[Metric]:
        every = [_Series(self.rates, {}, self.started), *self.labelled.values()]
        names = sorted({k for series in every for k in series.labels})
        families = {
            name: GaugeMetricFamily(name, name, labels=names)
            for name in (
                "torchrollout_labeled",
                "torchrollout_correct",
                "torchrollout_abs_error_sum",
                "Requests2XX",
                "Requests5XX",
                "test_load",
            )
        }
        latency = HistogramMetricFamily(
            "torchrollout_inference_latency_seconds", "latency", labels=names
        )
        for series in every:
            elapsed = time.monotonic() - series.started
            r, values = series.rates, [series.labels.get(n, "") for n in names]
            families["torchrollout_labeled"].add_metric(values, r.labeled * elapsed)
            families["torchrollout_correct"].add_metric(values, r.correct * elapsed)
            families["torchrollout_abs_error_sum"].add_metric(values, r.abs_error * elapsed)
            families["Requests2XX"].add_metric(values, (r.requests - r.errors) * elapsed)
            families["Requests5XX"].add_metric(values, r.errors * elapsed)
            families["test_load"].add_metric(values, r.load)
            count = r.requests * elapsed
            buckets = [(f"{b}", count if r.latency_seconds <= b else 0.0) for b in BUCKETS]
            latency.add_metric(
                values, [*buckets, ("+Inf", count)], sum_value=count * r.latency_seconds
            )
        yield from families.values()
        yield latency


class Exporter:
    """`with Exporter() as e: e.rates.labeled = 10`, served on a free loopback port."""

    def __init__(self) -> None:
        self._series = _GrowingSeries()
        self.registry = CollectorRegistry()
        self.registry.register(self._series)
        self.port = free_port()
        self._server: WSGIServer | None = None

    @property
    def rates(self) -> Rates:
        return self._series.rates

    def revision(self, namespace: str, revision: str) -> Rates:
        """The rates of series labelled with this namespace and revision (made on first use)."""
        key = (namespace, revision)
        if key not in self._series.labelled:
            labels = {"namespace": namespace, "revision": revision}
            self._series.labelled[key] = _Series(Rates(), labels)
        return self._series.labelled[key].rates

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Exporter:
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = make_server(
            "127.0.0.1", self.port, make_wsgi_app(self.registry), handler_class=Quiet
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
