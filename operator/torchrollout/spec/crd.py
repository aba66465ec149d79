"""The ModelDeployment CustomResourceDefinition, generated from the pydantic models.

pydantic writes JSON Schema 2020-12; a Kubernetes structural schema is a dialect of
OpenAPI 3.0 with its own rules: no `$ref`, one type per node (`nullable: true` instead
of `anyOf [.., null]`), `x-kubernetes-preserve-unknown-fields` for free-form values,
boolean `exclusiveMinimum`. `structural_schema` does that translation; `render_crd`
wraps it with names, printer columns and the status subresource. `torchrollout crd`
prints it and a test keeps `crds/` equal to it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, NoDefault
from pydantic_core import core_schema

from torchrollout.spec.document import (
    GROUP,
    KIND,
    METADATA_NAME_PATTERN,
    PATTERN_HINTS,
    PLURAL,
    SHORT_NAMES,
    VERSION,
)
from torchrollout.spec.resource import ModelDeploymentSpec
from torchrollout.spec.status import ModelDeploymentStatus, without_nulls

_DROPPED_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}


class _WithFactoryDefaults(GenerateJsonSchema):
    """JSON Schema generation that also shows defaults made by a default_factory."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return super().get_default_value(schema)


def _json_schema(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True, mode=mode, schema_generator=_WithFactoryDefaults)


def structural_schema(
    model: type[BaseModel], mode: JsonSchemaMode = "validation"
) -> dict[str, Any]:
    """The Kubernetes structural schema of `model`."""
    schema = _json_schema(model, mode)
    return _convert(schema, schema.get("$defs", {}))


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    variants = node.get("anyOf")
    if variants is not None:
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        concrete = [v for v in variants if v.get("type") != "null"]
        nullable = len(concrete) < len(variants)
        if len(concrete) == 1:
            out = _convert({**concrete[0], **rest}, defs)
        else:  # several types (e.g. Any): leave the value as the user wrote it
            out = _convert({**rest, "x-kubernetes-preserve-unknown-fields": True}, defs)
        if nullable:
            out["nullable"] = True
            if out.get("default", NoDefault) is None:
                del out["default"]
        return out

    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            converted[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            converted[key] = _convert(value, defs)
        elif key == "const":
            converted["enum"] = [value]
        elif key == "exclusiveMinimum":
            converted["minimum"], converted["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            converted["maximum"], converted["exclusiveMaximum"] = value, True
        elif key == "format" and value not in {"date-time", "int32", "int64", "double"}:
            continue
        else:
            converted[key] = value

    extra = node.get("additionalProperties")
    if converted.get("type") == "object" and "properties" not in converted:
        if isinstance(extra, dict) and extra:
            converted["additionalProperties"] = _convert(extra, defs)
        else:  # dict[str, Any]: a free-form map
            converted["x-kubernetes-preserve-unknown-fields"] = True
    elif "type" not in converted and "enum" not in converted:
        converted["x-kubernetes-preserve-unknown-fields"] = True
    elif "enum" in converted and "type" not in converted:
        converted["type"] = "string"
    if (
        converted.get("type") == "object"
        and "properties" in converted
        and isinstance(converted.get("default"), dict)
    ):
        # The API server defaults nested fields itself once the object exists.
        converted["default"] = {}
    if converted.get("default", NoDefault) is None:
        del converted["default"]
    elif "default" in converted:
        converted["default"] = without_nulls(converted["default"])
    return converted


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


# The API server allows any DNS subdomain; the operator needs less (the Services it makes
# add -canary). Only a rule at the root may read metadata.name, and its fieldPath cannot
# point there (the schema declares no metadata fields), so the message names the field.
NAME_RULE = {
    "rule": f"self.metadata.name.matches(r'{METADATA_NAME_PATTERN}')",
    "message": PATTERN_HINTS[METADATA_NAME_PATTERN],
}

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryVersion"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]


def render_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of ModelDeployment, as a Kubernetes object."""
    # A fresh copy of every node (deepcopy would keep the sharing): a schema shared by two
    # fields would become a YAML alias.
    spec = json.loads(json.dumps(structural_schema(ModelDeploymentSpec)))
    spec.pop("default", None)
    # The operator writes status piece by piece: no defaults or required fields there.
    status = _without_defaults(structural_schema(ModelDeploymentStatus))
    status.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "torchrollout"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": list(SHORT_NAMES),
                "categories": ["torchrollout"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": spec.get("description", ""),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "x-kubernetes-validations": [NAME_RULE],
                        }
                    },
                }
            ],
        },
    }
