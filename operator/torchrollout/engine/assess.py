"""Judging one check: a measurement pair and a threshold in, a verdict with its reason out.

`assess_check` never raises. Odd inputs (NaN, negative sample counts, a missing stable
value for a relative threshold) become Error or Inconclusive with a message saying why.
Distribution checks (latency-distribution) are judged by `engine.distribution` instead.
`tick_verdict` folds a tick's check verdicts into one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torchrollout.engine.distribution import assess_distribution
from torchrollout.engine.types import CheckMeasurements, Measurement
from torchrollout.spec.checks import ResolvedCheck
from torchrollout.spec.status import CheckStatus, Verdict


def _usable(m: Measurement) -> float | None:
    if m.verdict is not None or m.value is None or math.isnan(m.value):
        return None
    return m.value


def assess_check(check: ResolvedCheck, measured: CheckMeasurements | None) -> CheckStatus:
    """The verdict of `check` for one tick."""
    result = CheckStatus(
        name=check.name, verdict=Verdict.INCONCLUSIVE, threshold=check.describe_threshold()
    )
    if measured is None:
        return result.model_copy(update={"message": "no measurement this tick"})
    if check.compares_distributions:
        return assess_distribution(check, measured)
    canary, stable = measured.canary, measured.stable
    stable_value = _usable(stable) if stable is not None else None
    result = result.model_copy(update={"samples": canary.samples, "stable_value": stable_value})

    if canary.verdict is Verdict.ERROR:
        return result.model_copy(update={"verdict": Verdict.ERROR, "message": canary.message})
    if canary.samples is not None and canary.samples < 0:
        message = f"invalid sample count {canary.samples}; a count cannot be negative"
        return result.model_copy(update={"verdict": Verdict.ERROR, "message": message})
    if canary.value is not None and math.isinf(canary.value):
        message = f"the canary value is {canary.value}; check the query's arithmetic"
        return result.model_copy(update={"verdict": Verdict.ERROR, "message": message})
    value = _usable(canary)
    if value is None:
        message = canary.message or "no data for the canary"
        return result.model_copy(update={"message": message})
    result = result.model_copy(update={"value": value})
    if canary.samples is not None and canary.samples < check.min_samples:
        message = f"{canary.samples} samples, fewer than the {check.min_samples} required"
        return result.model_copy(update={"message": message})

    failures = _absolute_failures(check, value)
    missing_stable = ""
    if check.compares_with_stable:
        if stable_value is None:
            why = stable.message if stable is not None and stable.message else "no data"
            missing_stable = f"no stable baseline to compare with ({why})"
        else:
            failures += _relative_failures(check, value, stable_value)
    if failures:
        return result.model_copy(update={"verdict": Verdict.FAILED, "message": "; ".join(failures)})
    if missing_stable:
        return result.model_copy(update={"message": missing_stable})
    return result.model_copy(update={"verdict": Verdict.SUCCESSFUL, "message": ""})


def _absolute_failures(check: ResolvedCheck, value: float) -> list[str]:
    failures = []
    if check.min is not None and value < check.min:
        failures.append(f"{value:g} is below the minimum {check.min:g}")
    if check.max is not None and value > check.max:
        failures.append(f"{value:g} is above the maximum {check.max:g}")
    return failures


def _relative_failures(check: ResolvedCheck, value: float, stable: float) -> list[str]:
    failures = []
    drop = check.max_drop_vs_stable
    if drop is not None and value < stable - drop:
        failures.append(
            f"{value:g} is {stable - value:g} below stable {stable:g} (allowed {drop:g})"
        )
    ratio = check.max_ratio_vs_stable
    if ratio is not None and value > stable * ratio:
        times = f"{value / stable:.2f}x" if stable > 0 else "above"
        failures.append(f"{value:g} is {times} stable {stable:g} (allowed {ratio:g}x)")
    return failures


def tick_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """One verdict for a tick: any Failed, else any Error, else any Inconclusive."""
    seen = set(verdicts)
    for verdict in (Verdict.FAILED, Verdict.ERROR, Verdict.INCONCLUSIVE):
        if verdict in seen:
            return verdict
    return Verdict.SUCCESSFUL
