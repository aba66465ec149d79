"""The metric provider seam: a Protocol, the function that measures a tick, and a fake.

The operator and `rehearse` measure through `measure_tick`, which asks a provider for
each check on the canary and, where the check compares with the baseline, on the
stable revision, and between ticks through `measure_fast` (the critical checks, canary
only). `PrometheusProvider` is the real one; `StaticProvider` answers from a table and is
what tests of the callers use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from torchrollout.engine.fast import fast_checks, fast_window_seconds
from torchrollout.engine.types import CheckMeasurements, Measurement
from torchrollout.metrics.templates import Target, rollout_targets
from torchrollout.spec.checks import ResolvedCheck
from torchrollout.spec.document import ModelDeployment


class MetricProvider(Protocol):
    """Measures one check on one revision; never raises for what the backend answers."""

    def measure(self, check: ResolvedCheck, target: Target) -> Measurement: ...


def measure_tick(
    provider: MetricProvider,
    checks: Sequence[ResolvedCheck],
    *,
    canary: Target,
    stable: Target | None,
) -> dict[str, CheckMeasurements]:
    """Every check measured for one analysis tick."""
    measured = {}
    for check in checks:
        baseline = None
        if check.compares_with_stable and stable is not None:
            baseline = provider.measure(check, stable)
        measured[check.name] = CheckMeasurements(
            canary=provider.measure(check, canary), stable=baseline
        )
    return measured


def measure_fast(provider: MetricProvider, md: ModelDeployment) -> dict[str, CheckMeasurements]:
    """The fast watch's readings: each critical check on the canary over the short window."""
    canary, _ = rollout_targets(md, window=fast_window_seconds(md.spec))
    young = replace(canary, since_start=True)  # a canary scraped once is read whole
    return {c.name: CheckMeasurements(provider.measure(c, young)) for c in fast_checks(md.spec)}


@dataclass
class StaticProvider:
    """Answers from a table keyed by (check name, revision); no data otherwise."""

    table: Mapping[tuple[str, str], Measurement] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def measure(self, check: ResolvedCheck, target: Target) -> Measurement:
        self.calls.append((check.name, target.revision))
        found = self.table.get((check.name, target.revision))
        return found if found is not None else Measurement.no_data("no data in the table")
