"""`torchrollout simulate`: replay recorded or imagined ticks through the decision engine.

A ticks file holds one JSON object per line:

    {"t": 30, "canaryReady": true, "stableReady": true, "annotations": {...},
     "checks": {"accuracy": {"canary": 0.91, "stable": 0.92, "samples": 120},
                "latency-p99": {"error": "Prometheus unreachable"}}}

`t` is seconds since the canary started; a check missing from `checks` has no data that
tick. A distribution check (latency-distribution) takes each revision's latency histogram
instead of a value, as cumulative bucket counts by upper bound in seconds:
`{"canaryBuckets": {"0.05": 40, "0.1": 290, "+Inf": 300}, "stableBuckets": {...}}`.

Each line is one analysis tick: the engine decides exactly as the operator would, on a
platform that applies weights and scales at once (so a rollback or a promotion
completes within its tick, as the `transitions` of the output show).

The resource's `status` is the starting point. Written by hand, it may name versions
only: a `stableVersion` without `stableRevision` (and history entries without
`revision`) stand for this spec at that version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from torchrollout.engine import (
    CheckMeasurements,
    Decision,
    Histogram,
    Measurement,
    Observation,
    decide,
)
from torchrollout.errors import TicksError
from torchrollout.spec.document import ModelDeployment, compute_revision, parse_model_deployment
from torchrollout.spec.status import ModelDeploymentStatus, Phase

SIMULATION_START = datetime(2026, 1, 1, tzinfo=UTC)
_SETTLE_LIMIT = 8


@dataclass(frozen=True)
class Tick:
    """One line of a ticks file."""

    t: float
    canary_ready: bool = True
    stable_ready: bool = True
    annotations: dict[str, str] = field(default_factory=dict)
    checks: dict[str, CheckMeasurements] = field(default_factory=dict)


def load_resource(document: dict[str, Any], *, source: str = "") -> ModelDeployment:
    """A ModelDeployment whose hand-written status has its revisions filled in."""
    spec = parse_model_deployment({**document, "status": {}}, source=source).spec
    status = dict(document.get("status") or {})

    def revision_of(version: str) -> str:
        if version == spec.model.version:
            return compute_revision(spec)
        model = spec.model.model_copy(update={"version": version})
        return compute_revision(spec.model_copy(update={"model": model}))

    stable = status.get("stableVersion")
    if isinstance(stable, str):
        status.setdefault("stableRevision", revision_of(stable))
        status.setdefault("phase", Phase.SUCCEEDED.value)
    history = status.get("history")
    if isinstance(history, list):
        status["history"] = [
            {"revision": revision_of(e["version"]), **e}
            if isinstance(e, dict) and isinstance(e.get("version"), str)
            else e
            for e in history
        ]
    return parse_model_deployment({**document, "status": status}, source=source)


def parse_ticks(lines: Iterable[str]) -> Iterator[Tick]:
    """Ticks from JSON lines; blank lines and lines starting with # are skipped."""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TicksError(number, f"not JSON: {exc.msg} at column {exc.colno}") from exc
        yield _tick(number, raw)


def _tick(number: int, raw: Any) -> Tick:
    if not isinstance(raw, dict):
        raise TicksError(number, "each line must be a JSON object")
    unknown = set(raw) - {"t", "canaryReady", "stableReady", "annotations", "checks"}
    if unknown:
        raise TicksError(
            number,
            f"unknown keys {sorted(unknown)}; use t, canaryReady, stableReady, annotations, checks",
        )
    t = raw.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise TicksError(
            number, f'"t" must be seconds since the canary started (a number >= 0), got {t!r}'
        )
    flags = {}
    for key in ("canaryReady", "stableReady"):
        value = raw.get(key, True)
        if not isinstance(value, bool):
            raise TicksError(number, f'"{key}" must be true or false, got {value!r}')
        flags[key] = value
    annotations = raw.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise TicksError(number, '"annotations" must map names to strings')
    checks = raw.get("checks", {})
    if not isinstance(checks, dict):
        raise TicksError(number, '"checks" must map check names to measurements')
    return Tick(
        t=float(t),
        canary_ready=flags["canaryReady"],
        stable_ready=flags["stableReady"],
        annotations=annotations,
        checks={name: _check(number, name, value) for name, value in checks.items()},
    )


