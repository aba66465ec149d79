"""`torchrollout archive build` and `archive fetch`: the command line over `build` and `store`.

`build` parses options, reads the config and sample-input JSON files, shows download progress
on stderr, prints the JSON summary on stdout. With `--store STORE --revision REV` it runs
`store.build_into_store`: a committed archive of that revision is reused (said on stderr),
else it is built and uploaded; `--digest-file` receives the archive's hex sha256 (a build Job
passes /dev/termination-log, where the operator reads it). `fetch` copies a stored archive
into a folder and refuses one whose sha256 is not the expected one.

On failure each prints `archive build|fetch failed at <step>: <reason>` on stderr and exits 1
(2 for usage errors: unreadable --config, --sample-input or --ca-bundle, an --output that
is not a writable folder). torch and TorchServe are imported only when a build runs, so
this module (and `torchrollout --help`) loads fast.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from torchrollout.archive.errors import ArchiveError, PublishError, UsageError
from torchrollout.spec.document import DocumentError, read_json

app = typer.Typer(help="Build and check TorchServe model archives.", no_args_is_help=True)
_stderr = Console(stderr=True)


class StderrProgress:
    """Download progress on stderr: a rich bar on a terminal, one plain line per file else."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._name = ""
        self._size = 0

    def start(self, name: str, total: int | None) -> None:
        self._name, self._size = name, 0
        if self._console.is_terminal:
            self._progress = Progress(
                TextColumn("fetch {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=self._console,
            )
            self._progress.start()
            self._task = self._progress.add_task(name, total=total)

    def advance(self, size: int) -> None:
        self._size += size
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, size)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        else:
            sys.stderr.write(f"fetched {self._name} ({self._size} bytes)\n")


def _read_json(path: Path | None, option: str) -> Any:
    """The JSON in the file given to `option`; UsageError naming the file and the problem."""
    if path is None:
        return None
    try:
        return read_json(path)
    except DocumentError as exc:
        raise UsageError(f"{option} {exc}") from exc


def _check_output(output: Path) -> None:
    """UsageError unless `output` is, or can be made, a writable folder."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output {output}: cannot create: {exc.strerror}") from exc
    if not os.access(output, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: not writable")


def _check_ca_bundle(path: Path | None) -> None:
    """UsageError unless `path` (when given) is a readable PEM bundle of certificates."""
    if path is None:
        return
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise UsageError(f"--ca-bundle {path}: no certificate in it; give a PEM bundle") from exc
    except OSError as exc:
        raise UsageError(f"--ca-bundle {path}: cannot read: {exc.strerror}") from exc


@app.command()
def build(
    *,
    source: Annotated[
        str, typer.Option(help="Weights URI: https://, s3://, pvc://, file://, path.")
    ],
    handler: Annotated[
        str, typer.Option(help="A built-in handler name or a custom handler .py URI.")
    ],
    name: Annotated[str, typer.Option(help="Model name (the archive is NAME.mar).")],
    version: Annotated[str, typer.Option(help="Model version (label model_version).")],
    output: Annotated[Path, typer.Option(help="Folder the archive is published into.")],
    sha256: Annotated[
        str | None, typer.Option(help="Expected sha256 of the weights (hex).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Handler config JSON file.")] = None,
    sample_input: Annotated[
        Path | None, typer.Option(help="A request body (JSON) run through the archive.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="TorchServe batchSize.")] = None,
    max_batch_delay: Annotated[
        int | None, typer.Option(help="TorchServe maxBatchDelay (ms).")
    ] = None,
    ca_bundle: Annotated[
        Path | None, typer.Option(help="PEM bundle to trust for https sources.")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Archive store (s3://bucket/prefix, pvc://claim/path, file:///path): the "
            "archive goes to STORE/NAME/REVISION/NAME.mar, and is reused when already there."
        ),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="The revision the archive belongs to (with --store).")
    ] = None,
    digest_file: Annotated[
        Path | None,
        typer.Option(help="Write the archive's hex sha256 here (e.g. /dev/termination-log)."),
    ] = None,
) -> None:
    """Fetch, verify, pack and smoke-test a model archive; print a JSON summary."""
    from torchrollout.archive.build import BuildRequest, build_archive
    from torchrollout.archive.store import ArchiveStore, build_into_store

    try:
        if (store is None) != (revision is None):
            raise UsageError("--store and --revision: give both or neither")
        _check_output(output)
        _check_ca_bundle(ca_bundle)
        handler_config = _read_json(config, "--config") or {}
        if not isinstance(handler_config, dict):
            raise UsageError("--config: expected a JSON object")
        request = BuildRequest(
            source=source,
            name=name,
            version=version,
            handler=handler,
            output=output,
            sha256=sha256,
            config=handler_config,
            sample_input=_read_json(sample_input, "--sample-input"),
            batch_size=batch_size,
            max_batch_delay_ms=max_batch_delay,
            ca_bundle=ca_bundle,
        )
        progress = StderrProgress(_stderr)
        if store is None or revision is None:
            result = build_archive(request, progress=progress)
            summary, digest = result.summary(), result.sha256
        else:
            stored = build_into_store(
                request, ArchiveStore(store), revision=revision, progress=progress, note=_say
            )
            summary, digest = stored.summary(), stored.archive.sha256
        if digest_file is not None:
            _write_digest(digest_file, digest)
    except ArchiveError as exc:
        _fail("build", exc)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


@app.command()
def fetch(
    *,
    store: Annotated[
        str, typer.Option(help="Archive store: s3://bucket/prefix, pvc://claim/path, file:///…")
    ],
    name: Annotated[str, typer.Option(help="Model name (the archive is NAME.mar).")],
    revision: Annotated[str, typer.Option(help="The revision whose archive to fetch.")],
    sha256: Annotated[
        str, typer.Option(help="The archive's sha256 (hex), as its build reported it.")
    ],
    output: Annotated[Path, typer.Option(help="Folder the archive is copied into.")],
) -> None:
    """Copy STORE/NAME/REVISION/NAME.mar into OUTPUT/NAME.mar, refusing any other sha256."""
    from torchrollout.archive.store import ArchiveStore

    try:
        stored = ArchiveStore(store).download(
            name, revision, output, sha256=sha256, progress=StderrProgress(_stderr)
        )
    except ArchiveError as exc:
        _fail("fetch", exc)
    summary = {
        "archive": str(stored.path),
        "store": stored.uri,
        "sha256": stored.sha256,
        "size_bytes": stored.size,
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")


def _write_digest(path: Path, digest: str) -> None:
    try:
        # No newline: a termination message is read back verbatim.
        path.write_text(digest)
    except OSError as exc:
        raise PublishError(f"--digest-file: cannot write {path}: {exc}") from exc


def _fail(command: str, exc: ArchiveError) -> NoReturn:
    # Plain write, not rich: the message must stay one greppable line in CI logs.
    sys.stderr.write(f"archive {command} failed at {exc.step}: {exc.message}\n")
    raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None
