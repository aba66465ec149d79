"""The values the decision engine takes and gives: frozen dataclasses, no behaviour.

Inputs: what the platform observed (`Observation`) and what the metrics said
(`Measurement`, a pair of them per check in `CheckMeasurements`; a distribution check's
measurement carries a latency `Histogram` instead of one value). Output: a `Decision`,
which holds the new status, the weight the router should set, events to post and when
to look again. Errors are data here: a Measurement carries its own Error or
Inconclusive verdict instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from torchrollout.spec.status import CheckStatus, ModelDeploymentStatus, Phase, Verdict


@dataclass(frozen=True)
class Bucket:
    """One cumulative bucket of a histogram: `count` observations were at most `le`."""

    le: float
    count: float


@dataclass(frozen=True)
class Histogram:
    """A latency histogram over one interval, as Prometheus keeps it: cumulative `le`
    buckets in seconds, in increasing order, the last one +Inf (so its count is the total).

    Counts come from `increase()`, which extrapolates to the window's edges: they need not
    be whole numbers, and may even dip by a fraction from one bucket to the next.
    """

    buckets: tuple[Bucket, ...]

    @classmethod
    def of(cls, counts: Mapping[float, float]) -> Histogram:
        """From `{le: cumulative count}`, in any order."""
        return cls(tuple(Bucket(le, counts[le]) for le in sorted(counts)))

    @property
    def total(self) -> float:
        return self.buckets[-1].count if self.buckets else 0.0


@dataclass(frozen=True)
class Measurement:
    """One check's value for one revision, or why there is none.

    `verdict` is set when the measurement alone decides it: Error (backend down, bad
    query, several series) or Inconclusive (no data, NaN). A measurement with a value
    has no verdict yet: thresholds judge it. A distribution check is measured as a
    `histogram` (with `samples` its total) and no value.
    """

    value: float | None = None
    samples: int | None = None
    verdict: Verdict | None = None
    message: str = ""
    histogram: Histogram | None = None

    @classmethod
    def of(cls, value: float, samples: int | None = None) -> Measurement:
        if math.isnan(value):
            return cls.no_data("the query returned NaN (no traffic in the interval?)", samples)
        return cls(value=value, samples=samples)

    @classmethod
    def of_histogram(cls, histogram: Histogram) -> Measurement:
        return cls(samples=round(histogram.total), histogram=histogram)

    @classmethod
    def no_data(cls, message: str, samples: int | None = None) -> Measurement:
        return cls(samples=samples, verdict=Verdict.INCONCLUSIVE, message=message)

    @classmethod
    def error(cls, message: str) -> Measurement:
        return cls(verdict=Verdict.ERROR, message=message)


@dataclass(frozen=True)
class CheckMeasurements:
    """A check measured on the canary and, where it compares, on the stable revision."""

    canary: Measurement
    stable: Measurement | None = None


@dataclass(frozen=True)
class Observation:
    """What the platform reports about the running revisions.

    `canary_ready` is about the revision the spec names, when it is not the stable one:
    every replica it was asked for is available. `canary_ready_replicas` (when known)
    lets promotion wait until the canary has as many replicas as the stable. The weight
    the router achieved is not here: the caller writes it into `status.canaryWeight`
    after applying a decision, and the engine reads it from there.
    """

    canary_ready: bool = False
    canary_ready_replicas: int | None = None
    stable_ready: bool = True
    stable_replicas: int = 1
    broken: str | None = None
    """Why the spec's revision can never become ready (its archive build failed): the engine
    rolls back (or fails a first deploy) at once instead of waiting for the deadline."""
    waiting_on: str | None = None
    """What the spec's revision's pods wait for (e.g. the scheduler's message), told when the
    progress deadline passes."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the resource."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """What to do now.

    `weight` is the canary weight the router should set, `requeue_after` seconds until
    decide should run again (0: as soon as the decision is applied; None: only when
    something changes), `checks` the results of the analysis run by this decision (empty
    when none ran), `transitions` the phases entered, in order, and `ignored` notes
    inputs that were not used (a tick that was not due, a measurement of an unknown
    check).
    """

    status: ModelDeploymentStatus
    weight: int
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    checks: tuple[CheckStatus, ...] = ()
    transitions: tuple[Phase, ...] = ()
    ignored: tuple[str, ...] = field(default=())