def _number(number: int, where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TicksError(number, f"{where} must be a number or null, got {value!r}")
    return float(value)


def _check(number: int, name: str, raw: Any) -> CheckMeasurements:
    if not isinstance(raw, dict):
        raise TicksError(number, f'check "{name}" must be an object')
    if "error" in raw:
        return CheckMeasurements(canary=Measurement.error(str(raw["error"])))
    samples = raw.get("samples")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)):
        raise TicksError(number, f'check "{name}": "samples" must be an integer, got {samples!r}')
    canary = _number(number, f'check "{name}": "canary"', raw.get("canary"))
    stable = _number(number, f'check "{name}": "stable"', raw.get("stable"))
    histograms = {
        side: _histogram(number, f'check "{name}": "{side}Buckets"', raw.get(f"{side}Buckets"))
        for side in ("canary", "stable")
    }
    canary_histogram, stable_histogram = histograms["canary"], histograms["stable"]
    if canary_histogram is not None:
        measured = Measurement.of_histogram(canary_histogram)
    elif canary is None:
        measured = Measurement.no_data("no canary value", samples)
    else:
        measured = Measurement.of(canary, samples)
    if stable_histogram is not None:
        baseline: Measurement | None = Measurement.of_histogram(stable_histogram)
    else:
        baseline = None if stable is None else Measurement.of(stable)
    return CheckMeasurements(canary=measured, stable=baseline)


def _histogram(number: int, where: str, value: Any) -> Histogram | None:
    """Cumulative counts by upper bound, e.g. {"0.05": 40, "+Inf": 300}; +Inf is required."""
    if value is None:
        return None
    problem = f'{where} must map upper bounds in seconds to cumulative counts, with "+Inf"'
    if not isinstance(value, dict):
        raise TicksError(number, f"{problem}, got {value!r}")
    counts = {}
    for bound, count in value.items():
        try:
            le = float(bound)
        except ValueError:
            le = math.nan
        if math.isnan(le):
            raise TicksError(number, f"{problem}; {bound!r} is not a number")
        counted = _number(number, f"{where}[{bound!r}]", count)
        if counted is None or le in counts:
            raise TicksError(number, f"{problem}; {bound!r} is null or repeated")
        counts[le] = counted
    if math.inf not in counts:
        raise TicksError(number, f"{problem}; it has no +Inf")
    return Histogram.of(counts)


@dataclass(frozen=True)
class TickOutcome:
    """The decisions one tick led to (the first, then any made while settling)."""

    tick: Tick
    decisions: tuple[Decision, ...]

    @property
    def status(self) -> ModelDeploymentStatus:
        return self.decisions[-1].status

    def summary(self) -> dict[str, Any]:
        """The JSON object `torchrollout simulate` prints for the tick."""
        final = self.status
        checks = [c for d in self.decisions for c in d.checks]
        return {
            "t": self.tick.t,
            "phase": str(final.phase),
            "canaryWeight": self.decisions[-1].weight,
            "stepIndex": final.step_index,
            "verdicts": {c.name: str(c.verdict) for c in checks},
            "reason": final.message,
            "stableVersion": final.stable_version,
            "canaryVersion": final.canary_version,
            "failed": final.analysis.failed,
            "inconclusive": final.analysis.inconclusive,
            "consecutiveErrors": final.analysis.consecutive_errors,
            "transitions": [str(p) for d in self.decisions for p in d.transitions],
            "events": [f"{e.reason}: {e.message}" for d in self.decisions for e in d.events],
            "checks": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in checks],
            "ignored": [note for d in self.decisions for note in d.ignored],
        }


def replay(
    resource: ModelDeployment, ticks: Iterable[Tick], *, start: datetime = SIMULATION_START
) -> Iterator[TickOutcome]:
    """Each tick decided in turn, the status carried from one to the next."""
    status = resource.status
    for tick in ticks:
        now = start + timedelta(seconds=tick.t)
        metadata = resource.metadata.model_copy(
            update={"annotations": {**resource.metadata.annotations, **tick.annotations}}
        )
        observation = Observation(canary_ready=tick.canary_ready, stable_ready=tick.stable_ready)
        current = resource.model_copy(update={"metadata": metadata, "status": status})
        decision = decide(current, observation=observation, measurements=tick.checks, now=now)
        decisions = [decision]
        # The simulated platform applies each decision at once, so transitional phases
        # (rolling back, promoting) finish within the tick, as on a fast cluster.
        while decision.requeue_after == 0 and len(decisions) < _SETTLE_LIMIT:
            current = current.model_copy(update={"status": decision.status})
            decision = decide(current, observation=observation, now=now)
            decisions.append(decision)
        status = decision.status
        yield TickOutcome(tick, tuple(decisions))


def outcome_exit_code(phase: str) -> int:
    """0 when the stable version serves everything, 1 after a rollback or failure, 3 undecided."""
    if phase == Phase.SUCCEEDED:
        return 0
    if phase in {Phase.ROLLED_BACK, Phase.FAILED}:
        return 1
    return 3
