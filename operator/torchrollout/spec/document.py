"""A whole ModelDeployment document, and how text becomes one.

`load_model_deployment` is the single door for YAML written by users (the CLI, rehearsal,
the operator's handlers): it turns every pydantic and YAML error into a `SpecError`
whose lines name the field, as `spec.canary.steps: steps must increase strictly ...`.

`read_document` and `read_json` are the one reader of files users hand to a command. A file
larger than MAX_DOCUMENT_BYTES, not UTF-8, nested deeper than MAX_DEPTH, with aliases that
expand past MAX_EXPANDED_CHARACTERS, or holding several documents is refused with a
`DocumentError`: one line, the file name first, then what to fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from torchrollout.errors import FieldProblem, SpecError
from torchrollout.spec.base import FieldValueError
from torchrollout.spec.durations import DURATION_PATTERN
from torchrollout.spec.resource import (
    MODEL_NAME_PATTERN,
    SHA256_PATTERN,
    STORE_URI_PATTERN,
    VERSION_PATTERN,
    ModelDeploymentSpec,
)
from torchrollout.spec.status import ModelDeploymentStatus

GROUP = "torchrollout.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SHORT_NAMES = ("mdep", "md")
ANNOTATION_PREFIX = f"{GROUP}/"
REQUEST_ANNOTATIONS = ("promote", "abort", "retry")
METADATA_NAME_PATTERN = r"^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$"


class ObjectMeta(BaseModel):
    """The parts of metadata torchrollout reads."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    name: str = Field(pattern=METADATA_NAME_PATTERN)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeployment(BaseModel):
    """apiVersion, kind, metadata, spec and status of one resource."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    api_version: Literal["torchrollout.io/v1alpha1"] = Field(
        default="torchrollout.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.metadata.name

    def requests(self) -> dict[str, str]:
        """The promote/abort/retry annotations present, by short name."""
        notes = self.metadata.annotations
        return {
            r: notes[ANNOTATION_PREFIX + r]
            for r in REQUEST_ANNOTATIONS
            if ANNOTATION_PREFIX + r in notes
        }


def compute_revision(spec: ModelDeploymentSpec) -> str:
    """A short hash of everything that changes the pods: model and runtime.

    The canary policy, traffic, autoscaling, `paused` and the replica count are left out:
    editing them changes how a rollout proceeds or how many pods run, not what runs, so
    the current revision is scaled in place instead of being rolled out anew.
    """
    pod_shaping = {
        "model": spec.model.model_dump(mode="json", by_alias=True),
        "runtime": spec.runtime.model_dump(mode="json", by_alias=True, exclude={"replicas"}),
    }
    canonical = json.dumps(_canonical_numbers(pod_shaping), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _canonical_numbers(value: Any) -> Any:
    """`value` with integral floats as ints: a YAML `0.0` is stored by the API server as `0`,
    and the revision must be the same whichever a reader parsed."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(v) for v in value]
    return value


PATTERN_HINTS = {
    DURATION_PATTERN: "a duration is a number with a unit, like 30s, 2m, 1m30s or 500ms",
    VERSION_PATTERN: "a version is a label value: letters, digits, '.', '_', '-', at most 63",
    SHA256_PATTERN: "sha256 is 64 lowercase hex digits (sha256sum prints it)",
    STORE_URI_PATTERN: "an archive store is s3://bucket/prefix or pvc://claim/path",
    MODEL_NAME_PATTERN: "a model name starts with a letter: letters, digits, '_', '-'",
    METADATA_NAME_PATTERN: "metadata.name is a DNS label: lowercase letters, digits, '-', "
    "starting with a letter, at most 52 characters (Services add -canary)",
}


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in {"list", "dict"}:
            continue  # pydantic's names for validator wrappers, not fields
        else:
            out += f".{part}" if out else part
    return out


def problems_of(exc: ValidationError) -> list[FieldProblem]:
    """Each pydantic error as a field path and a message a user can act on."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against `torchrollout crd`"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "string_pattern_mismatch":
            pattern = error["ctx"]["pattern"]
            hint = PATTERN_HINTS.get(pattern, f"it must match {pattern}")
            message = f"{error['input']!r} is not valid: {hint}"
        path = _path(error["loc"])
        raised = (error.get("ctx") or {}).get("error")
        if isinstance(raised, FieldValueError):
            path = f"{path}.{raised.field}" if path else raised.field
        problems.append(FieldProblem(path, message))
    return problems


_KINDS = {
    "NoneType": "nothing",
    "list": "a list",
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
}


def parse_model_deployment(document: Any, *, source: str = "") -> ModelDeployment:
    """A ModelDeployment from a parsed YAML/JSON object; SpecError if it is not one."""
    if not isinstance(document, dict):
        got = _KINDS.get(type(document).__name__, type(document).__name__)
        raise SpecError([FieldProblem("", f"expected a mapping, got {got}")], source=source)
    try:
        return ModelDeployment.model_validate(document)
    except ValidationError as exc:
        raise SpecError(problems_of(exc), source=source) from exc


class DocumentError(SpecError):
    """A file cannot be read as one YAML or JSON document; its message is one line."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__([FieldProblem("", message)], source=str(path))

    def __str__(self) -> str:
        return f"{self.source}: {self.problems[0].message}"


