"""The write semantics of the API: create, update (PUT) and patch; delete and scale come
from :mod:`.deletion` and :mod:`.scale`, mixed into :class:`Operations`.

This is where the rules that clients rely on live: optimistic concurrency (409 on a stale
resourceVersion, in PUT bodies and in patches that carry one), generation bumped only by
spec changes, the status subresource owning ``status`` (and the main endpoint ignoring it),
no-op writes that keep the resourceVersion, no new finalizers on a deleting object, and
schema pruning/defaulting/validation for custom resources. HTTP parsing is not done here
(see :mod:`.api`); garbage collection runs in :mod:`.lifecycle`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import crds, patch, schema
from .deletion import DeletionMixin
from .errors import (
    ApiError,
    Cause,
    bad_request,
    conflict,
    internal,
    invalid,
    not_found,
    unrecognized,
    unsupported_media_type,
)
from .events import NEW_EVENTS, validate_event
from .objects import (
    default_builtin,
    generate_name,
    has_generation,
    meta,
    micro_time_error,
    new_uid,
    now_timestamp,
    prune_unknown_fields,
    served,
    spec_part,
    validate_builtin,
    validate_metadata,
)
from .patch import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH
from .resources import CRD_KEY, NAMESPACE_KEY, Registry, ResourceInfo
from .scale import ScaleMixin
from .store import Store

_VOLATILE_META = ("resourceVersion", "managedFields")


@dataclass
class WriteOptions:
    dry_run: bool = False
    field_validation: str = ""  # Ignore, Warn, Strict; "" (not given) means Warn
    warnings: list[str] = field(default_factory=list)


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    trimmed = copy.deepcopy(obj)
    for key in _VOLATILE_META:
        trimmed.get("metadata", {}).pop(key, None)
    trimmed.pop("apiVersion", None)
    return trimmed


def _undecodable(info: ResourceInfo, kind: str, api_version: str, why: str) -> ApiError:
    """A built-in kind's 400 for a body of another kind or version (no conversion exists)."""
    version = api_version.rsplit("/", maxsplit=1)[-1]
    return bad_request(f'{kind} in version "{version}" cannot be handled as a {info.kind}: {why}')


