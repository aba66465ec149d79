"""Build a TorchServe model archive (.mar) from a weights source, step by step.

`build_archive` is what `torchrollout archive build` (and the pod's init container) runs:

    fetch       the weights (and a custom handler given as a URI) into a private temp dir
    verify      their sha256 against the expected digest
    load        refuse weights torch.load(weights_only=True) refuses; tell the format
    pack        weights + handler + shared modules + config + metrics.yaml with the real
                torch-model-archiver, into the temp dir
    load        the archive through its handler in-process (smoke.py)
    smoke-test  run the sample input through it
    publish     atomic rename of the .mar into the output folder

The temp dir lives inside the output folder (so the rename never crosses filesystems) and is
removed whatever happens: a failed build leaves no `<name>.mar` behind, and a successful one
replaces an older archive in a single step. Each failure is an `ArchiveError` naming its step.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrollout.archive import handlers
from torchrollout.archive.errors import PackError, UsageError
from torchrollout.archive.fetch import HANDLER_LIMIT, Fetched, Progress, fetch, verify
from torchrollout.archive.smoke import smoke_test, ts_unclosed_files
from torchrollout.archive.weights import inspect_weights

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class BuildRequest:
    """Everything one archive build needs; `config` is the handler config (a JSON object)."""

    source: str
    name: str
    version: str
    handler: str
    output: Path
    sha256: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    sample_input: Any | None = None
    batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class BuildResult:
    """A published archive and what was measured on the way."""

    archive: Path
    sha256: str
    size: int
    source: Fetched
    weights_format: str
    handler: str
    fetch_seconds: float
    pack_seconds: float
    load_seconds: float
    smoke_seconds: float
    sample_output: Any

    def summary(self) -> dict[str, Any]:
        """The JSON summary the CLI prints."""
        return {
            "archive": str(self.archive),
            "sha256": self.sha256,
            "size_bytes": self.size,
            "source": {
                "uri": self.source.uri,
                "sha256": self.source.sha256,
                "size_bytes": self.source.size,
            },
            "weights_format": self.weights_format,
            "handler": self.handler,
            "fetch_seconds": round(self.fetch_seconds, 4),
            "pack_seconds": round(self.pack_seconds, 4),
            "load_seconds": round(self.load_seconds, 4),
            "smoke_test_seconds": round(self.smoke_seconds, 4),
            "sample_output": self.sample_output,
        }


def _check(request: BuildRequest) -> None:
    for label, value in (("--name", request.name), ("--version", request.version)):
        if not _NAME.match(value):
            raise UsageError(f"{label}: {value!r} must match {_NAME.pattern}")
    if request.batch_size is not None and request.batch_size < 1:
        raise UsageError("--batch-size: must be at least 1")
    if request.max_batch_delay_ms is not None and request.max_batch_delay_ms < 0:
        raise UsageError("--max-batch-delay: must not be negative")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _handler_file(request: BuildRequest, code_dir: Path, progress: Progress | None) -> Path:
    builtin = handlers.builtin_handler(request.handler)
    if builtin is not None:
        return builtin
    if "://" not in request.handler and not request.handler.endswith(".py"):
        known = ", ".join(handlers.BUILTIN_HANDLERS)
        raise UsageError(
            f"--handler: {request.handler!r} is not a built-in ({known}) nor a .py URI"
        )
    custom = fetch(
        request.handler,
        code_dir,
        progress=progress,
        ca_bundle=request.ca_bundle,
        limit=HANDLER_LIMIT,
    ).path
    handlers.check_custom_handler(custom)
    return custom


def _torchserve_model_config(request: BuildRequest, path: Path) -> Path | None:
    # TorchServe reads batching from the archive's model-config.yaml (--config-file), so a
    # server started with `--models name=file.mar` batches without a management call.
    lines = []
    if request.batch_size is not None:
        lines.append(f"batchSize: {request.batch_size}")
    if request.max_batch_delay_ms is not None:
        lines.append(f"maxBatchDelay: {request.max_batch_delay_ms}")
    if not lines:
        return None
    path.write_text("\n".join(lines) + "\n")
    return path


def _pack(
    request: BuildRequest, *, weights: Path, handler: Path, extras: list[Path], export: Path
) -> Path:
    with ts_unclosed_files():  # model_archiver reads its version.txt the same way
        from model_archiver.model_archiver_config import ModelArchiverConfig
        from model_archiver.model_packaging import package_model
        from model_archiver.model_packaging_utils import ModelExportUtils

    model_config = _torchserve_model_config(request, export.parent / "model-config.yaml")
    config = ModelArchiverConfig(
        model_name=request.name,
        handler=str(handler),
        version=request.version,
        serialized_file=str(weights),
        extra_files=",".join(str(p) for p in extras),
        export_path=str(export),
        config_file=None if model_config is None else str(model_config),
        force=True,
    )
    try:
        # generate_model_archive() would also call logging.basicConfig; these two are its body.
        package_model(config, manifest=ModelExportUtils.generate_manifest_json(config))
    except (Exception, SystemExit) as exc:  # model_archiver exits on some invalid inputs
        raise PackError(f"torch-model-archiver failed: {type(exc).__name__}: {exc}") from exc
    mar = export / f"{request.name}.mar"
    if not mar.is_file():
        raise PackError(f"torch-model-archiver wrote no {mar.name}")
    return mar


def build_archive(request: BuildRequest, *, progress: Progress | None = None) -> BuildResult:
    """Run every step; return the published archive or raise the failing step's error."""
    _check(request)
    request.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=request.output, prefix=".build-") as tmp:
        work = Path(tmp)
        for sub in ("weights", "code", "export", "load"):
            (work / sub).mkdir()
        start = time.perf_counter()
        fetched = fetch(
            request.source, work / "weights", progress=progress, ca_bundle=request.ca_bundle
        )
        verify(fetched, request.sha256)
        handler = _handler_file(request, work / "code", progress)
        fetch_seconds = time.perf_counter() - start

        declared = request.config.get("format")
        weights_format = inspect_weights(fetched.path, None if declared is None else str(declared))

        config_file = work / "code" / handlers.CONFIG_FILE
        config_file.write_text(json.dumps(dict(request.config), indent=2) + "\n")
        start = time.perf_counter()
        mar = _pack(
            request,
            weights=fetched.path,
            handler=handler,
            extras=[*handlers.shared_files(), config_file],
            export=work / "export",
        )
        pack_seconds = time.perf_counter() - start

        smoke = smoke_test(mar, work / "load", model_name=request.name, sample=request.sample_input)
        digest, size = _sha256(mar), mar.stat().st_size
        target = request.output / mar.name
        mar.replace(target)
    return BuildResult(
        archive=target,
        sha256=digest,
        size=size,
        source=fetched,
        weights_format=weights_format,
        handler=request.handler,
        fetch_seconds=fetch_seconds,
        pack_seconds=pack_seconds,
        load_seconds=smoke.load_seconds,
        smoke_seconds=smoke.smoke_seconds,
        sample_output=smoke.output,
    )
