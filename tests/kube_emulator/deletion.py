"""Deletion: finalizers turn a delete into a deletionTimestamp, propagation policies add the
``foregroundDeletion`` or ``orphan`` finalizer that :mod:`.lifecycle` then honours, and
namespaces go Terminating until the namespace controller (also in lifecycle) empties them.

Mixed into :class:`.operations.Operations`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from . import crds
from .errors import Cause, conflict, forbidden, invalid
from .objects import now_timestamp, served
from .resources import CRD_KEY, NAMESPACE_KEY, ResourceInfo

if TYPE_CHECKING:
    from .operations import Operations

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


class DeletionMixin:
    def delete(
        self: Operations,
        info: ResourceInfo,
        namespace: str,
        name: str,
        options: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete or start deleting; returns the object and whether it is gone already."""
        obj = self.get(info, namespace, name)
        metadata = obj["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") not in (None, metadata["uid"]):
            raise conflict(
                info.group,
                info.plural,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {metadata['uid']}",
            )
        if preconditions.get("resourceVersion") not in (None, metadata["resourceVersion"]):
            raise conflict(
                info.group,
                info.plural,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                f"{metadata['resourceVersion']}",
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise invalid(
                info.group,
                info.kind,
                name,
                [
                    Cause(
                        "FieldValueNotSupported",
                        "propagationPolicy",
                        f'Unsupported value: "{policy}": supported values: "Foreground", '
                        '"Background", "Orphan", "nil"',
                    )
                ],
            )
        if dry_run:
            return served(obj, info), False
        finalizers = list(metadata.get("finalizers") or [])
        if policy == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if policy == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        if info.storage_key == NAMESPACE_KEY:
            return self._start_namespace_deletion(info, obj, finalizers), False
        if info.storage_key == CRD_KEY and not metadata.get("deletionTimestamp"):
            return self._start_crd_deletion(info, obj, finalizers), False
        if not finalizers:
            return served(self.store.remove(info.storage_key, obj), info), True
        if metadata.get("deletionTimestamp") and finalizers == metadata.get("finalizers"):
            return served(obj, info), False
        marked = copy.deepcopy(obj)
        marked_meta = marked["metadata"]
        marked_meta["finalizers"] = finalizers
        if not marked_meta.get("deletionTimestamp"):
            marked_meta["deletionTimestamp"] = now_timestamp()
            marked_meta["deletionGracePeriodSeconds"] = 0
            if "generation" in marked_meta:
                marked_meta["generation"] += 1
        return served(self.store.put(info.storage_key, marked), info), False

    def _start_crd_deletion(
        self: Operations, info: ResourceInfo, crd: dict[str, Any], finalizers: list[str]
    ) -> dict[str, Any]:
        """The CRD registry's own first delete: the cleanup finalizer and a Terminating
        condition, without the grace period and generation bump of other kinds."""
        marked = copy.deepcopy(crd)
        marked["metadata"]["deletionTimestamp"] = now_timestamp()
        if crds.CLEANUP_FINALIZER not in finalizers:
            finalizers.append(crds.CLEANUP_FINALIZER)
        marked["metadata"]["finalizers"] = finalizers
        crds.set_condition(
            marked,
            "Terminating",
            "True",
            "InstanceDeletionPending",
            "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        )
        return served(self.store.put(info.storage_key, marked), info)

    def _start_namespace_deletion(
        self: Operations, info: ResourceInfo, ns: dict[str, Any], finalizers: list[str]
    ) -> dict[str, Any]:
        if ns["metadata"].get("deletionTimestamp"):
            return served(ns, info)
        if ns["metadata"]["name"] in ("default", "kube-system", "kube-public"):
            raise forbidden(
                f'namespaces "{ns["metadata"]["name"]}" is forbidden: this namespace '
                "may not be deleted"
            )
        marked = copy.deepcopy(ns)
        marked["metadata"]["deletionTimestamp"] = now_timestamp()
        if finalizers:
            marked["metadata"]["finalizers"] = finalizers
        marked["status"] = {"phase": "Terminating"}
        return served(self.store.put(info.storage_key, marked), info)

    def finalize_namespace(self: Operations, ns: dict[str, Any]) -> None:
        """The namespace controller's last step: drop ``spec.finalizers``; maybe remove it."""
        info = self.registry.lookup("", "v1", "namespaces")
        assert info is not None
        updated = copy.deepcopy(ns)
        updated.setdefault("spec", {})["finalizers"] = []
        if not updated["metadata"].get("finalizers"):
            self.store.remove(info.storage_key, updated)
        else:
            self.store.put(info.storage_key, updated)
