"""The archive store: where one build Job per revision leaves the archive that every pod fetches.

Layout, for a store URI `s3://bucket/prefix`, `pvc://claim/path` or `file:///path`:

    <store>/<name>/<revision>/<name>.mar          the archive
    <store>/<name>/<revision>/<name>.mar.sha256   its hex sha256 and a newline: the commit marker

The .mar is written first and the .sha256 last, so a .mar without its .sha256 (or with one
that does not match it) is an unfinished upload: the next build overwrites it. Local stores
(pvc://, mounted at $TORCHROLLOUT_PVC_ROOT/claim like pvc sources, and file://) write to a
hidden temp file and rename it, so a reader never sees half a file; S3 objects appear whole.

`build_into_store` is what `torchrollout archive build --store` runs: reuse the committed
archive when its bytes match its marker, else build and upload. `ArchiveStore.download` is
what `torchrollout archive fetch` (a model pod's init container) runs: copy the .mar, hashing
it on the way, and keep it only when it has the digest the build Job reported. Store failures
are `StoreError` (step "store") with a sentence saying what to fix.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

from torchrollout.archive.build import BuildRequest, BuildResult, build_archive
from torchrollout.archive.errors import (
    ArchiveDigestMismatch,
    ArchiveMissing,
    FetchError,
    StoreError,
    UsageError,
)
from torchrollout.archive.fetch import (
    CHUNK,
    NOT_FOUND_CODES,
    PVC_ROOT_ENV,
    Fetched,
    Progress,
    Stream,
    check_sha256,
    claim_mount,
    local_path,
    read_chunks,
    s3_client,
    s3_error_code,
    s3_errors,
    s3_problem,
    s3_stream,
    split_s3_uri,
    write_stream,
)

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Backend(Protocol):
    """Objects under one store URI, addressed by keys like `name/revision/name.mar`."""

    uri: str

    def read_text(self, key: str) -> str | None:
        """A small object's text, None when it is absent."""
        ...

    def open(self, key: str) -> AbstractContextManager[Stream]:
        """Stream an object; ArchiveMissing when it is absent."""
        ...

    def put_file(self, path: Path, key: str) -> None: ...

    def put_text(self, text: str, key: str) -> None: ...


class LocalBackend:
    """A folder: a file:// path, or a pvc:// claim mounted under $TORCHROLLOUT_PVC_ROOT."""

    def __init__(self, uri: str, root: Path, *, mount: Path | None = None) -> None:
        self.uri = uri
        self.root = root
        self.mount = mount  # the claim's mount point, which must exist (pvc:// only)

    def _error(self, exc: OSError, path: Path, doing: str) -> StoreError:
        if exc.errno == errno.ENOSPC:
            return StoreError(
                f"{self.uri}: no space left on the device {doing} {path}: free space in the "
                "store or give it a larger volume"
            )
        if exc.errno == errno.EROFS:
            return StoreError(
                f"{self.uri}: read-only file system {doing} {path}: mount the store "
                "read-write for the build Job"
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return StoreError(
                f"{self.uri}: permission denied {doing} {path}: let the pod's user write "
                "there (e.g. the pod's fsGroup, or the folder's owner)"
            )
        return StoreError(f"{self.uri}: {exc.strerror or exc} {doing} {path}")

    def _check_mount(self) -> None:
        if self.mount is not None and not self.mount.is_dir():
            raise StoreError(
                f"{self.uri}: the claim's volume is not mounted at {self.mount}: mount the "
                f"claim there (${PVC_ROOT_ENV}/<claim>)"
            )

    def read_text(self, key: str) -> str | None:
        self._check_mount()
        path = self.root / key
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc, path, "reading") from exc

    @contextmanager
    def open(self, key: str) -> Iterator[Stream]:
        self._check_mount()
        path = self.root / key
        try:
            with path.open("rb") as src:
                yield Stream(self._chunks(src, path), os.fstat(src.fileno()).st_size)
        except FileNotFoundError as exc:
            raise ArchiveMissing(f"no archive at {self.uri}/{key} ({path})") from exc
        except OSError as exc:
            raise self._error(exc, path, "reading") from exc

    def _chunks(self, src: BinaryIO, path: Path) -> Iterator[bytes]:
        # A read error is the store's; the caller's own write errors stay the caller's.
        try:
            yield from read_chunks(src)
        except OSError as exc:
            raise self._error(exc, path, "reading") from exc

    def _write(self, key: str, write: Callable[[Path], None]) -> None:
        self._check_mount()
        dest = self.root / key
        # Named by host and pid, not at random: unique per pod, yet known to a test.
        partial = dest.with_name(f".{dest.name}.{socket.gethostname()}-{os.getpid()}.partial")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            write(partial)
            partial.replace(dest)
            _fsync_dir(dest.parent)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise self._error(exc, dest, "writing") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def put_file(self, path: Path, key: str) -> None:
        def copy(partial: Path) -> None:
            with path.open("rb") as src, partial.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())

        self._write(key, copy)

    def put_text(self, text: str, key: str) -> None:
        def write(partial: Path) -> None:
            with partial.open("w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())

        self._write(key, write)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder is synced (a node crash must not lose it).
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Backend:
    """s3://bucket/prefix through boto3 (AWS_ENDPOINT_URL, the standard credential chain)."""

    def __init__(self, uri: str, bucket: str, prefix: str) -> None:
        self.uri = uri
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = s3_client()
            except FetchError as exc:
                raise StoreError(f"{self.uri}: {exc.message}") from exc
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, need: str) -> StoreError:
        return StoreError(f"{self.uri}: {s3_problem(exc, bucket=self.bucket, need=need)}")

    def read_text(self, key: str) -> str | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            data: bytes = obj["Body"].read()
        except s3_errors() as exc:
            if s3_error_code(exc) in NOT_FOUND_CODES:
                return None
            raise self._error(exc, "s3:GetObject") from exc
        return data.decode("utf-8", errors="replace")

    @contextmanager
    def open(self, key: str) -> Iterator[Stream]:
        try:
            with s3_stream(self.client, self.bucket, self._key(key)) as stream:
                yield stream
        except s3_errors() as exc:
            if s3_error_code(exc) in NOT_FOUND_CODES:
                raise ArchiveMissing(f"no archive at {self.uri}/{key}") from exc
            raise self._error(exc, "s3:GetObject") from exc

    def put_file(self, path: Path, key: str) -> None:
        import boto3.exceptions

        try:
            # upload_file switches to a multipart upload for large archives.
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except boto3.exceptions.S3UploadFailedError as exc:
            cause = exc.__context__  # boto3 raises it while handling the ClientError
            raise self._error(
                cause if isinstance(cause, Exception) else exc, "s3:PutObject"
            ) from exc
        except s3_errors() as exc:
            raise self._error(exc, "s3:PutObject") from exc

    def put_text(self, text: str, key: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=text.encode(), ContentType="text/plain"
            )
        except s3_errors() as exc:
            raise self._error(exc, "s3:PutObject") from exc


def backend_for(uri: str) -> Backend:
    """The backend of a store URI; UsageError for anything but s3://, pvc:// or file://."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3" and parsed.netloc:
        bucket, prefix = split_s3_uri(uri)
        return S3Backend(uri, bucket, prefix)
    if parsed.scheme == "pvc" and parsed.netloc:
        try:
            root = local_path(uri)
        except FetchError as exc:  # a `..` that would leave the claim
            raise UsageError(f"--store: {exc.message}") from exc
        assert root is not None
        return LocalBackend(uri, root, mount=claim_mount(uri))
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path:
        root = local_path(uri)
        assert root is not None
        return LocalBackend(uri, root)
    raise UsageError(
        f"--store: {uri!r} is not a store URI; expected s3://bucket/prefix, "
        "pvc://claim/path or file:///path"
    )


@dataclass(frozen=True)
class StoredArchive:
    """A committed archive in a store, and (after a download or build) its local copy."""

    uri: str
    sha256: str
    size: int
    path: Path | None = None


class ArchiveStore:
    """One store URI and its layout; `backend` is the seam a test may replace."""

    def __init__(self, uri: str, backend: Backend | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.backend = backend if backend is not None else backend_for(self.uri)

    @staticmethod
    def mar_key(name: str, revision: str) -> str:
        for label, value in (("--name", name), ("--revision", revision)):
            if not _SEGMENT.match(value):
                raise UsageError(f"{label}: {value!r} must match {_SEGMENT.pattern}")
        return f"{name}/{revision}/{name}.mar"

    def mar_uri(self, name: str, revision: str) -> str:
        return f"{self.uri}/{self.mar_key(name, revision)}"

    def committed_digest(self, name: str, revision: str) -> str | None:
        """The digest in the .sha256 marker, None when there is no (well-formed) marker."""
        text = self.backend.read_text(self.mar_key(name, revision) + ".sha256")
        words = (text or "").split()
        if not words:
            return None
        try:
            return check_sha256(words[0])
        except UsageError:
            return None

    def download(
        self,
        name: str,
        revision: str,
        output: Path,
        *,
        sha256: str,
        progress: Progress | None = None,
    ) -> StoredArchive:
        """Copy the .mar to output/NAME.mar, verified against `sha256`; no partial file left.

        ArchiveMissing when there is no .mar; ArchiveDigestMismatch when its bytes differ.
        """
        key = self.mar_key(name, revision)
        uri = f"{self.uri}/{key}"
        expected = check_sha256(sha256)
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create --output {output}: {exc}") from exc
        target = output / f"{name}.mar"
        partial = output / f".{name}.mar.{os.getpid()}.partial"
        try:
            with self.backend.open(key) as stream:
                try:
                    fetched: Fetched = write_stream(
                        uri, stream.chunks, partial, stream.total, progress
                    )
                except OSError as exc:
                    raise StoreError(f"cannot write {partial}: {exc}") from exc
            if fetched.sha256 != expected:
                raise ArchiveDigestMismatch(expected=expected, actual=fetched.sha256, source=uri)
            partial.replace(target)
        except ArchiveMissing as exc:
            raise ArchiveMissing(
                f"{exc.message}: the build Job of revision {revision} must finish first"
            ) from exc
        finally:
            partial.unlink(missing_ok=True)
        return StoredArchive(uri=uri, sha256=fetched.sha256, size=fetched.size, path=target)

    def upload(self, mar: Path, name: str, revision: str, *, sha256: str) -> StoredArchive:
        """Put the .mar, then its .sha256 marker: the marker commits the upload."""
        key = self.mar_key(name, revision)
        self.backend.put_file(mar, key)
        self.backend.put_text(f"{sha256}\n", key + ".sha256")
        return StoredArchive(
            uri=f"{self.uri}/{key}", sha256=sha256, size=mar.stat().st_size, path=mar
        )


@dataclass(frozen=True)
class StoreBuild:
    """What `build_into_store` did: the archive in the store, and the build if one ran."""

    archive: StoredArchive
    build: BuildResult | None

    @property
    def reused(self) -> bool:
        return self.build is None

    def summary(self) -> dict[str, Any]:
        """The JSON summary the CLI prints: the build's, plus the store's fields."""
        local = self.archive.path
        base: dict[str, Any] = (
            self.build.summary()
            if self.build is not None
            else {"archive": None if local is None else str(local), "size_bytes": self.archive.size}
        )
        return {
            **base,
            "sha256": self.archive.sha256,
            "store": self.archive.uri,
            "reused": self.reused,
        }


def build_into_store(
    request: BuildRequest,
    store: ArchiveStore,
    *,
    revision: str,
    progress: Progress | None = None,
    note: Callable[[str], None] = lambda _line: None,
    build: Callable[..., BuildResult] | None = None,
) -> StoreBuild:
    """Reuse the committed archive of `revision` when its bytes match its marker; else build
    it (into request.output, as without a store) and upload it.

    `build` (default: this module's `build_archive`, looked up at call time) is the seam
    tests replace, so store behaviour is tested without torch-model-archiver.
    """
    name = request.name
    uri = store.mar_uri(name, revision)
    committed = store.committed_digest(name, revision)
    if committed is not None:
        try:
            found = store.download(
                name, revision, request.output, sha256=committed, progress=progress
            )
        except ArchiveMissing:
            note(f"{uri}.sha256 is there but {uri} is not: building it again")
        except ArchiveDigestMismatch as exc:
            note(f"{uri} does not match its .sha256 ({exc.actual}): building it again")
        else:
            note(f"found {uri} (sha256 {committed}): reusing it, nothing rebuilt")
            return StoreBuild(archive=found, build=None)
    result = (build or build_archive)(request, progress=progress)
    stored = store.upload(result.archive, name, revision, sha256=result.sha256)
    note(f"uploaded {uri} (sha256 {result.sha256})")
    return StoreBuild(archive=stored, build=result)
