"""Fetch an archive source (weights, custom handler) into a local folder, hashing as it streams.

Called by `build.py` for the weights and for a custom handler given as a URI, by `store.py`
(through `write_stream`) for archives, and by the operator's evaluation sender (through
`open_source`) for datasets. Sources:

    https://… / http://…   httpx; TLS trust from `ca_bundle`, else SSL_CERT_FILE / SSL_CERT_DIR,
                           else certifi. When $TORCHROLLOUT_HTTPS_TOKEN is set, `fetch` sends
                           `Authorization: Bearer <token>` to https:// URIs (never over plain
                           http://, nor to another origin after a redirect). The operator
                           fills the variable from a Secret.
    s3://bucket/key        boto3, which honours AWS_ENDPOINT_URL and the standard credential
                           chain (environment, web identity, profile, instance role)
    pvc://claim/path       a mounted volume: $TORCHROLLOUT_PVC_ROOT/claim/path (/mnt/pvc)
    file:///path, /path    a local file

The sha256 is computed over the bytes as they are written, so a large file is read once.
All failures become `FetchError`, with a sentence saying what to fix where one is known.

Hostile sources are refused before their bytes are used:
    - http(s) redirects are followed here, hop by hop, at most MAX_REDIRECTS of them; a loop,
      a redirect from https to plain http, or to another scheme is refused (whatever client
      the caller passes), and the bearer token only goes to the origin it was meant for;
    - a body shorter than its Content-Length (a connection closed early) is "truncated";
    - `fetch` stops at a size cap (`source_limit()`: MAX_SOURCE_BYTES for weights,
      $TORCHROLLOUT_MAX_SOURCE_BYTES overriding it; HANDLER_LIMIT for handler code), refusing
      a declared size over it before reading, and writes to a partial file that only a
      complete download renames into place;
    - a pvc:// path may not climb out of its claim with `..`, nor through a symbolic link.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlparse

import httpx

from torchrollout.archive.errors import DigestMismatch, FetchError, UsageError

CHUNK = 1 << 20
PVC_ROOT_ENV = "TORCHROLLOUT_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"
HTTPS_TOKEN_ENV = "TORCHROLLOUT_HTTPS_TOKEN"
MAX_REDIRECTS = 10
MAX_SOURCE_BYTES = 20 << 30  # a model source (weights); $TORCHROLLOUT_MAX_SOURCE_BYTES overrides
MAX_SOURCE_BYTES_ENV = "TORCHROLLOUT_MAX_SOURCE_BYTES"
MAX_HANDLER_BYTES = 1 << 20  # a custom handler's .py file

_HTTP_HINTS = {
    401: "the server wants a bearer token (none was sent, or it was refused)",
    403: "the bearer token has no access to it",
    404: "not found",
}


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


@dataclass(frozen=True)
class Stream:
    """An open source: its bytes in chunks, and its size when the source says it."""

    chunks: Iterator[bytes]
    total: int | None


def local_path(uri: str) -> Path | None:
    """The filesystem path a file:// / pvc:// / plain-path URI names, None for remote ones."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "pvc":
        return claim_mount(uri) / _claim_relative(uri)
    if parsed.scheme == "":
        return Path(uri)
    return None


def claim_mount(uri: str) -> Path:
    """Where the claim of a pvc:// URI is mounted: $TORCHROLLOUT_PVC_ROOT/claim (/mnt/pvc)."""
    claim = urlparse(uri).netloc
    if claim in ("", ".", ".."):
        raise FetchError(f"{uri}: expected pvc://claim/path, with the claim's name first")
    return Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT)) / claim


def _claim_relative(uri: str) -> str:
    """The path inside the claim; FetchError when a `..` would climb out of it."""
    relative = unquote(urlparse(uri).path).lstrip("/")
    if ".." in relative.split("/"):
        raise FetchError(
            f"{uri}: '..' in a pvc:// path could leave the claim's volume; "
            "name the file by its path inside the claim"
        )
    return relative


def https_token() -> str | None:
    """The bearer token for https sources, from $TORCHROLLOUT_HTTPS_TOKEN (None if unset)."""
    return os.environ.get(HTTPS_TOKEN_ENV, "").strip() or None


def auth_headers(uri: str, token: str | None) -> dict[str, str]:
    """`Authorization: Bearer` for an https URI when there is a token; nothing over http."""
    if token and urlparse(uri).scheme == "https":
        return {"Authorization": f"Bearer {token}"}
    return {}


def _file_name(uri: str) -> str:
    name = Path(unquote(urlparse(uri).path)).name
    return name if name not in ("", ".", "..") else "source"


def _size(count: int) -> str:
    """A byte count the way a limit is said: GiB, MiB or bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count} bytes"


@dataclass(frozen=True)
class SizeLimit:
    """How many bytes `fetch` reads of one kind of file, and what to say when there are more."""

    what: str
    max_bytes: int
    fix: str


def source_limit() -> SizeLimit:
    """The cap of a model source: $TORCHROLLOUT_MAX_SOURCE_BYTES, else MAX_SOURCE_BYTES."""
    configured = os.environ.get(MAX_SOURCE_BYTES_ENV, "").strip()
    if configured and (not configured.isdigit() or int(configured) < 1):
        raise UsageError(
            f"${MAX_SOURCE_BYTES_ENV}: expected a positive number of bytes, got {configured!r}"
        )
    return SizeLimit(
        what="a model source",
        max_bytes=int(configured) if configured else MAX_SOURCE_BYTES,
        fix=f"set ${MAX_SOURCE_BYTES_ENV} (bytes) if the weights really are that large",
    )


HANDLER_LIMIT = SizeLimit(
    what="a handler file",
    max_bytes=MAX_HANDLER_BYTES,
    fix="a handler is one Python module; is the URI the right file?",
)


def write_stream(
    uri: str, chunks: Iterable[bytes], dest: Path, total: int | None, progress: Progress | None
) -> Fetched:
    """Write `chunks` to `dest`, hashing them on the way; `uri` only names them."""
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


def read_chunks(src: BinaryIO) -> Iterator[bytes]:
    """An open file's bytes, CHUNK at a time."""
    while chunk := src.read(CHUNK):
        yield chunk


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    if ca_bundle is None:
        return True  # httpx then honours SSL_CERT_FILE / SSL_CERT_DIR, else certifi
    return ssl.create_default_context(cafile=str(ca_bundle))


@contextmanager
def open_source(
    uri: str,
    *,
    client: httpx.Client | None = None,
    ca_bundle: Path | None = None,
    token: str | None = None,
    timeout: float = 60.0,
) -> Iterator[Stream]:
    """Open `uri` for streaming; FetchError (also for errors while its chunks are read).

    `client` (http sources) replaces a client built from `ca_bundle` and `timeout`; `token`
    is sent as a bearer token to https URIs only.
    """
    parsed = urlparse(uri)
    path = local_path(uri)
    if path is not None:
        if parsed.scheme == "pvc":
            _check_inside_claim(uri, path)
        opened = _open_local(uri, path)
    elif parsed.scheme in ("http", "https"):
        opened = _open_http(uri, client, _ssl_context(ca_bundle), token, timeout)
    elif parsed.scheme == "s3":
        opened = _open_s3(uri)
    else:
        raise FetchError(f"{uri}: unsupported scheme {parsed.scheme!r} (https, s3, pvc, file)")
    with opened as stream:
        yield stream


def _check_inside_claim(uri: str, path: Path) -> None:
    """FetchError when a pvc:// file is a symbolic link (or under one) leading out of its claim."""
    mount = claim_mount(uri).resolve()
    real = path.resolve()
    if not real.is_relative_to(mount):
        raise FetchError(
            f"{uri}: {path} leads to {real}, outside the claim's volume {mount} "
            "(a symbolic link): put the file itself in the claim"
        )


@contextmanager
def _open_local(uri: str, path: Path) -> Iterator[Stream]:
    try:
        if not path.is_file():
            raise FetchError(f"{uri}: no such file ({path})")
        with path.open("rb") as src:
            yield Stream(read_chunks(src), path.stat().st_size)
    except OSError as exc:
        raise FetchError(f"{uri}: {exc}") from exc


