"""PromQL behind the built-in checks, and the rendering of custom queries.

Every query selects one revision by the `namespace` and `revision` labels that the
scrape configuration puts on each target (the chart's ServiceMonitor in a cluster,
the rehearsal's scrape config on a laptop), never a moving "canary" track. Values
come out in the check's unit: latency in milliseconds, accuracy and error rate as
fractions, mean absolute error in the label's unit. A distribution check's query returns
the latency histogram's cumulative buckets instead, one series per `le`, in seconds.

The metric names are the handlers' (see model-handlers/README.md) and TorchServe's own
`Requests2XX/4XX/5XX`, which a TorchServe serving one model counts per revision. A check
that names a head of a multi-output model reads the per-head counters instead, selected by
the `Head` label (the handlers' metric dimension, which TorchServe exposes under that name).
"""

from __future__ import annotations

from dataclasses import dataclass

from torchrollout.spec.checks import ResolvedCheck, Template, render_query
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.durations import format_duration

LATENCY = "torchrollout_inference_latency_seconds"
LABELED = "torchrollout_labeled"
CORRECT = "torchrollout_correct"
ABS_ERROR_SUM = "torchrollout_abs_error_sum"
RESPONSES = ("Requests2XX", "Requests4XX", "Requests5XX")
HEAD_LABEL = "Head"
HEAD_LABELED = "torchrollout_head_labeled"
HEAD_CORRECT = "torchrollout_head_correct"
HEAD_ABS_ERROR_SUM = "torchrollout_head_abs_error_sum"


@dataclass(frozen=True)
class Target:
    """The revision a query is about."""

    namespace: str
    name: str
    revision: str
    version: str
    interval: str  # a PromQL range, e.g. 30s
    since_start: bool = False
    """Counters with a single sample in the range (a canary whose pods were scraped once)
    count from zero, as the pods started: read them whole rather than wait for a second
    scrape (the fast watch)."""

    def variables(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "revision": self.revision,
            "version": self.version,
            "interval": self.interval,
        }


def rollout_targets(md: ModelDeployment, *, window: float | None = None) -> tuple[Target, Target]:
    """The canary and the stable revision of `md`, as its status names them, measured over
    the analysis interval or over `window` seconds."""
    status, meta = md.status, md.metadata
    interval = format_duration(md.spec.canary.interval_seconds if window is None else window)

    def target(revision: str | None, version: str | None) -> Target:
        return Target(meta.namespace, meta.name, revision or "", version or "", interval)

    canary = target(status.canary_revision, status.canary_version)
    return canary, target(status.stable_revision, status.stable_version)


@dataclass(frozen=True)
class Queries:
    """The PromQL for one check and revision: its value, and its sample count if known.

    With `histogram`, `value` returns one series per `le` bucket (cumulative counts over
    the interval) instead of one number, and the +Inf bucket is the sample count.
    """

    value: str
    samples: str | None = None
    histogram: bool = False


def _increase(metric: str, selector: str, interval: str, *, since_start: bool = False) -> str:
    windowed = f"sum(increase({metric}{selector}[{interval}]))"
    return f"({windowed} or sum({metric}{selector}))" if since_start else windowed


def queries_for(check: ResolvedCheck, target: Target) -> Queries:
    """The PromQL that measures `check` on `target`."""
    if check.query is not None:
        return Queries(value=render_query(check.query, target.variables()))
    selector = f'{{namespace="{target.namespace}",revision="{target.revision}"}}'
    window = target.interval

    def count(metric: str) -> str:  # the selector in effect when called (a head's, below)
        return _increase(metric, selector, window, since_start=target.since_start)

    requests = count(f"{LATENCY}_count")
    if check.head is not None:
        # The spec allows a head only with these templates; the name is an identifier.
        selector = f'{selector[:-1]},{HEAD_LABEL}="{check.head}"}}'
    per_head = check.head is not None
    match check.template:
        case Template.ACCURACY:
            labeled = count(HEAD_LABELED if per_head else LABELED)
            correct = count(HEAD_CORRECT if per_head else CORRECT)
            return Queries(value=f"{correct} / {labeled}", samples=labeled)
        case Template.MEAN_ABSOLUTE_ERROR:
            labeled = count(HEAD_LABELED if per_head else LABELED)
            errors = count(HEAD_ABS_ERROR_SUM if per_head else ABS_ERROR_SUM)
            return Queries(value=f"{errors} / {labeled}", samples=labeled)
        case Template.LATENCY_P99:
            buckets = f"sum by (le) (rate({LATENCY}_bucket{selector}[{window}]))"
            return Queries(value=f"histogram_quantile(0.99, {buckets}) * 1000", samples=requests)
        case Template.LATENCY_MEAN:
            total = count(f"{LATENCY}_sum")
            return Queries(value=f"{total} / {requests} * 1000", samples=requests)
        case Template.LATENCY_DISTRIBUTION:
            counts = f"sum by (le) (increase({LATENCY}_bucket{selector}[{window}]))"
            return Queries(value=counts, histogram=True)
        case Template.ERROR_RATE:
            # Each response class on its own: increase() drops metric names, so one
            # regex over all three would collide. A class never seen counts as zero.
            counted = [f"({count(name)} or vector(0))" for name in RESPONSES]
            everything = " + ".join(counted)
            return Queries(value=f"{counted[-1]} / ({everything})", samples=everything)
    raise AssertionError(f"no PromQL for template {check.template}")  # pragma: no cover
