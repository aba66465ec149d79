"""Load a built .mar through its handler in this process, the way a TorchServe worker does,
and run a sample request through it.

Called by `build.py` as its last two steps ("load", then "smoke-test"). It uses TorchServe's
own `ts` package: `TsModelLoader.load` imports the handler module from the extracted archive,
builds the worker's `Context` (manifest, model dir, a metrics cache from the packed
metrics.yaml) and calls `initialize`; the sample goes through the handler's `handle` with one
request in the batch, exactly as a worker passes it, and the HTTP status the handler set (or
its PredictionException) decides success.

The handler modules are imported by their plain names (TorchServe puts the model dir on the
path); they are removed from `sys.modules` before and after, so archives built one after the
other in one process never see each other's code.

The archive is a zip; before anything is extracted every member is checked (`check_members`):
an absolute name, a `..` that climbs out of the folder, or a symbolic link refuses the whole
archive (`UnsafeArchive`), so a hostile .mar writes nothing anywhere.
"""

from __future__ import annotations

import json
import logging
import stat
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrollout.archive.errors import LoadError, SmokeTestFailed, UnsafeArchive
from torchrollout.archive.handlers import METRICS_CONFIG


@dataclass(frozen=True)
class SmokeResult:
    """Timings of the in-process load and sample run, and the handler's answer."""

    load_seconds: float
    smoke_seconds: float
    output: Any


@contextmanager
def ts_unclosed_files() -> Iterator[None]:
    """Silence the ResourceWarnings TorchServe 0.12 causes by reading files it never closes
    (its version.txt at import, metrics.yaml when building a metrics cache)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


@contextmanager
def _importable(model_dir: Path) -> Iterator[None]:
    names = {p.stem for p in model_dir.glob("*.py")}

    def purge() -> None:
        for name in names:
            sys.modules.pop(name, None)

    purge()
    sys.path.insert(0, str(model_dir))
    try:
        yield
    finally:
        sys.path.remove(str(model_dir))
        purge()


def _metrics_cache(model_dir: Path, model_name: str) -> Any:
    with ts_unclosed_files():
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

        config = model_dir / METRICS_CONFIG
        if not config.is_file():
            return None
        cache = MetricsCacheYamlImpl(config_file_path=str(config))
    cache.initialize_cache()
    cache.model_name = model_name
    return cache


class LoadedArchive:
    """An archive loaded through its handler in this process; `handle` runs one batch."""

    def __init__(self, service: Any, model_dir: Path, load_seconds: float) -> None:
        self.service = service
        self.model_dir = model_dir
        self.load_seconds = load_seconds

    def handle(self, bodies: list[Any]) -> list[tuple[int, Any]]:
        """(HTTP status, answer) per request body, as if one TorchServe batch held them all.

        A PredictionException (how a handler refuses a batch of one) becomes its status.
        """
        from ts.context import RequestProcessor
        from ts.utils.util import PredictionException

        context = self.service.context
        context.request_ids = {k: f"torchrollout-{k}" for k in range(len(bodies))}
        context.request_processor = [RequestProcessor({}) for _ in bodies]
        if context.metrics is not None:
            context.metrics.request_ids = context.request_ids
        rows = [{"body": json.dumps(body).encode()} for body in bodies]
        try:
            answers = self.service._entry_point(rows, context)
        except PredictionException as exc:
            error = {"code": exc.error_code, "message": exc.message}
            return [(int(exc.error_code), error) for _ in bodies]
        if not isinstance(answers, list) or len(answers) != len(bodies):
            raise TypeError(f"the handler returned {answers!r} for {len(bodies)} requests")
        return [
            (int(context.get_response_status(k)[0]), _decoded(a)) for k, a in enumerate(answers)
        ]


def _decoded(answer: Any) -> Any:
    """An answer as TorchServe would send it, parsed: handlers may return JSON already
    encoded (bytes or text) or an object TorchServe encodes."""
    if isinstance(answer, bytes | bytearray | str):
        try:
            return json.loads(answer)
        except ValueError:
            return answer
    return answer


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member may not be extracted, or None when it lands safely inside."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.split("/"):
        return "a path that climbs out of the folder with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def check_members(archive: zipfile.ZipFile, label: str) -> None:
    """UnsafeArchive naming the first member of `archive` that must not be extracted."""
    for info in archive.infolist():
        problem = _member_problem(info)
        if problem is not None:
            raise UnsafeArchive(
                f"{label}: member {info.filename!r} is {problem}; refused before extracting "
                "anything: rebuild the archive with torchrollout archive build"
            )


def _extract(mar: Path, model_dir: Path) -> None:
    """Extract `mar` into `model_dir` once every member is known to stay inside it."""
    with zipfile.ZipFile(mar) as archive:
        check_members(archive, mar.name)
        archive.extractall(model_dir)


def load_archive(mar: Path, work_dir: Path, *, model_name: str) -> LoadedArchive:
    """Extract `mar` into `work_dir` and load it through its handler; LoadError on failure."""
    with ts_unclosed_files():
        from ts.model_loader import TsModelLoader

    model_dir = work_dir / model_name
    try:
        _extract(mar, model_dir)
        manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
        handler = manifest["model"]["handler"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise LoadError(f"{mar.name} is not a readable model archive: {exc}") from exc
    # The ts loggers report every metric at INFO; keep a CLI's stderr for progress and errors.
    logging.getLogger("ts").setLevel(logging.WARNING)
    with _importable(model_dir):
        start = time.perf_counter()
        try:
            service = TsModelLoader().load(
                model_name,
                str(model_dir),
                handler,
                None,
                1,
                metrics_cache=_metrics_cache(model_dir, model_name),
            )
        except Exception as exc:
            raise LoadError(
                f"the handler could not load the model: {type(exc).__name__}: {exc}"
            ) from exc
        return LoadedArchive(service, model_dir, time.perf_counter() - start)


def smoke_test(mar: Path, work_dir: Path, *, model_name: str, sample: Any | None) -> SmokeResult:
    """Load `mar` through its handler and run `sample` (if any) as a batch of one request."""
    loaded = load_archive(mar, work_dir, model_name=model_name)
    if sample is None:
        return SmokeResult(load_seconds=loaded.load_seconds, smoke_seconds=0.0, output=None)
    start = time.perf_counter()
    try:
        [(status, answer)] = loaded.handle([sample])
    except Exception as exc:
        raise SmokeTestFailed(f"the handler raised {type(exc).__name__}: {exc}") from exc
    if status != 200:
        message = answer.get("message", answer) if isinstance(answer, dict) else answer
        raise SmokeTestFailed(f"sample input answered HTTP {status}: {message}")
    return SmokeResult(
        load_seconds=loaded.load_seconds,
        smoke_seconds=time.perf_counter() - start,
        output=answer,
    )
