"""Fixtures for the archive-builder tests: example weights, an https server, an S3 server.

The servers themselves are in servers.py (the evaluation-source tests use them too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.archive import servers
from tests.archive.servers import HttpsServer, S3Server
from tests.support.fixtures import Example, example

__all__ = ["HttpsServer", "S3Server"]


@pytest.fixture(scope="session")
def seq_v1(examples_dir: Path) -> Example:
    return example(examples_dir, "sequence-classifier", "v1")


@pytest.fixture(scope="session")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    with servers.https_server(tmp_path_factory.mktemp("https")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with servers.s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    servers.use_s3(monkeypatch, s3_server.endpoint)
    return s3_server
