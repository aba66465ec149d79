"""Fetch an archive source (weights, custom handler) into a local folder, hashing as it streams.

Called by `build.py` for the weights and for a custom handler given as a URI. Sources:

    https://… / http://…   httpx; TLS trust from `ca_bundle`, else SSL_CERT_FILE / SSL_CERT_DIR,
                           else certifi
    s3://bucket/key        boto3, which honours AWS_ENDPOINT_URL and the standard credentials
    pvc://claim/path       a mounted volume: $TORCHROLLOUT_PVC_ROOT/claim/path (/mnt/pvc)
    file:///path, /path    a local file

The sha256 is computed over the bytes as they are written, so a large file is read once.
All failures become `FetchError`.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import httpx

from torchrollout.archive.errors import DigestMismatch, FetchError, UsageError

CHUNK = 1 << 20
PVC_ROOT_ENV = "TORCHROLLOUT_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"


class Progress(Protocol):
    """Download progress sink (the CLI shows a bar on stderr; tests pass nothing)."""

    def start(self, name: str, total: int | None) -> None: ...

    def advance(self, size: int) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class Fetched:
    """A fetched file: where it is now, its sha256 (hex) and size in bytes."""

    uri: str
    path: Path
    sha256: str
    size: int


def local_path(uri: str) -> Path | None:
    """The filesystem path a file:// / pvc:// / plain-path URI names, None for remote ones."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "pvc":
        root = Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT))
        return root / parsed.netloc / unquote(parsed.path).lstrip("/")
    if parsed.scheme == "":
        return Path(uri)
    return None


def _file_name(uri: str) -> str:
    name = Path(unquote(urlparse(uri).path)).name
    return name or "source"


def _write(
    uri: str, chunks: Iterable[bytes], dest: Path, total: int | None, progress: Progress | None
) -> Fetched:
    digest = hashlib.sha256()
    size = 0
    if progress is not None:
        progress.start(_file_name(uri), total)
    try:
        with dest.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress.advance(len(chunk))
    finally:
        if progress is not None:
            progress.finish()
    return Fetched(uri=uri, path=dest, sha256=digest.hexdigest(), size=size)


def _read_local(path: Path) -> Iterator[bytes]:
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            yield chunk


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    if ca_bundle is None:
        return True  # httpx then honours SSL_CERT_FILE / SSL_CERT_DIR, else certifi
    return ssl.create_default_context(cafile=str(ca_bundle))


def fetch(
    uri: str,
    dest_dir: Path,
    *,
    progress: Progress | None = None,
    ca_bundle: Path | None = None,
    timeout: float = 60.0,
) -> Fetched:
    """Copy `uri` into `dest_dir` (keeping its file name) and hash it; FetchError on failure."""
    dest = dest_dir / _file_name(uri)
    parsed = urlparse(uri)
    path = local_path(uri)
    try:
        if path is not None:
            if not path.is_file():
                raise FetchError(f"{uri}: no such file ({path})")
            return _write(uri, _read_local(path), dest, path.stat().st_size, progress)
        if parsed.scheme in ("http", "https"):
            return _fetch_http(uri, dest, progress, _ssl_context(ca_bundle), timeout)
        if parsed.scheme == "s3":
            return _fetch_s3(uri, dest, progress)
    except OSError as exc:
        raise FetchError(f"{uri}: {exc}") from exc
    raise FetchError(f"{uri}: unsupported scheme {parsed.scheme!r} (https, s3, pvc, file)")


def _fetch_http(
    uri: str, dest: Path, progress: Progress | None, verify: ssl.SSLContext | bool, timeout: float
) -> Fetched:
    try:
        with (
            httpx.Client(verify=verify, timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", uri) as response,
        ):
            if response.status_code != 200:
                raise FetchError(f"{uri}: HTTP {response.status_code}")
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            return _write(uri, response.iter_bytes(CHUNK), dest, total, progress)
    except httpx.HTTPError as exc:
        raise FetchError(f"{uri}: {type(exc).__name__}: {exc}") from exc


def _fetch_s3(uri: str, dest: Path, progress: Progress | None) -> Fetched:
    import boto3
    import botocore.exceptions

    parsed = urlparse(uri)
    bucket, key = parsed.netloc, unquote(parsed.path).lstrip("/")
    if not bucket or not key:
        raise FetchError(f"{uri}: expected s3://bucket/key")
    try:
        client: Any = boto3.client("s3")
        obj = client.get_object(Bucket=bucket, Key=key)
        body = obj["Body"]
        total = obj.get("ContentLength")
        return _write(uri, body.iter_chunks(CHUNK), dest, total, progress)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise FetchError(f"{uri}: {exc}") from exc


def verify(fetched: Fetched, expected: str | None) -> None:
    """Raise DigestMismatch unless `fetched` has the expected sha256 (no-op when None)."""
    if expected is None:
        return
    want = expected.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise UsageError(f"--sha256: expected 64 hex digits, got {expected!r}")
    if fetched.sha256 != want:
        raise DigestMismatch(expected=want, actual=fetched.sha256, source=fetched.uri)