_MIB = 1024 * 1024
MAX_DOCUMENT_BYTES = 8 * _MIB
MAX_DEPTH = 64
MAX_EXPANDED_CHARACTERS = 2 * MAX_DOCUMENT_BYTES
_BRACKET_SLACK = 4  # brackets inside strings may add to the count
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: Path, *, limit: int = MAX_DOCUMENT_BYTES) -> str:
    """The UTF-8 text of `path`, at most `limit` bytes; DocumentError otherwise."""
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise DocumentError(path, f"cannot read: {exc.strerror}") from exc
    if len(data) > limit:
        raise DocumentError(
            path, f"larger than the {limit // _MIB} MiB limit; is it the right file?"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = data[exc.start]
        raise DocumentError(
            path, f"not UTF-8 text (byte {byte:#04x} at offset {exc.start}); save it as UTF-8"
        ) from exc


def read_document(path: Path) -> Any:
    """The one YAML (or JSON) document in `path`, within the size, depth and alias limits."""
    text = read_text(path)
    if _bracket_depth(text) > _BRACKET_SLACK * MAX_DEPTH:
        raise DocumentError(path, _too_deep())
    try:
        _check_shape(_events(text), path)
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise DocumentError(path, f"not valid YAML: {_yaml_problem(exc)}") from exc


def read_json(path: Path) -> Any:
    """The JSON value in `path`, within the size and depth limits."""
    text = read_text(path)
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise DocumentError(path, _too_deep()) from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise DocumentError(path, f"not valid JSON: {exc.msg} at {where}") from exc
    if _depth(value) > MAX_DEPTH:
        raise DocumentError(path, _too_deep())
    return value


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels; flatten it"


def _bracket_depth(text: str) -> int:
    """An upper bound of how deep flow collections (`[`, `{`) nest in `text`, quoted or not.

    YAML parsers slow down with the square of flow nesting, so a document far too deep is
    refused on this count before it is parsed; `_check_shape` counts exactly.
    """
    brackets = _NOT_BRACKETS.sub("", text)
    return max(accumulate(_BRACKET_STEP[c] for c in brackets), default=0)


def _events(text: str) -> Iterator[yaml.Event]:
    """The parser's events for `text`: a flat stream, however deep the document."""
    return yaml.parse(text, Loader=_LOADER)


@dataclass
class _Collection:
    """A sequence or mapping being parsed: its anchor, expanded size and height so far."""

    anchor: str | None
    size: int = 1
    height: int = 1


def _check_shape(events: Iterable[yaml.Event], path: Path) -> None:
    """DocumentError unless the events hold one document within the depth and alias limits.

    Sizes count characters as if every alias were written out, so an alias bomb is caught
    from a few hundred bytes of text, before anything is built from it.
    """
    anchors: dict[str, tuple[int, int]] = {}
    open_: list[_Collection] = []
    documents = 0

    def add(size: int, height: int, anchor: str | None) -> None:
        if anchor is not None:
            anchors[anchor] = (size, height)
        if len(open_) + height > MAX_DEPTH:
            raise DocumentError(path, _too_deep())
        if open_:
            parent = open_[-1]
            parent.size += size
            parent.height = max(parent.height, height + 1)
            if parent.size > MAX_EXPANDED_CHARACTERS:
                limit = MAX_EXPANDED_CHARACTERS // _MIB
                raise DocumentError(
                    path, f"its aliases expand it past {limit} MiB; write the values out"
                )

    for event in events:
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise DocumentError(
                    path, "holds more than one YAML document (---); put one in each file"
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            open_.append(_Collection(event.anchor))
            if len(open_) > MAX_DEPTH:
                raise DocumentError(path, _too_deep())
        elif isinstance(event, yaml.CollectionEndEvent):
            done = open_.pop()
            add(done.size, done.height, done.anchor)
        elif isinstance(event, yaml.ScalarEvent):
            add(len(event.value) + 1, 0, event.anchor)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise DocumentError(path, f"alias *{event.anchor} has no anchor before it")
            add(*anchors[event.anchor], None)
    if not documents:
        raise DocumentError(path, "empty; it must hold one YAML document")


def _depth(value: Any) -> int:
    """How many lists and mappings deep `value` is, found without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in item)
    return deepest


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what, and at which line and column."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.character!r} at offset {exc.position} is not allowed"
    return str(exc).splitlines()[0]


def load_model_deployment(path: Path) -> ModelDeployment:
    """Read and validate one ModelDeployment from a YAML file."""
    return parse_model_deployment(read_document(path), source=str(path))
