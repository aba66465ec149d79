"""The base of every spec model, and the CEL rules the CRD carries beside the schema."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def cel_rule(
    rule: str,
    message: str,
    *,
    message_expression: str = "",
    field_path: str = "",
    reason: str = "",
) -> dict[str, str]:
    """One CEL rule of the CRD and what the API server answers when it fails.

    `message_expression` (CEL building the message from the value) wins over `message`,
    which stays as its fallback; `field_path` names a field below the one holding the rule
    in the error, and `reason` sets its kind (e.g. FieldValueRequired: "Required value").
    """
    entry = {"rule": rule, "message": message}
    if message_expression:
        entry["messageExpression"] = message_expression
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def cel(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def cel_strings(values: Iterable[str]) -> str:
    """A CEL list literal of `values`, sorted."""
    return "[" + ", ".join(f"'{v}'" for v in sorted(values)) + "]"


class FieldValueError(ValueError):
    """A rule of a model about one of its fields below it (`field`, e.g. canary.match), so
    the problem names that field and not the model."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SpecModel(BaseModel):
    """Base of every spec model: camelCase in YAML, unknown fields refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )
