"""Reaching the Kubernetes API from a command: the kubeconfig, and a server that is not there.

Both end the command with one line on stderr and exit 2 (an infrastructure error): a
kubeconfig that cannot be read names its file, an API server that cannot be reached names
its address and why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import typer

from torchrollout.spec.document import DocumentError, read_document

INFRASTRUCTURE_ERROR = 2
DEFAULT_KUBECONFIG = "~/.kube/config"
REQUEST_TIMEOUT = (10.0, 30.0)  # seconds to connect, to read an answer


def fail(message: str) -> NoReturn:
    """Print `message` on stderr and exit 2."""
    typer.echo(message, err=True)
    raise typer.Exit(INFRASTRUCTURE_ERROR)


def kubeconfig_path(kubeconfig: str | None) -> str:
    """The kubeconfig in use (the option, $KUBECONFIG or ~/.kube/config), checked readable.

    Like kubectl, a list of files in $KUBECONFIG skips the missing ones; each present one
    must be a readable YAML document.
    """
    spec = kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    paths = [Path(part).expanduser() for part in spec.split(os.pathsep) if part]
    present = [path for path in paths if path.exists()] if len(paths) > 1 else paths
    if not present:
        fail(f"{spec}: cannot read: no such kubeconfig; give --kubeconfig or set KUBECONFIG")
    for path in present:
        try:
            read_document(path)
        except DocumentError as exc:
            fail(str(exc))
    return spec


def config_problem(spec: str, exc: Exception) -> NoReturn:
    """A kubeconfig the client refused (no context, no server): exit 2 naming it."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no usable context"
    fail(f"{spec}: not a usable kubeconfig: {reason}")


def unreachable(host: str, exc: BaseException) -> NoReturn:
    """The API server did not answer: exit 2 with its address and the reason."""
    fail(f"cannot reach the API server at {host}: {_why(exc)}")


def _why(exc: BaseException) -> str:
    """The innermost reason a connection failed, in words (refused, timed out, ...)."""
    seen: BaseException | None = getattr(exc, "reason", None) or exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    return str(getattr(exc, "reason", exc)).splitlines()[0]


def host_of(api_client: Any) -> str:
    """The API server address an ApiClient talks to."""
    return str(api_client.configuration.host)
