"""The two ModelDeployments a rehearsal compares, read the way a laptop user writes them.

A rehearsal's YAML points at weights on disk next to it, so a source (and a custom
handler) may be a path relative to the YAML's folder: `models/v2/model.pt`,
`file://models/v2/model.pt`, `file://./model.pt`. The cluster never sees these files, so
they are made absolute here, before validation, and the spec's own rules then apply
unchanged. `--interval-override` replaces `spec.canary.interval` the same way, so a bad
value is reported with its field path like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchrollout.errors import TorchrolloutError
from torchrollout.spec.document import (
    ModelDeployment,
    compute_revision,
    parse_model_deployment,
    read_document,
)
from torchrollout.spec.resource import ModelDeploymentSpec


class RehearsalError(TorchrolloutError):
    """The rehearsal cannot run: bad input, or a server that would not start (exit 2)."""


@dataclass(frozen=True)
class Revision:
    """One side of the rehearsal: the resource, where it came from and its revision."""

    path: Path
    resource: ModelDeployment
    revision: str

    @property
    def spec(self) -> ModelDeploymentSpec:
        return self.resource.spec

    @property
    def version(self) -> str:
        return self.resource.spec.model.version


def _absolute(uri: str, base: Path) -> str:
    """A local source written relative to `base` as an absolute file:// URI; others as is."""
    if uri.startswith("file://"):
        rest = uri.removeprefix("file://")
        if rest.startswith("/"):
            return uri
        return (base / rest).resolve().as_uri()
    if "://" in uri or uri.startswith("/"):
        return uri
    return (base / uri).resolve().as_uri()


def load_revision(path: Path, *, interval_override: str | None = None) -> Revision:
    """One ModelDeployment from `path`, relative sources resolved; SpecError if invalid."""
    document = read_document(path)
    base = path.resolve().parent
    spec = document.get("spec") if isinstance(document, dict) else None
    model = spec.get("model") if isinstance(spec, dict) else None
    if isinstance(model, dict):
        source = model.get("source")
        if isinstance(source, dict) and isinstance(source.get("uri"), str):
            model["source"] = {**source, "uri": _absolute(source["uri"], base)}
        handler = model.get("handler")
        if isinstance(handler, str) and handler.endswith(".py"):
            model["handler"] = _absolute(handler, base)
    if interval_override is not None and isinstance(spec, dict):
        canary = spec.get("canary")
        spec["canary"] = {
            **(canary if isinstance(canary, dict) else {}),
            "interval": interval_override,
        }
    resource = parse_model_deployment(document, source=str(path))
    return Revision(path=path, resource=resource, revision=compute_revision(resource.spec))


@dataclass(frozen=True)
class Pair:
    """The stable revision and the canary that the rehearsal rolls out over it."""

    stable: Revision
    canary: Revision

    @property
    def namespace(self) -> str:
        return self.canary.resource.metadata.namespace

    @property
    def name(self) -> str:
        return self.canary.resource.metadata.name


def load_pair(stable: Path, canary: Path, *, interval_override: str | None = None) -> Pair:
    """Both resources, checked to describe one ModelDeployment at two revisions."""
    # The override is the canary's policy; the stable YAML is only what runs before it.
    pair = Pair(load_revision(stable), load_revision(canary, interval_override=interval_override))
    old, new = pair.stable.resource.metadata, pair.canary.resource.metadata
    if (old.namespace, old.name) != (new.namespace, new.name):
        raise RehearsalError(
            f"--stable and --canary must be one ModelDeployment at two versions: "
            f"{old.namespace}/{old.name} and {new.namespace}/{new.name} differ in metadata"
        )
    if pair.stable.resource.model_name != pair.canary.resource.model_name:
        raise RehearsalError(
            "--stable and --canary serve different TorchServe model names "
            f"({pair.stable.resource.model_name} and {pair.canary.resource.model_name}); "
            "spec.model.name must be the same"
        )
    if pair.stable.revision == pair.canary.revision:
        raise RehearsalError(
            f"--canary is the same revision as --stable ({pair.canary.revision}): nothing to "
            "roll out; change spec.model (version, source or config)"
        )
    return pair
