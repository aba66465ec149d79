"""The canary decision engine: pure functions from status and measurements to decisions.

Nothing here imports kopf, kubernetes, httpx, subprocess or a clock (an import-linter
contract checks it): callers pass `now` and what they measured, and apply the Decision.
"""

from __future__ import annotations

from torchrollout.engine.assess import assess_check, tick_verdict
from torchrollout.engine.decide import (
    decide,
    desired_weight,
    rollback_window,
    seconds_until_tick,
    tick_due,
)
from torchrollout.engine.types import (
    CheckMeasurements,
    Decision,
    Event,
    Histogram,
    Measurement,
    Observation,
)

__all__ = [
    "CheckMeasurements",
    "Decision",
    "Event",
    "Histogram",
    "Measurement",
    "Observation",
    "assess_check",
    "decide",
    "desired_weight",
    "rollback_window",
    "seconds_until_tick",
    "tick_due",
    "tick_verdict",
]
