"""Measuring checks: PromQL templates, the Prometheus provider, the provider seam."""

from __future__ import annotations

from torchrollout.metrics.prometheus import PrometheusProvider
from torchrollout.metrics.provider import (
    MetricProvider,
    StaticProvider,
    measure_fast,
    measure_tick,
)
from torchrollout.metrics.templates import Queries, Target, queries_for, rollout_targets

__all__ = [
    "MetricProvider",
    "PrometheusProvider",
    "Queries",
    "StaticProvider",
    "Target",
    "measure_fast",
    "measure_tick",
    "queries_for",
    "rollout_targets",
]
