"""Restart safety: every status the scenarios pass through, decided again, changes nothing.

An operator restarted right after writing a status reads it back and decides again,
possibly re-measuring the same tick. That must give no second transition, no second
event and no second count, in every phase.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.builders import resource
from tests.unit.test_lifecycle import SCENARIOS
from torchrollout.engine import Observation, decide
from torchrollout.simulation import SIMULATION_START, parse_ticks, replay


def _snapshots() -> list[Any]:
    cases = []
    for name, spec, ticks, _ in SCENARIOS:
        md = resource(**spec)
        parsed = list(parse_ticks(json.dumps(t) for t in ticks))
        for outcome in replay(md, parsed):
            phase = outcome.status.phase
            cases.append(pytest.param(md, outcome, id=f"{name} @t={outcome.tick.t:g} {phase}"))
    return cases


@pytest.mark.parametrize(("md", "outcome"), _snapshots())
def test_deciding_again_after_a_restart_changes_nothing(md: Any, outcome: Any) -> None:
    tick = outcome.tick
    now = SIMULATION_START + timedelta(seconds=tick.t)
    annotations = {**md.metadata.annotations, **tick.annotations}
    current = md.model_copy(
        update={
            "status": outcome.status,
            "metadata": md.metadata.model_copy(update={"annotations": annotations}),
        }
    )
    observation = Observation(canary_ready=tick.canary_ready, stable_ready=tick.stable_ready)

    again = decide(current, observation=observation, measurements=tick.checks, now=now)

    assert again.transitions == ()
    assert again.events == ()
    assert again.status == outcome.status
    # and the engine is a function: the same inputs give the same decision
    assert decide(current, observation=observation, measurements=tick.checks, now=now) == again
