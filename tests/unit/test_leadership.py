"""Leader election on a Lease: who may take it, judged on this replica's own clock."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.client.exceptions import ApiException

from torchrollout.operator.leadership import ElectionSettings, LeaseElector


class FakeLeases:
    """CoordinationV1Api's Lease calls on one stored Lease, with resourceVersion conflicts."""

    def __init__(self) -> None:
        self.lease: Any = None
        self.version = 0

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        if self.lease is None:
            raise ApiException(status=404)
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace: str, body: Any) -> None:
        if self.lease is not None:
            raise ApiException(status=409)
        self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> None:
        if body.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409)
        self._store(body)

    def _store(self, body: Any) -> None:
        self.version += 1
        body.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(body)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def elector(api: FakeLeases, identity: str, clock: Clock) -> LeaseElector:
    settings = ElectionSettings("op", "ops", identity=identity, lease_seconds=15)
    return LeaseElector(api, settings, clock=clock)  # type: ignore[arg-type]


def test_one_leads_the_other_takes_over_only_after_the_lease_went_unrenewed() -> None:
    api, clock = FakeLeases(), Clock()
    first, second = elector(api, "a", clock), elector(api, "b", clock)
    assert first.try_acquire()
    assert not second.try_acquire()
    clock.now = 10
    assert first.try_acquire()  # renewed: the version moves, the standby's count restarts
    assert not second.try_acquire()
    clock.now = 24  # 14 s since it last saw a renewal
    assert not second.try_acquire()
    clock.now = 26
    assert second.try_acquire()
    assert api.lease.spec.holder_identity == "b" and api.lease.spec.lease_transitions == 1
    assert not first.try_acquire()  # the old leader sees it lost


def test_a_released_lease_is_taken_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    first, second = elector(api, "a", clock), elector(api, "b", clock)
    assert first.try_acquire()
    first.release()
    assert second.try_acquire()


def test_two_writers_at_once_one_wins() -> None:
    api, clock = FakeLeases(), Clock()
    first, second = elector(api, "a", clock), elector(api, "b", clock)
    assert first.try_acquire()
    api.lease.spec.holder_identity = None  # released; both look at the same version
    seen = api.read_namespaced_lease("op", "ops")
    assert second.try_acquire()
    seen.spec.holder_identity = "a"
    assert not first._write(seen)  # its write carries the old resourceVersion: conflict
