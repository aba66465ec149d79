"""CustomResourceDefinitions: their own validation, defaults and status, and the listener that
serves (and stops serving) their resources as CRDs come and go.

A CRD's create returns it not yet Established, as the real server does; the registrar then
accepts its names and establishes it at once (a second write, which watchers see), and
serves its resources. Deleting a CRD adds the ``customresourcecleanup.apiextensions.k8s.io``
finalizer (see :mod:`.deletion`): the lifecycle module deletes its objects first, as the real
CRD finalizer controller does.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .errors import Cause
from .objects import now_timestamp
from .resources import CRD_KEY, Registry
from .store import Store, WatchEvent

if TYPE_CHECKING:
    from .operations import Operations

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


def default_crd(crd: dict[str, Any]) -> None:
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("scope", "Namespaced")
    spec.setdefault("conversion", {"strategy": "None"})
    for version in spec.get("versions") or []:
        if isinstance(version, dict):
            version.setdefault("served", True)
            version.setdefault("storage", False)


def validate_crd(crd: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural = spec.get("group"), names.get("plural")
    for field, value in (
        ("spec.group", group),
        ("spec.names.plural", plural),
        ("spec.names.kind", names.get("kind")),
    ):
        if not value:
            causes.append(Cause("FieldValueRequired", field, "Required value"))
    if group and plural and crd["metadata"].get("name") != f"{plural}.{group}":
        causes.append(
            Cause(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{crd["metadata"].get("name")}": must be '
                'spec.names.plural+"."+spec.group',
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            Cause(
                "FieldValueNotSupported",
                "spec.scope",
                f'Unsupported value: "{spec.get("scope")}": supported values: '
                '"Cluster", "Namespaced"',
            )
        )
    versions = spec.get("versions") or []
    if not versions:
        causes.append(
            Cause(
                "FieldValueInvalid",
                "spec.versions",
                "Invalid value: null: must have exactly one version marked as storage version",
            )
        )
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            Cause(
                "FieldValueInvalid",
                "spec.versions",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    for index, version in enumerate(versions):
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        where = f"spec.versions[{index}].schema.openAPIV3Schema"
        if not isinstance(schema, dict):
            causes.append(
                Cause("FieldValueRequired", where, "Required value: schemas are required")
            )
        elif schema.get("type") != "object":
            causes.append(
                Cause(
                    "FieldValueRequired",
                    f"{where}.type",
                    "Required value: must not be empty at the root",
                )
            )
    return causes


def _storage_versions(crd: dict[str, Any], stored: list[str]) -> list[str]:
    stored = list(stored)
    for version in (crd.get("spec") or {}).get("versions") or []:
        if version.get("storage") and version.get("name") not in stored:
            stored.append(version["name"])
    return stored


def initial_status(crd: dict[str, Any]) -> None:
    """A CRD as its create returns it: no names accepted and not Established yet (the
    naming and establishing controllers come next), only the stored version recorded."""
    crd["status"] = {
        "acceptedNames": {"plural": "", "kind": ""},
        "storedVersions": _storage_versions(crd, []),
    }


def set_condition(crd: dict[str, Any], kind: str, status: str, reason: str, message: str) -> None:
    """apiextensions' SetCRDCondition: replace or append; a changed status gets a new time."""
    conditions = crd.setdefault("status", {}).setdefault("conditions", [])
    condition = {
        "type": kind,
        "status": status,
        "lastTransitionTime": now_timestamp(),
        "reason": reason,
        "message": message,
    }
    for index, existing in enumerate(conditions):
        if existing.get("type") == kind:
            if existing.get("status") == status:
                condition["lastTransitionTime"] = existing.get("lastTransitionTime")
            conditions[index] = condition
            return
    conditions.append(condition)


def established_status(crd: dict[str, Any]) -> dict[str, Any]:
    """The status the naming and establishing controllers give a live CRD."""
    established = copy.deepcopy(crd)
    status: dict[str, Any] = established.setdefault("status", {})
    status["acceptedNames"] = dict((crd.get("spec") or {}).get("names") or {})
    set_condition(established, "NamesAccepted", "True", "NoConflicts", "no conflicts found")
    set_condition(
        established,
        "Established",
        "True",
        "InitialNamesAccepted",
        "the initial names have been accepted",
    )
    status["storedVersions"] = _storage_versions(crd, status.get("storedVersions") or [])
    return status


class CrdRegistrar:
    """Keeps the registry in step with the stored CRDs and establishes new ones (a store
    listener: the apiextensions server's naming and establishing controllers)."""

    def __init__(self, store: Store, registry: Registry, ops: Operations) -> None:
        self.store = store
        self.registry = registry
        self.ops = ops
        store.listeners.append(self.on_event)

    def on_event(self, event: WatchEvent) -> None:
        if event.key != CRD_KEY:
            return
        name = event.obj["metadata"]["name"]
        if event.type == "DELETED":
            removed = self.registry.unregister_crd(name)
            for served in removed[:1]:
                self.store.drop_storage(served.storage_key)
            return
        self.registry.register_crd(event.obj)
        if event.obj["metadata"].get("deletionTimestamp"):
            return
        status = established_status(event.obj)
        if status != event.obj.get("status"):
            info = self.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            assert info is not None
            self.ops.commit(info, event.obj, {**event.obj, "status": status}, subresource="status")
