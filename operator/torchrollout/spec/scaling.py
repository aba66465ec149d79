"""How replicas follow load: `spec.autoscaling`, with one engine owning the replicas.

`hpa` renders a HorizontalPodAutoscaler on CPU and/or memory (its `behavior` passed
through). `prometheus` has the operator scale each revision on a PromQL signal with the HPA
algorithm (`torchrollout.engine.scaling`). `keda` renders a KEDA ScaledObject with a
Prometheus trigger on the same signal. The signals: `requests-per-replica` (requests per
second each ready replica takes), `queue-latency` (TorchServe's mean queue wait, in ms) or
`query` (a PromQL value compared with the target as it is).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from torchrollout.spec.base import FieldValueError, SpecModel, cel, cel_rule
from torchrollout.spec.checks import QUERY_VARIABLES, query_variables
from torchrollout.spec.durations import DURATION_PATTERN, parse_duration

Engine = Literal["hpa", "prometheus", "keda"]
Signal = Literal["requests-per-replica", "queue-latency", "query"]
# The target each built-in signal has unless one is given: 10 requests/s per replica;
# 50 ms waited in TorchServe's queue on average.
DEFAULT_TARGETS: dict[str, float] = {"requests-per-replica": 10.0, "queue-latency": 50.0}
SIGNAL_UNITS = {"requests-per-replica": "requests/s per replica", "queue-latency": "ms"}


def _engine(*engines: str) -> str:
    listed = ", ".join(f"'{e}'" for e in engines)
    return f"(has(self.engine) ? self.engine : 'hpa') in [{listed}]"


class AutoscalingSpec(
    SpecModel,
    json_schema_extra=cel(
        cel_rule(
            "!has(self.minReplicas) || !has(self.maxReplicas)"
            " || self.minReplicas <= self.maxReplicas",
            "minReplicas exceeds maxReplicas",
        ),
        cel_rule(
            "!has(self.signal) || self.signal != 'query' || has(self.query)",
            "signal: query needs query, the PromQL to scale on",
            field_path=".query",
            reason="FieldValueRequired",
        ),
        cel_rule(
            "!has(self.signal) || self.signal != 'query' || has(self.target)",
            "signal: query needs a target value to scale to",
            field_path=".target",
            reason="FieldValueRequired",
        ),
        cel_rule(
            "!has(self.query) || (has(self.signal) && self.signal == 'query')",
            "query is used only with signal: query",
            field_path=".query",
        ),
        cel_rule(
            "!has(self.behavior) || " + _engine("hpa"),
            "behavior is the HPA's: it is used only with engine: hpa",
            field_path=".behavior",
        ),
    ),
):
    """Replicas of each revision follow load, within [minReplicas, maxReplicas]."""

    engine: Engine = "hpa"
    """hpa: a HorizontalPodAutoscaler on CPU/memory; prometheus: the operator scales on
    `signal`; keda: a KEDA ScaledObject on `signal` (KEDA must be installed)."""
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=10, ge=1, le=1000)
    target_cpu_utilization: int | None = Field(
        default=70, ge=1, le=100, alias="targetCPUUtilization"
    )
    """hpa: percent of requested CPU the HPA keeps the stable revision at."""
    target_memory_utilization: int | None = Field(default=None, ge=1, le=100)
    """hpa: percent of requested memory."""
    behavior: dict[str, Any] | None = None
    """hpa: the HPA's `behavior` (stabilization windows, scale-up/down policies), as is."""
    signal: Signal = "requests-per-replica"
    """prometheus, keda: what load is measured as."""
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    """signal query: PromQL with {{ namespace }}, {{ name }}, {{ revision }}, {{ version }}
    and {{ interval }}, whose value is compared with target as it is."""
    target: float | None = Field(default=None, gt=0)
    """prometheus, keda: the signal's value each revision is scaled to keep (default 10
    requests/s per replica, or 50 ms of queue latency)."""
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    """prometheus: no scaling while value/target is within 1 +- tolerance (the HPA's 10%)."""
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    """prometheus: scale up to the lowest recommendation of this window (0: at once)."""
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    """prometheus: scale down to the highest recommendation of this window."""
    max_scale_up_percent: int = Field(default=100, ge=1, le=1000)
    """prometheus: at most this much growth (at least 4 pods) per scalePeriodSeconds."""
    max_scale_down_percent: int = Field(default=100, ge=1, le=100)
    """prometheus: at most this much shrinking per scalePeriodSeconds."""
    scale_period_seconds: int = Field(default=15, ge=1, le=1800)
    interval: str = Field(default="15s", pattern=DURATION_PATTERN)
    """prometheus: how often the signal is read (and replicas may change)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) exceeds maxReplicas ({self.max_replicas})"
            )
        if self.signal == "query" and self.query is None:
            raise FieldValueError("query", "signal: query needs query, the PromQL to scale on")
        if self.query is not None and self.signal != "query":
            raise FieldValueError("query", "query is used only with signal: query")
        if self.behavior is not None and self.engine != "hpa":
            raise FieldValueError(
                "behavior", "behavior is the HPA's: it is used only with engine: hpa"
            )
        if self.signal == "query" and self.target is None:
            raise FieldValueError("target", "signal: query needs a target value to scale to")
        if self.query is not None:
            unknown = sorted(query_variables(self.query) - QUERY_VARIABLES)
            if unknown:
                raise FieldValueError(
                    "query",
                    f"unknown variable {{{{ {unknown[0]} }}}}; use "
                    + ", ".join(sorted(QUERY_VARIABLES)),
                )
        try:
            seconds = parse_duration(self.interval)
        except ValueError as exc:
            raise FieldValueError("interval", str(exc)) from None
        if not 1 <= seconds <= 3600:
            raise FieldValueError("interval", f"interval {self.interval} must lie in 1s..1h")
        return self

    @property
    def signal_target(self) -> float:
        """The target in effect (the signal's default when none is given)."""
        if self.target is not None:
            return self.target
        return DEFAULT_TARGETS.get(self.signal, 1.0)

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    @property
    def signal_unit(self) -> str:
        return SIGNAL_UNITS.get(self.signal, "")
