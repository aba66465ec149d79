"""A whole ModelDeployment document, and how text becomes one.

`load_model_deployment` is the single door for YAML written by users (the CLI, rehearsal,
the operator's handlers): it turns every pydantic and YAML error into a `SpecError`
whose lines name the field, as `spec.canary.steps: steps must increase strictly ...`.
"""

from __future__ import annotations

import hashlib
import json
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


def parse_model_deployment(document: Any, *, source: str = "") -> ModelDeployment:
    """A ModelDeployment from a parsed YAML/JSON object; SpecError if it is not one."""
    if not isinstance(document, dict):
        got = type(document).__name__
        raise SpecError([FieldProblem("", f"expected a mapping, got {got}")], source=source)
    try:
        return ModelDeployment.model_validate(document)
    except ValidationError as exc:
        raise SpecError(problems_of(exc), source=source) from exc


def read_document(path: Path) -> Any:
    """The YAML document in `path`; SpecError when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(
            [FieldProblem("", f"cannot read: {exc.strerror}")], source=str(path)
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError([FieldProblem("", f"not valid YAML: {exc}")], source=str(path)) from exc


def load_model_deployment(path: Path) -> ModelDeployment:
    """Read and validate one ModelDeployment from a YAML file."""
    return parse_model_deployment(read_document(path), source=str(path))