@contextmanager
def _open_http(
    uri: str,
    client: httpx.Client | None,
    verify: ssl.SSLContext | bool,
    token: str | None,
    timeout: float,
) -> Iterator[Stream]:
    try:
        with ExitStack() as stack:
            if client is None:
                client = stack.enter_context(httpx.Client(verify=verify, timeout=timeout))
            response = _follow_redirects(client, uri, token)
            stack.callback(response.close)
            if response.status_code != 200:
                hint = _HTTP_HINTS.get(response.status_code)
                raise FetchError(
                    f"{uri}: HTTP {response.status_code}" + (f" ({hint})" if hint else "")
                )
            total = _content_length(response)
            yield Stream(_http_chunks(uri, response, total), total)
    except httpx.HTTPError as exc:
        raise FetchError(f"{uri}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise FetchError(f"{uri}: {exc}") from exc


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _follow_redirects(client: httpx.Client, uri: str, token: str | None) -> httpx.Response:
    """The response at the end of `uri`'s redirects, opened for streaming.

    Each hop is checked before it is requested (`_next_hop`); the bearer token goes only to
    https URLs of the origin `uri` names, so a redirect cannot carry it elsewhere.
    """
    origin = httpx.URL(uri)
    url, chain = origin, [str(origin)]
    while True:
        headers = auth_headers(str(url), token) if _same_origin(url, origin) else {}
        request = client.build_request("GET", url, headers=headers)
        response = client.send(request, stream=True, follow_redirects=False)
        if not response.is_redirect:
            return response
        response.close()
        url = _next_hop(uri, url, response.headers["location"], chain)


def _next_hop(uri: str, url: httpx.URL, location: str, chain: list[str]) -> httpx.URL:
    """Where a redirect from `url` leads; FetchError for a loop, too many hops, a downgrade."""
    try:
        target = url.join(location)
    except httpx.InvalidURL as exc:
        raise FetchError(f"{uri}: {url} redirects to an invalid URL {location!r}") from exc
    chain.append(str(target))
    route = _route(chain)
    if target.scheme not in ("http", "https"):
        raise FetchError(f"{uri}: redirected to {target}, which is not http(s) ({route})")
    if url.scheme == "https" and target.scheme == "http":
        raise FetchError(
            f"{uri}: redirected from https to plain http ({url} -> {target}), refused: the "
            "download would no longer be encrypted; give a URL that stays on https"
        )
    if str(target) in chain[:-1]:
        raise FetchError(f"{uri}: redirect loop ({route}): fix the URL or the server's redirects")
    if len(chain) - 1 > MAX_REDIRECTS:
        raise FetchError(
            f"{uri}: more than {MAX_REDIRECTS} redirects ({route}): give the final URL"
        )
    return target


def _route(chain: list[str]) -> str:
    """The URLs a download went through, the middle of a long chain elided."""
    shown = chain if len(chain) <= 4 else [chain[0], f"... {len(chain) - 3} more", *chain[-2:]]
    return " -> ".join(shown)


def _content_length(response: httpx.Response) -> int | None:
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _http_chunks(uri: str, response: httpx.Response, total: int | None) -> Iterator[bytes]:
    """The body in chunks; FetchError "truncated" when the server stops before its end.

    Counted on the wire (`num_bytes_downloaded`), as Content-Length counts, not after
    a Content-Encoding is undone.
    """
    try:
        yield from response.iter_bytes(CHUNK)
    except httpx.RemoteProtocolError as exc:
        raise FetchError(_truncated(uri, response.num_bytes_downloaded, total)) from exc
    if total is not None and response.num_bytes_downloaded < total:
        raise FetchError(_truncated(uri, response.num_bytes_downloaded, total))


def _truncated(uri: str, got: int, total: int | None) -> str:
    of = f" of {total}" if total is not None else ""
    return (
        f"{uri}: truncated: got {got}{of} bytes, the server closed the connection before "
        "the end: retry, or check the server"
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key; the key may be empty (a bucket or prefix URI)."""
    parsed = urlparse(uri)
    return parsed.netloc, unquote(parsed.path).lstrip("/")


def s3_client() -> Any:
    """A boto3 S3 client: AWS_ENDPOINT_URL, AWS_* settings and the default credential chain.

    Each call makes its own session: boto3's default session is not safe to share between
    threads (the evaluation sender's pool), and it would keep the first credentials it found.
    """
    import boto3.session

    try:
        return boto3.session.Session().client("s3")
    except ValueError as exc:  # e.g. an AWS_ENDPOINT_URL that is not a URL
        raise FetchError(f"cannot make an S3 client: {exc}: check AWS_ENDPOINT_URL") from exc


def s3_errors() -> tuple[type[Exception], ...]:
    """The botocore exceptions an S3 call raises (botocore is imported here, lazily)."""
    import botocore.exceptions

    return (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


_CREDENTIALS_REJECTED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
_ACCESS_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def s3_error_code(exc: Exception) -> str | None:
    """The S3 error code of a botocore ClientError (NoSuchKey, AccessDenied, 404...), or None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return None if code is None else str(code)


def s3_problem(exc: Exception, *, bucket: str, need: str) -> str:
    """What went wrong talking to S3, and what to fix; `need` names the permission used."""
    import botocore.exceptions as bx

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return (
            "no usable AWS credentials: give the pod AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a web identity (IRSA) or an instance role"
        )
    if isinstance(exc, bx.CredentialRetrievalError):
        return f"AWS credentials could not be obtained ({exc}): check the pod's role or profile"
    if isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectTimeoutError
        | bx.ReadTimeoutError
        | bx.ConnectionClosedError,
    ):
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the AWS S3 endpoint"
        return f"cannot reach S3 at {endpoint} ({exc}): check AWS_ENDPOINT_URL and the network"
    code = s3_error_code(exc)
    if code is not None:
        if code == "NoSuchBucket":
            return f"bucket {bucket!r} does not exist (NoSuchBucket): create it or fix the URI"
        if code in _CREDENTIALS_REJECTED:
            return f"the AWS credentials were rejected ({code}): check the keys or role in use"
        if code in _ACCESS_DENIED:
            return f"access denied ({code}): grant these credentials {need} on bucket {bucket!r}"
        if code in NOT_FOUND_CODES:
            return f"no such object ({code})"
        message = getattr(exc, "response", {}).get("Error", {}).get("Message") or exc
        return f"{code}: {message}"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def s3_stream(client: Any, bucket: str, key: str) -> Iterator[Stream]:
    """An S3 object's body as a Stream, closed on leaving; boto3's errors pass through."""
    obj = client.get_object(Bucket=bucket, Key=key)
    body = obj["Body"]
    try:
        yield Stream(body.iter_chunks(CHUNK), obj.get("ContentLength"))
    finally:
        body.close()


@contextmanager
def _open_s3(uri: str) -> Iterator[Stream]:
    bucket, key = split_s3_uri(uri)
    if not bucket or not key:
        raise FetchError(f"{uri}: expected s3://bucket/key")
    client = s3_client()
    try:
        with s3_stream(client, bucket, key) as stream:
            yield stream
    except s3_errors() as exc:
        raise FetchError(f"{uri}: {s3_problem(exc, bucket=bucket, need='s3:GetObject')}") from exc
    except OSError as exc:
        raise FetchError(f"{uri}: {exc}") from exc


def fetch(
    uri: str,
    dest_dir: Path,
    *,
    progress: Progress | None = None,
    ca_bundle: Path | None = None,
    timeout: float = 60.0,
    limit: SizeLimit | None = None,
) -> Fetched:
    """Copy `uri` into `dest_dir` (keeping its file name) and hash it; FetchError on failure.

    At most `limit` bytes are read (default: `source_limit()`). They go to a hidden partial
    file, renamed only once the whole source is in, so a failed fetch leaves nothing behind.
    https sources get the bearer token of $TORCHROLLOUT_HTTPS_TOKEN when it is set.
    """
    limit = limit or source_limit()
    name = _file_name(uri)
    dest = dest_dir / name
    partial = dest_dir / f".{name}.partial"
    try:
        with open_source(uri, ca_bundle=ca_bundle, token=https_token(), timeout=timeout) as stream:
            if stream.total is not None and stream.total > limit.max_bytes:
                raise FetchError(_too_large(uri, limit, f"it declares {stream.total} bytes"))
            chunks = _capped(uri, stream.chunks, limit)
            fetched = write_stream(uri, chunks, partial, stream.total, progress)
        partial.replace(dest)
    except OSError as exc:
        raise FetchError(f"{uri}: cannot write {dest}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return Fetched(uri=uri, path=dest, sha256=fetched.sha256, size=fetched.size)


def _capped(uri: str, chunks: Iterable[bytes], limit: SizeLimit) -> Iterator[bytes]:
    """`chunks`, stopping with FetchError as soon as more than the limit came."""
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit.max_bytes:
            raise FetchError(_too_large(uri, limit, f"stopped after {size} bytes"))
        yield chunk


def _too_large(uri: str, limit: SizeLimit, seen: str) -> str:
    return (
        f"{uri}: larger than the {_size(limit.max_bytes)} limit for {limit.what} ({seen}): "
        f"{limit.fix}"
    )


def check_sha256(expected: str, option: str = "--sha256") -> str:
    """`expected` normalised to 64 lowercase hex digits; UsageError naming `option` if not."""
    want = expected.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise UsageError(f"{option}: expected 64 hex digits, got {expected!r}")
    return want


def verify(fetched: Fetched, expected: str | None) -> None:
    """Raise DigestMismatch unless `fetched` has the expected sha256 (no-op when None)."""
    if expected is None:
        return
    want = check_sha256(expected)
    if fetched.sha256 != want:
        raise DigestMismatch(expected=want, actual=fetched.sha256, source=fetched.uri)
