"""Rehearsal: a real canary on one machine, judged by the operator's own engine and PromQL.

`torchrollout rehearse` builds both revisions' archives, starts a TorchServe per revision
and a Prometheus on loopback, replays labeled traffic split by the canary weight, and runs
`decide` every interval on `measure_tick` with the real `PrometheusProvider`.

Modules: `resources` (the two YAMLs, relative sources), `traffic` (the request file, the
router, the load generator), `platform` (the weight/readiness seam: local processes and a
fake), `servers` (archives, TorchServe, Prometheus, warm-up), `loop` (decide → apply,
clock), `session` (the ExitStack that runs it all), `signals` (Ctrl-C), `view` (live panel or plain
lines), `report` (JSON), `plot` (PNG).
"""

from __future__ import annotations

from torchrollout.rehearsal.loop import FakeClock, MonotonicClock, Outcome, RolloutLoop
from torchrollout.rehearsal.platform import FakePlatform, LocalPlatform, RolloutPlatform
from torchrollout.rehearsal.resources import Pair, RehearsalError, load_pair

__all__ = [
    "FakeClock",
    "FakePlatform",
    "LocalPlatform",
    "MonotonicClock",
    "Outcome",
    "Pair",
    "RehearsalError",
    "RolloutLoop",
    "RolloutPlatform",
    "load_pair",
]
