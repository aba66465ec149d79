"""Label and field selectors, parsed as the API server parses them and matched on dicts.

Used by list, watch and deletecollection. Parse errors become 400 BadRequest, like the
real server's ``unable to parse requirement`` answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .resources import ResourceInfo

_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        return not present or value not in self.values  # notin


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``(...)`` value sets."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^(?P<key>[^\s!=(]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)$")
_EQ_RE = re.compile(r"^(?P<key>[^\s!=]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s]*)$")


def _check_key(key: str, raw: str) -> None:
    if not _LABEL_KEY.match(key):
        raise bad_request(f'unable to parse requirement: invalid label key "{key}" in "{raw}"')


def _check_value(value: str, raw: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise bad_request(f'unable to parse requirement: invalid label value "{value}" in "{raw}"')


def parse_label_selector(text: str | None) -> list[Requirement]:
    requirements: list[Requirement] = []
    for raw in _split_top_level(text or ""):
        if match := _SET_RE.match(raw):
            key = match["key"]
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            _check_key(key, raw)
            for value in values:
                _check_value(value, raw)
            requirements.append(Requirement(key, match["op"], values))
        elif match := _EQ_RE.match(raw):
            key, op = match["key"], match["op"]
            _check_key(key, raw)
            _check_value(match["value"], raw)
            requirements.append(Requirement(key, "=" if op == "==" else op, (match["value"],)))
        elif raw.startswith("!"):
            _check_key(raw[1:].strip(), raw)
            requirements.append(Requirement(raw[1:].strip(), "!"))
        else:
            _check_key(raw, raw)
            requirements.append(Requirement(raw, "exists"))
    return requirements


def labels_match(requirements: list[Requirement], obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


def match_label_selector_object(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Match a structured ``LabelSelector`` (matchLabels + matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""), "exists")
        req = Requirement(expr.get("key", ""), op, tuple(expr.get("values") or ()))
        if not req.matches(labels):
            return False
    return True


def selector_to_string(selector: dict[str, Any]) -> str:
    """Render a ``LabelSelector`` the way ``/scale`` reports ``status.selector``."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key = expr.get("operator"), expr.get("key")
        values = ",".join(expr.get("values") or ())
        parts.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": f"{key}",
                "DoesNotExist": f"!{key}",
            }.get(op, key)
        )
    return ",".join(parts)


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    negated: bool
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        current: Any = obj
        for part in self.path.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        actual = "" if current is None else _field_string(current)
        return (actual != self.value) if self.negated else (actual == self.value)


def _field_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class FieldLabels:
    """The field selectors a kind supports, and how the API server refuses others: kinds
    with their own label conversion say "field label not supported", the rest list the two
    every object has. ``paths`` maps a label to where its value is, when not at the label."""

    labels: frozenset[str]
    converted: bool = False
    paths: tuple[tuple[str, str], ...] = ()

    def path_of(self, label: str) -> str:
        if label not in self.labels:
            if self.converted:
                raise bad_request(f"field label not supported: {label}")
            raise bad_request(
                f'"{label}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        return dict(self.paths).get(label, label)


METADATA_LABELS = frozenset({"metadata.name", "metadata.namespace"})
_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
# k8s.io/kubernetes' AddFieldLabelConversionsFor* of the built-in kinds that have them.
BUILTIN_FIELD_LABELS = {
    ("", "namespaces"): FieldLabels(frozenset({"metadata.name", "status.phase"}), True),
    ("", "secrets"): FieldLabels(METADATA_LABELS | {"type"}, True),
    ("", "services"): FieldLabels(METADATA_LABELS | {"spec.clusterIP", "spec.type"}, True),
    ("", "events"): FieldLabels(
        METADATA_LABELS
        | {f"involvedObject.{f}" for f in _INVOLVED}
        | {"reason", "reportingComponent", "source", "type"},
        True,
        (("source", "source.component"),),
    ),
    ("events.k8s.io", "events"): FieldLabels(
        METADATA_LABELS
        | {f"regarding.{f}" for f in _INVOLVED}
        | {"reason", "reportingController", "type"},
        True,
    ),
}


def field_labels(info: ResourceInfo) -> FieldLabels:
    """A kind's field labels: its conversion's, metadata's plus a CRD's selectableFields
    (refused as converted kinds refuse them), or metadata's alone."""
    if info.is_custom:
        return FieldLabels(METADATA_LABELS | set(info.selectable_fields), converted=True)
    return BUILTIN_FIELD_LABELS.get(info.storage_key, FieldLabels(METADATA_LABELS))


def parse_field_selector(
    text: str | None, labels: FieldLabels | None = None
) -> list[FieldRequirement]:
    """Parse ``a=b,c!=d`` (``==`` too); labels the kind does not support are a 400."""
    requirements = []
    for raw in _split_top_level(text or ""):
        match = re.match(r"^([^!=]+?)\s*(==|=|!=)\s*(.*)$", raw)
        if not match:
            raise bad_request(f"invalid selector: '{raw}'; can't understand '{raw}'")
        label, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        if re.search(r"(?<!\\)=", value):
            raise bad_request("invalid field selector: unescaped character in value: 61")
        path = label if labels is None else labels.path_of(label)
        requirements.append(FieldRequirement(path, op == "!=", value.replace("\\", "")))
    return requirements


def fields_match(requirements: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all(r.matches(obj) for r in requirements)
