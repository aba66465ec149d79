"""The platform seam of a rehearsal: set the traffic weight, observe readiness.

The operator drives Kubernetes (replica counts or an HTTPRoute) through its routers; a
rehearsal drives local TorchServe processes. Both answer the engine's two questions the
same way, so the loop in `loop.py` runs `decide` exactly as the operator does:

- `set_weight` sends `weight` percent of traffic to the canary revision and the rest to the
  stable one (and copies `mirror` percent to the canary), and returns the weight really
  achieved (Flagger's lesson: read the split
  back instead of trusting memory). A promotion makes the former canary the stable
  revision with weight 0, so all traffic reaches its server; a rollback keeps the old
  stable revision at weight 0.
- `observe` says whether each revision is serving (`Observation`).

`LocalPlatform` is the real one (TorchServe processes behind the load generator's
`Router`); `FakePlatform` applies everything at once and is the seam the loop's tests use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from torchrollout.engine import Observation
from torchrollout.rehearsal.traffic import Route, Router


class RolloutPlatform(Protocol):
    """Where the revisions run and how traffic is split between them."""

    def set_weight(self, *, stable: str, canary: str | None, weight: int, mirror: int = 0) -> int:
        """Route `weight` percent to revision `canary`, the rest to `stable`, and copy `mirror`
        percent to `canary`; the weight set."""
        ...

    def observe(self, *, stable: str, canary: str | None) -> Observation:
        """Readiness of the stable revision and of the canary revision (if any)."""
        ...


class LocalPlatform:
    """TorchServe processes on loopback, one per revision, behind a `Router`.

    `urls` maps each revision to its TorchServe's inference URL; a revision is ready when
    its /ping answers Healthy.
    """

    def __init__(self, router: Router, *, timeout: float = 2.0) -> None:
        self.router = router
        self._client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def set_weight(self, *, stable: str, canary: str | None, weight: int, mirror: int = 0) -> int:
        return self.router.set(Route(stable, canary, weight, mirror)).weight

    def _ready(self, revision: str | None) -> bool:
        url = self.router.urls.get(revision or "")
        if url is None:
            return False
        try:
            answer = self._client.get(f"{url}/ping")
        except httpx.HTTPError:
            return False
        return answer.is_success and "Healthy" in answer.text

    def observe(self, *, stable: str, canary: str | None) -> Observation:
        return Observation(
            canary_ready=canary is not None and self._ready(canary),
            stable_ready=self._ready(stable),
        )


@dataclass
class FakePlatform:
    """Applies weights at once; `ready` says which revisions serve. For tests."""

    ready: Mapping[str, bool] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)

    def set_weight(self, *, stable: str, canary: str | None, weight: int, mirror: int = 0) -> int:
        if canary is None:
            weight = mirror = 0
        route = Route(stable, canary, weight, mirror)
        if not self.routes or self.routes[-1] != route:
            self.routes.append(route)
        return route.weight

    def observe(self, *, stable: str, canary: str | None) -> Observation:
        return Observation(
            canary_ready=canary is not None and self.ready.get(canary, True),
            stable_ready=self.ready.get(stable, True),
        )
