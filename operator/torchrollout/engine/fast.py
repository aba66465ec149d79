"""The fast watch: between analysis ticks, a plainly broken canary is rolled back at once.

While a canary has traffic, its critical error-rate and accuracy checks are measured every
`canary.fastInterval` over a window of twice that. A reading is catastrophic when the error
rate reaches `analysis.catastrophicErrorRate`, or accuracy falls `CATASTROPHIC_ACCURACY_MARGIN`
below the check's minimum, on at least `fast_min_samples` samples (the check's floor scaled
to the window, never under `FAST_SAMPLE_FLOOR`), so a cold canary with a couple of requests
is never rolled back on noise. Anything short of that (no data, an error, a merely bad
value) is left to the next tick. Pure: the measurements come in, a reason (or None) goes out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from torchrollout.engine.types import CheckMeasurements
from torchrollout.spec.checks import ResolvedCheck, Template
from torchrollout.spec.status import ModelDeploymentStatus, Phase

if TYPE_CHECKING:
    from torchrollout.spec.resource import ModelDeploymentSpec

FAST_TEMPLATES = frozenset({Template.ERROR_RATE, Template.ACCURACY})
CATASTROPHIC_ACCURACY_MARGIN = 0.5
# A fast reading decides on at least this many requests, whatever the check's own floor.
FAST_SAMPLE_FLOOR = 5


def fast_checks(spec: ModelDeploymentSpec) -> list[ResolvedCheck]:
    """The checks the fast watch measures: critical error-rate and accuracy checks."""
    return [
        c
        for c in spec.canary.analysis.resolved_checks()
        if c.critical and c.template in FAST_TEMPLATES
    ]


def fast_window_seconds(spec: ModelDeploymentSpec) -> float:
    """The range a fast reading covers: two fast intervals, so it spans two scrapes."""
    return 2 * spec.canary.fast_interval_seconds


def fast_min_samples(spec: ModelDeploymentSpec, check: ResolvedCheck) -> int:
    """The check's sample floor scaled from the analysis interval to the fast window."""
    scaled = check.min_samples * fast_window_seconds(spec) / spec.canary.interval_seconds
    return max(FAST_SAMPLE_FLOOR, math.ceil(scaled))


def watching(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> bool:
    """Whether the fast watch runs: a canary taking traffic, not paused, with fast checks."""
    return (
        status.phase is Phase.PROGRESSING
        and status.step_index is not None
        and not spec.paused
        and bool(fast_checks(spec))
    )


def catastrophe(spec: ModelDeploymentSpec, measured: Mapping[str, CheckMeasurements]) -> str | None:
    """Why the canary must go now, or None: the first catastrophic reading among the fast
    checks, naming the check, its value, the threshold and the window."""
    window = f"{fast_window_seconds(spec):g}s"
    for check in fast_checks(spec):
        reading = measured.get(check.name)
        if reading is None:
            continue
        canary = reading.canary
        if canary.verdict is not None or canary.value is None or math.isnan(canary.value):
            continue
        floor = fast_min_samples(spec, check)
        if canary.samples is None or canary.samples < floor:
            continue
        limit = _catastrophic_limit(spec, check)
        if limit is None:
            continue
        bound, worse = limit
        if (canary.value >= bound) if worse == "above" else (canary.value < bound):
            side = "at or above" if worse == "above" else "below"
            return (
                f"{check.name} {canary.value:g} over the last {window} ({canary.samples} "
                f"requests) is {side} the catastrophic {bound:g}"
            )
    return None


def _catastrophic_limit(
    spec: ModelDeploymentSpec, check: ResolvedCheck
) -> tuple[float, str] | None:
    if check.template == Template.ERROR_RATE:
        return spec.canary.analysis.catastrophic_error_rate, "above"
    if check.template == Template.ACCURACY and check.min is not None:
        return check.min - CATASTROPHIC_ACCURACY_MARGIN, "below"
    return None
