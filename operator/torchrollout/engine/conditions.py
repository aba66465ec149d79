"""Kubernetes conditions derived from a status: Ready, Progressing, Degraded.

A condition keeps its `lastTransitionTime` unless its status really changes, as the API
conventions ask; reason and message follow the phase. Condition types the engine does
not own (ArchiveReady, written by the operator) are kept as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torchrollout.spec.status import Condition, ModelDeploymentStatus, Phase

if TYPE_CHECKING:
    from datetime import datetime

OWNED = ("Ready", "Progressing", "Degraded")
_MOVING = frozenset({Phase.BUILDING, Phase.PROGRESSING, Phase.PROMOTING, Phase.ROLLING_BACK})
_DEGRADED = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED})

TruthValue = Literal["True", "False", "Unknown"]


def _wanted(
    status: ModelDeploymentStatus, *, stable_ready: bool
) -> dict[str, tuple[TruthValue, str, str]]:
    phase = status.phase
    serving = phase not in {Phase.PENDING, Phase.BUILDING, Phase.FAILED}
    if serving and stable_ready:
        ready: tuple[TruthValue, str, str] = (
            "True",
            "StableAvailable",
            f"version {status.stable_version} is serving",
        )
    elif serving:
        ready = (
            "False",
            "StableUnavailable",
            f"the stable revision {status.stable_revision} has no ready replicas",
        )
    else:
        ready = ("False", str(phase), status.message)

    progressing: tuple[TruthValue, str, str] = (
        ("True", str(phase), status.message)
        if phase in _MOVING
        else ("False", str(phase), status.message)
    )
    if phase in _DEGRADED:
        reason = "ProgressDeadlineExceeded" if phase is Phase.FAILED else "CanaryRejected"
        degraded: tuple[TruthValue, str, str] = (
            "True",
            reason,
            status.rollback_reason or status.message,
        )
    elif phase is Phase.PAUSED and status.pause_reason in {"Error", "Inconclusive"}:
        degraded = ("True", f"Analysis{status.pause_reason}", status.message)
    else:
        degraded = ("False", "AsExpected", "")
    return {"Ready": ready, "Progressing": progressing, "Degraded": degraded}


def reconcile_conditions(
    status: ModelDeploymentStatus, *, stable_ready: bool, generation: int | None, now: datetime
) -> list[Condition]:
    """The status's conditions brought in line with its phase."""
    existing = {c.type: c for c in status.conditions}
    wanted = _wanted(status, stable_ready=stable_ready)
    result = [c for c in status.conditions if c.type not in OWNED]
    for type_ in OWNED:
        truth, reason, message = wanted[type_]
        old = existing.get(type_)
        changed = old is None or old.status != truth
        result.append(
            Condition(
                type=type_,
                status=truth,
                reason=reason,
                message=message,
                last_transition_time=now if changed or old is None else old.last_transition_time,
                observed_generation=generation,
            )
        )
    return sorted(
        result,
        key=lambda c: (c.type not in OWNED, OWNED.index(c.type) if c.type in OWNED else 0, c.type),
    )
