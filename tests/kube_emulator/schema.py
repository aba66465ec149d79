"""Structural-schema handling for custom resources: pruning, defaulting and validation.

Applied in that order to every write of a custom resource, as the apiextensions server
does: unknown fields are dropped (unless ``x-kubernetes-preserve-unknown-fields``), nulls of
non-nullable fields are dropped or defaulted, ``default`` values are filled in, then the
result is validated and every violation becomes a :class:`Cause` with the field path and the
message wording of the real server (``spec.steps[0].weight: Invalid value: ...``).
Not covered: CEL (``x-kubernetes-validations``), ``allOf/anyOf/oneOf/not``, ``format``,
``uniqueItems`` and list-type/map-type uniqueness.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from .errors import Cause
from .resources import ScaleSpec

_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _preserves(schema: dict[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")) or bool(
        schema.get("x-kubernetes-embedded-resource")
    )


def prune(
    value: Any,
    schema: dict[str, Any] | None,
    *,
    root: bool = False,
    path: str = "",
    removed: list[str] | None = None,
) -> Any:
    """Drop fields the schema does not specify (recording their paths in ``removed``)."""
    if schema is None:
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key in list(value):
            where = _join(path, key)
            if root and key in _ROOT_KEEP:
                continue
            if properties is not None and key in properties:
                value[key] = prune(value[key], properties[key], path=where, removed=removed)
            elif isinstance(additional, dict):
                value[key] = prune(value[key], additional, path=where, removed=removed)
            elif (
                additional is True
                or _preserves(schema)
                or (schema.get("x-kubernetes-embedded-resource") and key in _ROOT_KEEP)
            ):
                continue
            else:
                del value[key]
                if removed is not None:
                    removed.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            prune(item, schema["items"], path=f"{path}[{index}]", removed=removed)
            for index, item in enumerate(value)
        ]
    return value


def apply_defaults(value: Any, schema: dict[str, Any] | None) -> Any:
    """Fill ``default`` values in objects; nulls of non-nullable fields are defaulted or dropped."""
    if schema is None:
        return value
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key in value and value[key] is None and not sub.get("nullable"):
                del value[key]
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in list(value):
                if key not in properties:
                    value[key] = apply_defaults(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_type(value: Any, expected: str) -> bool:
    actual = _type_name(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer":
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == expected


def render_value(value: Any) -> str:
    """Render a value as Go's ``field.Invalid`` does: strings quoted, others as JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(_type_name(value))
    return json.dumps(value)


def validate(value: Any, schema: dict[str, Any] | None, path: str = "") -> list[Cause]:
    """Validate ``value`` against a structural schema node; ``path`` is the field path so far."""
    if schema is None:
        return []
    causes: list[Cause] = []
    if value is None:
        if schema.get("nullable") or not (
            schema.get("type") or schema.get("x-kubernetes-int-or-string")
        ):
            return []
        expected = "string" if schema.get("x-kubernetes-int-or-string") else schema["type"]
        return [_type_error(path, value, expected)]
    if schema.get("x-kubernetes-int-or-string"):
        if not (_has_type(value, "integer") or isinstance(value, str)):
            return [
                Cause(
                    "FieldValueTypeInvalid",
                    path,
                    f"Invalid value: {render_value(value)}: {path} in body must be of "
                    f"type integer,string: {render_value(value)}",
                )
            ]
    elif (expected := schema.get("type")) and not _has_type(value, expected):
        return [_type_error(path, value, expected)]

    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        causes.append(
            Cause(
                "FieldValueNotSupported",
                path,
                f"Unsupported value: {render_value(value)}: supported values: {supported}",
            )
        )
    if _type_name(value) in ("integer", "number"):
        causes.extend(_check_range(value, schema, path))
    if isinstance(value, str):
        causes.extend(_check_string(value, schema, path))
    if isinstance(value, list):
        causes.extend(_check_array(value, schema, path))
    if isinstance(value, dict):
        causes.extend(_check_object(value, schema, path))
    return causes


def _type_error(path: str, value: Any, expected: str) -> Cause:
    shown = render_value(_type_name(value))
    return Cause(
        "FieldValueTypeInvalid",
        path,
        f"Invalid value: {shown}: {path} in body must be of type {expected}: {shown}",
    )


def _check_range(value: float, schema: dict[str, Any], path: str) -> list[Cause]:
    """multipleOf, maximum, minimum: every failure, in kube-openapi's order."""
    causes = []
    shown = render_value(value)
    if (multiple := schema.get("multipleOf")) and value % multiple:
        causes.append(
            Cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {shown}: {path} in body should be a multiple of {multiple}",
            )
        )
    if (maximum := schema.get("maximum")) is not None:
        if schema.get("exclusiveMaximum") and value >= maximum:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {shown}: {path} in body should be less than {maximum}",
                )
            )
        elif value > maximum:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {shown}: {path} in body should be less than "
                    f"or equal to {maximum}",
                )
            )
    if (minimum := schema.get("minimum")) is not None:
        if schema.get("exclusiveMinimum") and value <= minimum:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {shown}: {path} in body should be greater than {minimum}",
                )
            )
        elif value < minimum:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {shown}: {path} in body should be greater than "
                    f"or equal to {minimum}",
                )
            )
    return causes


