"""CustomResourceDefinitions: their own validation, defaults and status, and the listener that
serves (and stops serving) their resources as CRDs come and go.

A CRD becomes Established at once (there is no controller delay to emulate). Deleting a CRD
goes through the ``customresourcecleanup.apiextensions.k8s.io`` finalizer: the lifecycle
module deletes its objects first, as the real CRD finalizer controller does.
"""

from __future__ import annotations

from typing import Any

from .errors import Cause
from .objects import now_timestamp
from .resources import CRD_KEY, Registry
from .store import Store, WatchEvent

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


def refresh_status(crd: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Established and NamesAccepted at once; keep transition times of unchanged conditions."""
    spec = crd.get("spec") or {}
    old_status = (old or {}).get("status") or {}
    old_conditions = {c.get("type"): c for c in old_status.get("conditions") or []}
    stamp = now_timestamp()
    conditions = []
    for kind, reason, message in (
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ):
        previous = old_conditions.get(kind)
        conditions.append(
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": (previous or {}).get("lastTransitionTime", stamp),
            }
        )
    if crd.get("metadata", {}).get("deletionTimestamp"):
        conditions.append(
            {
                "type": "Terminating",
                "status": "True",
                "reason": "InstanceDeletionInProgress",
                "message": "CustomResource deletion is in progress",
                "lastTransitionTime": stamp,
            }
        )
    stored = list(old_status.get("storedVersions") or [])
    for version in spec.get("versions") or []:
        if version.get("storage") and version.get("name") not in stored:
            stored.append(version["name"])
    crd["status"] = {
        "conditions": conditions,
        "acceptedNames": dict(spec.get("names") or {}),
        "storedVersions": stored,
    }


class CrdRegistrar:
    """Keeps the registry in step with the stored CRDs (a store listener)."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        store.listeners.append(self.on_event)

    def on_event(self, event: WatchEvent) -> None:
        if event.key != CRD_KEY:
            return
        name = event.obj["metadata"]["name"]
        if event.type == "DELETED":
            removed = self.registry.unregister_crd(name)
            for info in removed[:1]:
                self.store.drop_storage(info.storage_key)
        else:
            self.registry.register_crd(event.obj)
