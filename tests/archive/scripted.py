"""A loopback HTTP(S) server whose every path answers what a test scripts: redirects, bodies
cut short, endless bodies. Used by the hostile-source tests; it runs in a thread.

A route is a function of the request handler; the helpers below write the usual hostile
answers. `sent` counts the body bytes the server managed to write per path, so a test can
tell that a client stopped reading.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class ScriptedServer:
    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Authorization header or None) of each GET, in order."""
    sent: dict[str, int] = field(default_factory=dict)

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: ScriptedServer

    def do_GET(self) -> None:
        self.server_state.requests.append((self.path, self.headers.get("Authorization")))
        route = self.server_state.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _count(handler: http.server.BaseHTTPRequestHandler, size: int) -> None:
    state: ScriptedServer = handler.server_state  # type: ignore[attr-defined]
    state.sent[handler.path] = state.sent.get(handler.path, 0) + size


def redirect(location: str, status: int = 302) -> Route:
    """Answer `status` with a Location header."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def body(data: bytes, *, declared: int | None = None) -> Route:
    """Answer 200 with `data`, announcing `declared` bytes (default: the real size), then close."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data) if declared is None else declared))
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()
        _count(handler, len(data))
        handler.close_connection = True

    return route


def chunked(piece: bytes, *, pieces: int | None, finish: bool = True) -> Route:
    """Answer 200, chunked, `piece` `pieces` times (None: until the client goes away); without
    the final empty chunk when not `finish` (a body cut short)."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        count = 0
        try:
            while pieces is None or count < pieces:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                _count(handler, len(piece))
                count += 1
            if finish:
                handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            pass  # the client hung up: what an endless body waits for
        handler.close_connection = True

    return route


@contextmanager
def scripted_server(tls: tuple[Path, Path] | None = None) -> Iterator[ScriptedServer]:
    """A ScriptedServer on 127.0.0.1; https when `tls` gives (certificate, key) files."""
    scheme = "https" if tls else "http"
    state = ScriptedServer(url="")
    handler: Any = type("Handler", (_Handler,), {"server_state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