def _check_string(value: str, schema: dict[str, Any], path: str) -> list[Cause]:
    """maxLength, minLength, pattern: only the first failure, as kube-openapi reports."""
    shown = render_value(value)
    if (max_length := schema.get("maxLength")) is not None and len(value) > max_length:
        return [
            Cause("FieldValueTooLong", path, f"Too long: may not be more than {max_length} bytes")
        ]
    if (min_length := schema.get("minLength")) is not None and len(value) < min_length:
        return [
            Cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {shown}: {path} in body should be at least "
                f"{min_length} chars long",
            )
        ]
    if (pattern := schema.get("pattern")) is not None and not re.search(pattern, value):
        return [
            Cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {shown}: {path} in body should match '{pattern}'",
            )
        ]
    return []


def _check_array(value: list[Any], schema: dict[str, Any], path: str) -> list[Cause]:
    """The items first, then minItems and maxItems, in kube-openapi's order."""
    causes = []
    if isinstance(items := schema.get("items"), dict):
        for index, item in enumerate(value):
            causes.extend(validate(item, items, f"{path}[{index}]"))
    if (min_items := schema.get("minItems")) is not None and len(value) < min_items:
        causes.append(
            Cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {len(value)}: {path} in body should have at least "
                f"{min_items} items",
            )
        )
    if (max_items := schema.get("maxItems")) is not None and len(value) > max_items:
        causes.append(
            Cause(
                "FieldValueTooMany",
                path,
                f"Too many: {len(value)}: must have at most {max_items} items",
            )
        )
    return causes


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[Cause]:
    causes = []
    for key in schema.get("required") or ():
        if key not in value:
            causes.append(Cause("FieldValueRequired", _join(path, key), "Required value"))
    count = len(value)
    if (min_props := schema.get("minProperties")) is not None and count < min_props:
        causes.append(
            Cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {count}: {path} in body should have at least "
                f"{min_props} properties",
            )
        )
    if (max_props := schema.get("maxProperties")) is not None and count > max_props:
        causes.append(
            Cause(
                "FieldValueTooMany", path, f"Too many: {count}: must have at most {max_props} items"
            )
        )
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            causes.extend(validate(item, properties[key], _join(path, key)))
        elif isinstance(additional, dict):
            causes.extend(validate(item, additional, _join(path, key)))
    return causes


def process_custom_object(
    obj: dict[str, Any], schema: dict[str, Any] | None, removed: list[str] | None = None
) -> list[Cause]:
    """Prune, default and validate a custom resource in place; returns the violations."""
    if schema is None:
        return []
    prune(obj, schema, root=True, removed=removed)
    apply_defaults(obj, schema)
    body = {k: v for k, v in obj.items() if k not in _ROOT_KEEP}
    root_schema = {k: v for k, v in schema.items() if k != "required"}
    root_schema["properties"] = {
        k: v for k, v in (schema.get("properties") or {}).items() if k not in _ROOT_KEEP
    }
    causes = validate(body, root_schema)
    causes.extend(
        Cause("FieldValueRequired", key, "Required value")
        for key in schema.get("required") or ()
        if key not in obj
    )
    return causes


MAX_INT32 = 2**31 - 1


def _go_value(value: Any) -> tuple[str, str]:
    """``%v`` and ``%T`` of a decoded JSON value in Go, for accessor errors."""
    if value is None:
        return "<nil>", "<nil>"
    if isinstance(value, bool):
        return str(value).lower(), "bool"
    if isinstance(value, float):
        return repr(value), "float64"
    if isinstance(value, str):
        return value, "string"
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v)[0] for v in value) + "]", "[]interface {}"
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{_go_value(v)[0]}" for k, v in sorted(value.items()))
        return f"map[{inner}]", "map[string]interface {}"
    return str(value), "int64"


def _nested(obj: dict[str, Any], path: str, expected: type, go_type: str) -> tuple[Any, str | None]:
    """unstructured.NestedInt64/NestedString: the value (or None) and an accessor error."""
    fields = path.lstrip(".").split(".")
    current: Any = obj
    for depth, name in enumerate(fields):
        if not isinstance(current, dict):
            shown, kind = _go_value(current)
            where = "." + ".".join(fields[:depth])
            return None, (
                f"{where} accessor error: {shown} is of the type {kind}, "
                "expected map[string]interface{}"
            )
        if name not in current:
            return None, None
        current = current[name]
    if isinstance(current, expected) and not isinstance(current, bool):
        return current, None
    shown, kind = _go_value(current)
    return None, f"{path} accessor error: {shown} is of the type {kind}, expected {go_type}"


def validate_scale(obj: dict[str, Any], scale: ScaleSpec) -> list[Cause]:
    """The scale subresource's own checks of the replica counts and the selector, made on
    every write of a custom resource that has one (their paths keep the leading dot)."""
    causes = []
    for path in (scale.spec_replicas_path, scale.status_replicas_path):
        replicas, error = _nested(obj, path, int, "int64")
        if error is not None:
            causes.append(Cause("FieldValueInvalid", path, f"Invalid value: 0: {error}"))
        elif replicas is not None and replicas < 0:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {replicas}: should be a non-negative integer",
                )
            )
        elif replicas is not None and replicas > MAX_INT32:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {replicas}: should be less than or equal to {MAX_INT32}",
                )
            )
    if scale.label_selector_path:
        _, error = _nested(obj, scale.label_selector_path, str, "string")
        if error is not None:
            path = scale.label_selector_path
            causes.append(Cause("FieldValueInvalid", path, f'Invalid value: "": {error}'))
    return causes
