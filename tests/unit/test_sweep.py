"""The operator's sweep: between events, only resources with a change no event has
reconciled yet are woken; settled ones sleep until they are due."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

import kopf
import pytest

from torchrollout.operator import handlers
from torchrollout.spec.document import ANNOTATION_PREFIX

SETTLED: dict[str, Any] = {
    "metadata": {"name": "settled", "generation": 3, "annotations": {}},
    "status": {"observedGeneration": 3},
}
CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "settled": (SETTLED, False),
    "new spec": (
        {"metadata": {"name": "edited", "generation": 4}, "status": {"observedGeneration": 3}},
        True,
    ),
    "promote asked": (
        {
            "metadata": {
                "name": "asked",
                "generation": 3,
                "annotations": {f"{ANNOTATION_PREFIX}promote": "1"},
            },
            "status": {"observedGeneration": 3},
        },
        True,
    ),
    "promote handled": (
        {
            "metadata": {
                "name": "handled",
                "generation": 3,
                "annotations": {f"{ANNOTATION_PREFIX}promote": "1"},
            },
            "status": {"observedGeneration": 3, "handledRequests": {"promote": "1"}},
        },
        False,
    ),
    # A status written by hand (it is ours alone, but kubectl can write it) stops nothing.
    "status not an object": (
        {"metadata": {"name": "odd", "generation": 3}, "status": "broken"},
        True,
    ),
    "handled requests not an object": (
        {
            "metadata": {
                "name": "odder",
                "generation": 3,
                "annotations": {f"{ANNOTATION_PREFIX}abort": "1"},
            },
            "status": {"observedGeneration": 3, "handledRequests": ["abort"]},
        },
        True,
    ),
}


def test_the_sweep_wakes_only_the_resources_with_an_unreconciled_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "TIMER_SECONDS", 0.01)
    runtime = handlers.Runtime(reconciler=cast(Any, None))
    later = time.monotonic() + 600

    async def sweep_once() -> None:
        runtime.loop = asyncio.get_running_loop()
        for case, (raw, _) in CASES.items():
            key = ("ns", case)
            runtime.bodies[key] = kopf.Body(raw)
            runtime.wakes[key] = asyncio.Event()
            runtime.next_run[key] = later
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handlers._sweep(runtime), timeout=0.1)
        await asyncio.sleep(0)  # the wakes are set through call_soon_threadsafe

    asyncio.run(sweep_once())
    for case, (_, woken) in CASES.items():
        key = ("ns", case)
        assert (runtime.next_run[key] < later) is woken, case
        assert runtime.wakes[key].is_set() is woken, case
    runtime.executor.shutdown()
