"""The garbage collector, namespace controller and CRD-cleanup controller in one sweep.

Woken by every stored change (a store listener), it runs shortly after on the event loop and:
- honours the ``orphan`` finalizer (strip owner references from dependents, then the finalizer);
- honours ``foregroundDeletion`` (delete dependents; drop the finalizer once no dependent with
  ``blockOwnerDeletion`` is left);
- deletes dependents all of whose owners are gone (background cascading), and strips dangling
  references when some owners remain;
- empties a terminating namespace (its conditions tell what remains), then finalizes it;
- deletes the objects of a terminating CRD, then drops its cleanup finalizer.
Every deletion goes through :meth:`Operations.delete`, so finalizers of dependents hold.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from typing import Any

from .crds import CLEANUP_FINALIZER, set_condition
from .deletion import FOREGROUND, ORPHAN
from .errors import ApiError
from .objects import now_timestamp
from .operations import Operations
from .resources import CRD_KEY, NAMESPACE_KEY, ResourceInfo
from .store import StorageKey, Store, WatchEvent

logger = logging.getLogger(__name__)


class GarbageCollector:
    def __init__(self, store: Store, ops: Operations, *, delay: float = 0.05) -> None:
        self.store = store
        self.ops = ops
        self.delay = delay
        self._wake: asyncio.Event | None = None
        store.listeners.append(self._on_event)

    def _on_event(self, event: WatchEvent) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        self._wake = asyncio.Event()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.delay)  # let a burst of writes settle first
            try:
                self.sweep()
            except Exception:  # a GC bug must not stop the emulator; the next event retries
                logger.exception("garbage collection sweep failed")

    def _info(self, key: StorageKey) -> ResourceInfo | None:
        versions = self.ops.registry.versions_of(*key)
        return versions[0] if versions else None

    def _fresh(self, key: StorageKey, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        fresh = self.store.get(key, meta.get("namespace") or "", meta["name"])
        if fresh is None or fresh["metadata"]["uid"] != meta["uid"]:
            return None
        return fresh

    def _delete(self, key: StorageKey, obj: dict[str, Any], policy: str = "Background") -> None:
        info = self._info(key)
        fresh = self._fresh(key, obj)
        if info is None or fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        meta = fresh["metadata"]
        try:
            self.ops.delete(
                info, meta.get("namespace") or "", meta["name"], {"propagationPolicy": policy}
            )
        except ApiError as exc:
            logger.debug("GC could not delete %s/%s: %s", key, meta["name"], exc)

    def _edit(
        self, key: StorageKey, obj: dict[str, Any], change: Any, subresource: str | None = None
    ) -> None:
        """Apply ``change(copy)`` and commit it (no precondition: the GC always wins)."""
        info = self._info(key)
        fresh = self._fresh(key, obj)
        if info is None or fresh is None:
            return
        edited = copy.deepcopy(fresh)
        change(edited)
        try:
            self.ops.commit(info, fresh, edited, subresource=subresource)
        except ApiError as exc:
            logger.debug("GC could not update %s/%s: %s", key, fresh["metadata"]["name"], exc)

    def sweep(self) -> None:
        objects = self.store.all_objects()
        alive = {obj["metadata"]["uid"] for _, obj in objects}
        dependents: dict[str, list[tuple[StorageKey, dict[str, Any]]]] = {}
        for key, obj in objects:
            for ref in obj["metadata"].get("ownerReferences") or []:
                dependents.setdefault(ref.get("uid"), []).append((key, obj))

        for key, obj in objects:
            meta = obj["metadata"]
            finalizers = meta.get("finalizers") or []
            if not meta.get("deletionTimestamp"):
                continue
            uid = meta["uid"]
            if ORPHAN in finalizers:
                for dep_key, dep in dependents.get(uid, []):
                    self._edit(dep_key, dep, lambda o, uid=uid: _drop_refs(o, {uid}))
                self._edit(key, obj, lambda o: _drop_finalizer(o, ORPHAN))
            elif FOREGROUND in finalizers:
                deps = dependents.get(uid, [])
                for dep_key, dep in deps:
                    self._delete(dep_key, dep, "Foreground")
                blocking = [
                    dep
                    for _, dep in deps
                    if any(
                        ref.get("uid") == uid and ref.get("blockOwnerDeletion")
                        for ref in dep["metadata"].get("ownerReferences") or []
                    )
                ]
                if not blocking:
                    self._edit(key, obj, lambda o: _drop_finalizer(o, FOREGROUND))
            if key == NAMESPACE_KEY:
                self._sweep_namespace(obj, objects)
            elif key == CRD_KEY and CLEANUP_FINALIZER in finalizers:
                self._sweep_crd(obj)

        for key, obj in objects:
            refs = obj["metadata"].get("ownerReferences") or []
            if not refs:
                continue
            live = [ref for ref in refs if ref.get("uid") in alive]
            if not live:
                self._delete(key, obj)
            elif len(live) < len(refs):
                dead = {ref.get("uid") for ref in refs} - alive
                self._edit(key, obj, lambda o, dead=dead: _drop_refs(o, dead))

    def _sweep_namespace(
        self, ns: dict[str, Any], objects: list[tuple[StorageKey, dict[str, Any]]]
    ) -> None:
        name = ns["metadata"]["name"]
        contents = [(k, o) for k, o in objects if o["metadata"].get("namespace") == name]
        for key, obj in contents:
            self._delete(key, obj)
        remaining = [
            (key, fresh) for key, obj in contents if (fresh := self._fresh(key, obj)) is not None
        ]
        if remaining:
            self._edit(NAMESPACE_KEY, ns, lambda o: _report_remaining(o, remaining), "status")
        elif (ns.get("spec") or {}).get("finalizers"):
            fresh = self._fresh(NAMESPACE_KEY, ns)
            if fresh is not None:
                self.ops.finalize_namespace(fresh)

    def _sweep_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        instances = self.store.items(key)
        if instances:
            self._edit(CRD_KEY, crd, _deleting_instances, "status")
        for obj in instances:
            self._delete(key, obj)
        if not instances:
            self._edit(CRD_KEY, crd, _deleted_instances, "status")
            self._edit(CRD_KEY, crd, lambda o: _drop_finalizer(o, CLEANUP_FINALIZER))


def _deleting_instances(crd: dict[str, Any]) -> None:
    set_condition(
        crd,
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
    )


def _deleted_instances(crd: dict[str, Any]) -> None:
    set_condition(crd, "Terminating", "False", "InstanceDeletionCompleted", "removed all instances")


# The namespace deleter's conditions, and what each says when all is well.
NAMESPACE_CONDITIONS = {
    "NamespaceDeletionDiscoveryFailure": (
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    "NamespaceDeletionGroupVersionParsingFailure": (
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    "NamespaceDeletionContentFailure": (
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": (
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
}


def _report_remaining(
    ns: dict[str, Any], remaining: list[tuple[StorageKey, dict[str, Any]]]
) -> None:
    """The conditions that tell why a namespace stays Terminating (the namespace deleter's
    wording: what remains, and which finalizers hold it)."""
    by_resource = Counter(f"{plural}.{group}" for (group, plural), _ in remaining)
    by_finalizer = Counter(
        finalizer for _, obj in remaining for finalizer in obj["metadata"].get("finalizers") or []
    )
    failing = {
        "NamespaceContentRemaining": (
            "SomeResourcesRemain",
            "Some resources are remaining: "
            + ", ".join(sorted(f"{r} has {n} resource instances" for r, n in by_resource.items())),
        )
    }
    if by_finalizer:
        failing["NamespaceFinalizersRemaining"] = (
            "SomeFinalizersRemain",
            "Some content in the namespace has finalizers remaining: "
            + ", ".join(sorted(f"{f} in {n} resource instances" for f, n in by_finalizer.items())),
        )
    status = ns.setdefault("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    updated = []
    for kind, ok in NAMESPACE_CONDITIONS.items():
        value, (reason, message) = ("True", failing[kind]) if kind in failing else ("False", ok)
        old = conditions.get(kind) or {}
        stamp = old.get("lastTransitionTime") if old.get("status") == value else now_timestamp()
        updated.append(
            {
                "type": kind,
                "status": value,
                "lastTransitionTime": stamp,
                "reason": reason,
                "message": message,
            }
        )
    status["conditions"] = updated


def _drop_finalizer(obj: dict[str, Any], finalizer: str) -> None:
    obj["metadata"]["finalizers"] = [
        f for f in obj["metadata"].get("finalizers") or [] if f != finalizer
    ]


def _drop_refs(obj: dict[str, Any], uids: set[str | None]) -> None:
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") not in uids]
    if refs:
        obj["metadata"]["ownerReferences"] = refs
    else:
        obj["metadata"].pop("ownerReferences", None)