class Operations(ScaleMixin, DeletionMixin):
    """Create, update, patch; the scale and delete verbs come from the mixins."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # --- reads -------------------------------------------------------------------------
    def get(self, info: ResourceInfo, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(info.storage_key, namespace if info.namespaced else "", name)
        if obj is None:
            raise not_found(info.group, info.plural, name)
        return obj

    def require_namespace(self, namespace: str, *, for_create: bool) -> None:
        ns = self.store.get(NAMESPACE_KEY, "", namespace)
        if ns is None:
            raise not_found("", "namespaces", namespace)
        if for_create and ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it "
                "is being terminated",
                {
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ]
                },
            )

    # --- create ------------------------------------------------------------------------
    def create(
        self, info: ResourceInfo, namespace: str, body: Any, options: WriteOptions | None = None
    ) -> dict[str, Any]:
        options = options or WriteOptions()
        obj = self._check_body(info, body)
        metadata = meta(obj)
        if info.namespaced:
            if metadata.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            metadata["namespace"] = namespace
            self.require_namespace(namespace, for_create=True)
        else:
            metadata.pop("namespace", None)
        if metadata.get("resourceVersion"):
            raise internal("resourceVersion should not be set on objects to be created")
        if not metadata.get("name"):
            if not metadata.get("generateName"):
                raise invalid(
                    info.group,
                    info.kind,
                    "",
                    [
                        Cause(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            metadata["name"] = generate_name(metadata["generateName"])
        name = metadata["name"]
        metadata["uid"] = new_uid()
        metadata["creationTimestamp"] = now_timestamp()
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            metadata.pop(key, None)
        if has_generation(info):
            metadata["generation"] = 1
        if info.status_subresource:
            obj.pop("status", None)
        if info.storage_key == NAMESPACE_KEY:
            obj["status"] = {"phase": "Active"}
        self._process(info, obj, None, options)
        # As in the API server, validation comes before the storage's existence check.
        if self.store.get(info.storage_key, metadata.get("namespace", ""), name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{info.qualified} "{name}" already exists',
                {"name": name, "group": info.group, "kind": info.plural},
            )
        if info.storage_key == CRD_KEY:
            crds.initial_status(obj)
        if options.dry_run:
            return served(obj, info)
        return served(self.store.put(info.storage_key, obj), info)

    def _check_body(self, info: ResourceInfo, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(
                f"the body of the request must be an object, got {type(body).__name__}"
            )
        obj = copy.deepcopy(body)
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if info.is_custom and (not api_version or not kind):
            missing = "Kind" if not kind else "Version"
            raw = json.dumps(body, separators=(",", ":"))
            raise unrecognized(info.kind, f"Object '{missing}' is missing in '{raw}'", raw.encode())
        # the same storage serves every version of a group (no conversion)
        same_group = "/" in str(api_version) and str(api_version).split("/")[0] == info.group
        if api_version and api_version != info.api_version and not same_group:
            if info.is_custom:
                raise bad_request(
                    f"the API version in the data ({api_version}) does not match the "
                    f"expected API version ({info.api_version})"
                )
            raise _undecodable(
                info,
                kind or info.kind,
                api_version,
                f'no kind "{kind or info.kind}" is '
                f'registered for version "{api_version}" in scheme "pkg/runtime/scheme.go:111"',
            )
        if kind and kind != info.kind:
            if info.is_custom:  # decoded as unstructured, then the kind fails validation
                raise invalid(
                    info.group,
                    kind,
                    meta(obj).get("name", ""),
                    [
                        Cause(
                            "FieldValueInvalid",
                            "kind",
                            f'Invalid value: "{kind}": must be {info.kind}',
                        )
                    ],
                )
            version = (api_version or info.api_version).split("/")[-1]
            internal_group = info.group.split(".")[0] or "core"
            raise _undecodable(
                info,
                kind,
                api_version or info.api_version,
                f"converting ({version}.{kind}) "
                f"to ({internal_group}.{info.kind}): unknown conversion",
            )
        obj["apiVersion"], obj["kind"] = info.api_version, info.kind
        if (why := micro_time_error(info, obj)) is not None:
            raise _undecodable(info, info.kind, info.api_version, why)
        if not isinstance(obj.get("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        return obj

    def _process(
        self,
        info: ResourceInfo,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        options: WriteOptions,
    ) -> None:
        """Pruning, defaulting and validation; raises 400 for unknown fields when
        ``fieldValidation`` is Strict, else 422 with every cause found."""
        unknown = prune_unknown_fields(info, obj)
        causes = validate_metadata(info, obj)
        if info.is_custom:
            causes += schema.process_custom_object(obj, info.schema, unknown)
            if info.scale is not None:
                causes += schema.validate_scale(obj, info.scale)
        else:
            default_builtin(info, obj, old)
            causes += validate_builtin(info, obj)
            causes += validate_event(info, obj)
        found = [f'unknown field "{path}"' for path in unknown]
        if found and options.field_validation == "Strict":
            raise _undecodable(
                info, info.kind, info.api_version, "strict decoding error: " + ", ".join(found)
            )
        if found and options.field_validation in ("Warn", ""):  # Warn is the default
            options.warnings.extend(found)
        if info.storage_key == CRD_KEY:
            crds.default_crd(obj)
            causes += crds.validate_crd(obj)
        if causes:
            # events.k8s.io Events are validated as the internal (core) Event: no group
            group = "" if info.storage_key == NEW_EVENTS else info.group
            raise invalid(group, info.kind, meta(obj).get("name", ""), causes)

    # --- update ------------------------------------------------------------------------
    def update(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        options: WriteOptions | None = None,
    ) -> dict[str, Any]:
        old = self.get(info, namespace, name)
        new = self._check_body(info, body)
        if info.is_custom and not meta(new).get("resourceVersion"):
            raise invalid(
                info.group,
                info.kind,
                name,
                [
                    Cause(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        return self.commit(info, old, new, subresource=subresource, options=options)

    def commit(
        self,
        info: ResourceInfo,
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        subresource: str | None = None,
        options: WriteOptions | None = None,
    ) -> dict[str, Any]:
        """Turn a candidate object into the stored one, honouring every update rule."""
        options = options or WriteOptions()
        old_meta, new_meta = old["metadata"], meta(new)
        name = old_meta["name"]
        if new_meta.get("name") not in (None, "", name):
            raise bad_request(
                f"the name of the object ({new_meta['name']}) does not match the "
                f"name on the URL ({name})"
            )
        if info.namespaced and new_meta.get("namespace") not in (None, "", old_meta["namespace"]):
            raise bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )
        precondition = new_meta.get("resourceVersion")
        if precondition not in (None, "") and str(precondition) != old_meta["resourceVersion"]:
            raise conflict(info.group, info.plural, name)
        if new_meta.get("uid") not in (None, "", old_meta["uid"]):
            raise conflict(
                info.group,
                info.plural,
                name,
                f"Precondition failed: UID in precondition: {new_meta['uid']}, "
                f"UID in object meta: {old_meta['uid']}",
            )

        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
        else:
            result = copy.deepcopy(new)
            if info.status_subresource:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            result_meta = meta(result)
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ):
                if key in old_meta:
                    result_meta[key] = old_meta[key]
                else:
                    result_meta.pop(key, None)
            if info.storage_key == NAMESPACE_KEY:
                result.setdefault("spec", {})["finalizers"] = (old.get("spec") or {}).get(
                    "finalizers", []
                )
        result["apiVersion"], result["kind"] = info.api_version, info.kind
        result_meta = meta(result)
        result_meta["resourceVersion"] = old_meta["resourceVersion"]

        if old_meta.get("deletionTimestamp"):
            added = set(result_meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise invalid(
                    info.group,
                    info.kind,
                    name,
                    [
                        Cause(
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is being "
                            "deleted, found new finalizers " + json.dumps(sorted(added)),
                        )
                    ],
                )
        self._process(info, result, old, options)
        if has_generation(info) and spec_part(result) != spec_part(old):
            result_meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if not result_meta.get("finalizers"):
            result_meta.pop("finalizers", None)

        if _comparable(result) == _comparable(old):
            return served(old, info)  # a no-op write: no new resourceVersion, no event
        if options.dry_run:
            return served(result, info)
        if (
            result_meta.get("deletionTimestamp")
            and not result_meta.get("finalizers")
            and not (info.storage_key == NAMESPACE_KEY and result["spec"].get("finalizers"))
        ):
            return served(self.store.remove(info.storage_key, result), info)
        return served(self.store.put(info.storage_key, result), info)

    # --- patch -------------------------------------------------------------------------
    def patch(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        content_type: str,
        raw: bytes,
        *,
        subresource: str | None = None,
        options: WriteOptions | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Apply a patch; returns the object and whether it was created (apply only)."""
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if not info.is_custom:
            accepted.insert(2, STRATEGIC_PATCH)
        if content_type not in (*accepted, STRATEGIC_PATCH):
            # not a patch type at all: the server's generic answer, without the list
            raise ApiError(415, "UnsupportedMediaType", "415: Unsupported Media Type")
        if content_type not in accepted:
            raise unsupported_media_type(accepted)
        try:
            body = yaml.safe_load(raw) if content_type == APPLY_PATCH else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"error decoding patch: {exc}") from exc
        current = self.store.get(info.storage_key, namespace if info.namespaced else "", name)
        if current is None:
            if content_type == APPLY_PATCH and subresource is None:
                return self.create(info, namespace, body, options), True
            raise not_found(info.group, info.plural, name)
        if subresource == "scale":
            return self._patch_scale(info, current, content_type, body, options), False
        base = served(current, info)
        if content_type == JSON_PATCH:
            new = patch.json_patch(base, body)
        elif content_type == STRATEGIC_PATCH:
            new = patch.strategic_merge_patch(base, body)
        elif not isinstance(body, dict):
            raise bad_request(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        elif content_type == APPLY_PATCH and not info.is_custom:
            new = patch.strategic_merge_patch(base, body)
        else:
            new = patch.merge_patch(base, body)
        if not isinstance(new, dict):
            raise bad_request("the patched object is not an object")
        return self.commit(info, current, new, subresource=subresource, options=options), False
