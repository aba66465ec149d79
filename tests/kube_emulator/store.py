"""In-memory object storage with a global resourceVersion and a bounded event history.

This plays etcd plus the watch cache. Every committed change gets the next resourceVersion
and becomes a :class:`WatchEvent` that is (1) appended to a bounded history, so watches can
resume from an older resourceVersion until it is compacted away (then: 410 Gone), and
(2) pushed synchronously to subscribers: watch streams and the in-process controllers
(garbage collector, CRD registrar, Deployment controller). Everything runs on the
emulator's event loop thread, so the store needs no locks.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

StorageKey = tuple[str, str]  # (group, plural)
ObjectKey = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: StorageKey
    obj: dict[str, Any]  # a snapshot; never mutated after publishing
    old: dict[str, Any] | None = None  # the previous state, for selector transitions

    @property
    def namespace(self) -> str:
        return str(self.obj.get("metadata", {}).get("namespace") or "")


@dataclass(eq=False)
class Subscription:
    """A watch stream's mailbox. ``None`` in the queue means: the stream is dropped."""

    key: StorageKey
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)


Listener = Callable[[WatchEvent], None]


class Store:
    def __init__(self, history_size: int = 10_000) -> None:
        self._objects: dict[StorageKey, dict[ObjectKey, dict[str, Any]]] = {}
        self._by_uid: dict[str, tuple[StorageKey, ObjectKey]] = {}
        self.rv = 1
        self.history: deque[WatchEvent] = deque()
        self.history_size = history_size
        self.compacted_rv = 0  # events with rv <= this are gone: older watches get 410
        self.subscriptions: set[Subscription] = set()
        self.listeners: list[Listener] = []

    # --- reads -------------------------------------------------------------------------
    def get(self, key: StorageKey, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(key, {}).get((namespace, name))

    def items(self, key: StorageKey, namespace: str | None = None) -> list[dict[str, Any]]:
        objects = self._objects.get(key, {})
        return [
            obj for (ns, _), obj in sorted(objects.items()) if namespace is None or ns == namespace
        ]

    def keys(self) -> list[StorageKey]:
        return list(self._objects)

    def all_objects(self) -> list[tuple[StorageKey, dict[str, Any]]]:
        return [(key, obj) for key, objects in self._objects.items() for obj in objects.values()]

    def by_uid(self, uid: str) -> tuple[StorageKey, dict[str, Any]] | None:
        where = self._by_uid.get(uid)
        if where is None:
            return None
        obj = self._objects.get(where[0], {}).get(where[1])
        return None if obj is None else (where[0], obj)

    # --- writes ------------------------------------------------------------------------
    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, key: StorageKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Store (create or replace) an object under a fresh resourceVersion; returns a copy."""
        meta = obj["metadata"]
        where = (meta.get("namespace") or "", meta["name"])
        old = self._objects.get(key, {}).get(where)
        rv = self.next_rv()
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(rv)
        self._objects.setdefault(key, {})[where] = stored
        self._by_uid[meta["uid"]] = (key, where)
        self._publish(WatchEvent(rv, "MODIFIED" if old else "ADDED", key, stored, old))
        return copy.deepcopy(stored)

    def remove(self, key: StorageKey, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        where = (meta.get("namespace") or "", meta["name"])
        old = self._objects.get(key, {}).pop(where, None)
        self._by_uid.pop(meta["uid"], None)
        rv = self.next_rv()
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = str(rv)
        self._publish(WatchEvent(rv, "DELETED", key, final, old))
        return copy.deepcopy(final)

    def drop_storage(self, key: StorageKey) -> None:
        for obj in list(self._objects.pop(key, {}).values()):
            self._by_uid.pop(obj["metadata"]["uid"], None)

    # --- events ------------------------------------------------------------------------
    def _publish(self, event: WatchEvent) -> None:
        self.history.append(event)
        self.compact()
        for subscription in list(self.subscriptions):
            if subscription.key == event.key:
                subscription.queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(event)

    def compact(self) -> None:
        while len(self.history) > max(self.history_size, 0):
            self.compacted_rv = self.history.popleft().rv

    def events_since(self, key: StorageKey, rv: int) -> list[WatchEvent]:
        return [e for e in self.history if e.rv > rv and e.key == key]

    def subscribe(self, key: StorageKey) -> Subscription:
        subscription = Subscription(key)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def drop_watches(self) -> int:
        """Close every open watch stream (a fault injection); returns how many."""
        for subscription in self.subscriptions:
            subscription.queue.put_nowait(None)
        return len(self.subscriptions)
