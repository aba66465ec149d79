"""The rehearsal's JSON report: the specs, every decision, the outcome and the timings.

The report is plain data, so `plot.py` draws from it alone and CI can keep it as an
artifact. Timings are seconds since the canary started (the first decision):
`firstStepSeconds` (the canary took its first step), `firstFailingVerdictSeconds`,
`rollbackSeconds` (the weight back to 0: stable serves 100%), `promotionSeconds` (the
canary serves 100%), and `floorSeconds`: the least the policy allows for that outcome
(failureLimit x interval plus the time to the first step for a rollback; steps x
interval for a promotion), with `decidedOverFloor` the ratio of the two.
"""

from __future__ import annotations

from typing import Any

from torchrollout.rehearsal.loop import Outcome, TickRecord
from torchrollout.rehearsal.resources import Pair, Revision
from torchrollout.spec.status import Phase, Verdict

REPORT_VERSION = 1


def _record(record: TickRecord) -> dict[str, Any]:
    return {
        "t": round(record.t, 3),
        "appliedAt": round(record.applied, 3),
        "phase": str(record.phase),
        "weight": record.weight,
        "canaryShare": record.canary_share,
        "stepIndex": record.step_index,
        "verdict": None if record.verdict is None else str(record.verdict),
        "checks": [
            {
                **c.model_dump(mode="json", by_alias=True, exclude_none=True),
                **(
                    {"stableValue": record.baselines[c.name]}
                    if c.stable_value is None and record.baselines.get(c.name) is not None
                    else {}
                ),
            }
            for c in record.checks
        ],
        "failed": record.failed,
        "inconclusive": record.inconclusive,
        "consecutiveErrors": record.consecutive_errors,
        "message": record.message,
        "events": [
            {"type": e.type, "reason": e.reason, "message": e.message} for e in record.events
        ],
        "transitions": [str(p) for p in record.transitions],
        "measureSeconds": round(record.measure_seconds, 4),
    }


def timings(pair: Pair, outcome: Outcome) -> dict[str, Any]:
    """When the canary took its steps, first failed, and was decided; against the floor."""
    records = outcome.records
    canary = pair.canary.spec.canary
    steps: list[float] = []
    for record in records:
        if record.step_index is not None and len(steps) <= record.step_index:
            steps.append(round(record.applied, 3))
    first_failed = next((r.t for r in records if r.verdict is Verdict.FAILED), None)
    rollback = next(
        (
            r.applied
            for r in records
            if r.phase in {Phase.ROLLING_BACK, Phase.ROLLED_BACK} and r.weight == 0
        ),
        None,
    )
    promotion = outcome.records[-1].applied if outcome.promoted else None
    floor: float | None = None
    decided: float | None = None
    if outcome.promoted:
        floor, decided = len(canary.steps) * canary.interval_seconds, promotion
    elif rollback is not None:
        first_step = steps[0] if steps else 0.0
        floor = canary.analysis.failure_limit * canary.interval_seconds + first_step
        decided = rollback
    return {
        "firstStepSeconds": steps[0] if steps else None,
        "stepEnteredSeconds": steps,
        "firstFailingVerdictSeconds": None if first_failed is None else round(first_failed, 3),
        "rollbackSeconds": None if rollback is None else round(rollback, 3),
        "promotionSeconds": None if promotion is None else round(promotion, 3),
        "decidedSeconds": None if decided is None else round(decided, 3),
        "floorSeconds": floor,
        "decidedOverFloor": None if decided is None or not floor else round(decided / floor, 3),
        "rolloutSeconds": round(outcome.elapsed, 3),
    }


def _revision(side: Revision) -> dict[str, Any]:
    return {
        "file": str(side.path),
        "version": side.version,
        "revision": side.revision,
        "spec": side.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def build_report(
    pair: Pair,
    outcome: Outcome,
    *,
    settings: dict[str, Any],
    traffic: dict[str, Any],
    servers: dict[str, Any],
    setup_seconds: dict[str, float],
    total_seconds: float,
) -> dict[str, Any]:
    """The whole report as JSON-ready data."""
    canary = pair.canary.spec.canary
    return {
        "reportVersion": REPORT_VERSION,
        "resource": {"namespace": pair.namespace, "name": pair.name},
        "stable": _revision(pair.stable),
        "canary": _revision(pair.canary),
        "policy": {
            "steps": canary.steps,
            "intervalSeconds": canary.interval_seconds,
            "failureLimit": canary.analysis.failure_limit,
            "inconclusiveLimit": canary.analysis.inconclusive_limit,
            "checks": [
                {
                    "name": c.name,
                    "unit": c.unit,
                    "threshold": c.describe_threshold(),
                    "min": c.min,
                    "max": c.max,
                }
                for c in canary.analysis.resolved_checks()
            ],
        },
        "settings": settings,
        "servers": servers,
        "ticks": [_record(r) for r in outcome.records],
        "outcome": {
            "result": outcome.reason,
            "promoted": outcome.promoted,
            "phase": str(outcome.phase),
            "message": outcome.message,
            "exitCode": outcome.exit_code,
            "canaryStartedAt": outcome.started_at.isoformat(),
        },
        "timings": {
            **timings(pair, outcome),
            "setupSeconds": {k: round(v, 3) for k, v in setup_seconds.items()},
            "totalSeconds": round(total_seconds, 3),
        },
        "traffic": traffic,
    }
