"""The ``/scale`` subresource: an autoscaling/v1 Scale view over a kind's replica paths.

Mixed into :class:`.operations.Operations`; reads and writes go through its ``get`` and
``commit`` so every update rule (concurrency, generation) applies to scaling too.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import patch
from .errors import Cause, bad_request, invalid
from .objects import served
from .patch import JSON_PATCH
from .resources import ResourceInfo
from .selectors import selector_to_string

if TYPE_CHECKING:
    from .operations import Operations, WriteOptions


def get_path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


class ScaleMixin:
    def get_scale(
        self: Operations, info: ResourceInfo, namespace: str, name: str
    ) -> dict[str, Any]:
        return self._scale_of(info, self.get(info, namespace, name))

    def _scale_of(self: Operations, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        assert info.scale is not None
        metadata = obj["metadata"]
        status: dict[str, Any] = {"replicas": get_path(obj, info.scale.status_replicas_path) or 0}
        if info.scale.label_selector_path:
            selector = get_path(obj, info.scale.label_selector_path)
            if selector:
                status["selector"] = selector
        elif isinstance(selector_obj := get_path(obj, ".spec.selector"), dict):
            status["selector"] = selector_to_string(selector_obj)
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: metadata[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in metadata
            },
            "spec": {"replicas": get_path(obj, info.scale.spec_replicas_path) or 0},
            "status": status,
        }

    def update_scale(
        self: Operations,
        info: ResourceInfo,
        namespace: str,
        name: str,
        body: Any,
        options: WriteOptions | None = None,
    ) -> dict[str, Any]:
        current = self.get(info, namespace, name)
        if not isinstance(body, dict) or body.get("kind", "Scale") != "Scale":
            raise bad_request("expected a Scale object (autoscaling/v1)")
        return self._write_scale(info, current, body, options)

    def _patch_scale(
        self: Operations,
        info: ResourceInfo,
        current: dict[str, Any],
        content_type: str,
        body: Any,
        options: WriteOptions | None,
    ) -> dict[str, Any]:
        scale = self._scale_of(info, current)
        if content_type == JSON_PATCH:
            new = patch.json_patch(scale, body)
        else:
            new = patch.merge_patch(scale, body)
        return self._write_scale(info, current, new, options)

    def _write_scale(
        self: Operations,
        info: ResourceInfo,
        current: dict[str, Any],
        scale: dict[str, Any],
        options: WriteOptions | None,
    ) -> dict[str, Any]:
        assert info.scale is not None
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid(
                "autoscaling",
                "Scale",
                current["metadata"]["name"],
                [
                    Cause(
                        "FieldValueInvalid",
                        "spec.replicas",
                        f"Invalid value: {json.dumps(replicas)}: "
                        "must be greater than or equal to 0",
                    )
                ],
            )
        new = served(current, info)
        set_path(new, info.scale.spec_replicas_path, replicas)
        new["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion")
        updated = self.commit(info, current, new, options=options)
        return self._scale_of(info, updated)
