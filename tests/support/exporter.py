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


@dataclass(eq=False)
class _GrowingSeries(Collector):
    rates: Rates = field(default_factory=Rates)
    started: float = field(default_factory=time.monotonic)

    def collect(self) -> Iterator[Metric]:
        elapsed = time.monotonic() - self.started
        r = self.rates

        def gauge(name: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, name, value=value)

        yield gauge("torchrollout_labeled", r.labeled * elapsed)
        yield gauge("torchrollout_correct", r.correct * elapsed)
        yield gauge("torchrollout_abs_error_sum", r.abs_error * elapsed)
        yield gauge("Requests2XX", (r.requests - r.errors) * elapsed)
        yield gauge("Requests5XX", r.errors * elapsed)
        count = r.requests * elapsed
        buckets = [(f"{b}", count if r.latency_seconds <= b else 0.0) for b in BUCKETS]
        yield HistogramMetricFamily(
            "torchrollout_inference_latency_seconds",
            "latency",
            buckets=[*buckets, ("+Inf", count)],
            sum_value=count * r.latency_seconds,
        )


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
