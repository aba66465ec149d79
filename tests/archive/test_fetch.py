"""Fetching sources: the bearer token of $TORCHROLLOUT_HTTPS_TOKEN goes to https only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.archive.conftest import HttpsServer
from torchrollout.archive.errors import FetchError
from torchrollout.archive.fetch import auth_headers, fetch


def test_https_sources_carry_the_token_from_the_environment(
    https_server: HttpsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (https_server.root / "handler.py").write_text("# a handler\n")
    url = f"{https_server.url}/handler.py"
    monkeypatch.setenv("TORCHROLLOUT_HTTPS_TOKEN", "s3cr3t\n")  # as a Secret's file may end
    fetched = fetch(url, tmp_path, ca_bundle=https_server.ca_bundle)
    assert fetched.path.read_text() == "# a handler\n"
    assert https_server.authorization[-1] == "Bearer s3cr3t"

    monkeypatch.delenv("TORCHROLLOUT_HTTPS_TOKEN")
    fetch(url, tmp_path, ca_bundle=https_server.ca_bundle)
    assert https_server.authorization[-1] is None


def test_http_errors_say_what_was_wrong(https_server: HttpsServer, tmp_path: Path) -> None:
    # http.server answers 404 for what it lacks; 401/403 get a hint of their own.
    with pytest.raises(FetchError, match=r"HTTP 404 \(not found\)"):
        fetch(f"{https_server.url}/absent.pt", tmp_path, ca_bundle=https_server.ca_bundle)


@pytest.mark.parametrize(
    ("uri", "headers"),
    [
        ("https://models.example/m.pt", {"Authorization": "Bearer t"}),
        ("http://models.example/m.pt", {}),  # never in clear text
        ("s3://bucket/m.pt", {}),
    ],
)
def test_the_token_is_for_https_only(uri: str, headers: dict[str, str]) -> None:
    assert auth_headers(uri, "t") == headers
    assert auth_headers(uri, None) == {}
