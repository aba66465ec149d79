"""Loopback servers for tests that fetch over https or S3: a TLS file server and moto's S3.

Plain context managers, so the archive tests (through conftest.py fixtures) and the
evaluation-source tests in tests/unit share them. The https server is Python's http.server
behind TLS with a certificate generated for 127.0.0.1 (cryptography), and records the
Authorization header of every request; the S3 server is moto's, on a free loopback port.
Both run in threads of the test process.
"""

from __future__ import annotations

import datetime
import functools
import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A CA certificate for 127.0.0.1 and its key, written into `folder`."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, seen: list[str | None], **kwargs: Any) -> None:
        self._seen = seen
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self._seen.append(self.headers.get("Authorization"))
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class HttpsServer:
    root: Path
    url: str
    ca_bundle: Path
    authorization: list[str | None] = field(default_factory=list)
    """The Authorization header of each GET, in order (None when absent)."""

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))


@contextmanager
def https_server(folder: Path) -> Iterator[HttpsServer]:
    """Serve `folder`/files over TLS on 127.0.0.1; the CA bundle is `folder`/cert.pem."""
    root = folder / "files"
    root.mkdir()
    cert, key = self_signed(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen: list[str | None] = []
    handler = functools.partial(_RecordingHandler, directory=str(root), seen=seen)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield HttpsServer(root, f"https://127.0.0.1:{server.server_address[1]}", cert, seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class S3Server:
    endpoint: str


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 in server mode on a free loopback port."""
    from moto.server import ThreadedMotoServer

    from torchrollout.archive.torchserve import free_ports

    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def use_s3(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point boto3 at `endpoint` with dummy keys, whatever the environment had."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
