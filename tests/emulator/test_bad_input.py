"""Bad input gets the status codes and Status objects a real API server returns, and never
crashes the emulator: raw HTTP, so nothing in a client library smooths it over."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.kube_emulator import KubeEmulator

pytestmark = pytest.mark.emulator


@pytest.fixture
def http(emulator: KubeEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=10) as session:
        yield session


def _status(response: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == code, body
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert (body["code"], body["reason"]) == (code, reason)
    return body


CM = "/api/v1/namespaces/default/configmaps"


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post(CM, content=b"{not json", headers={"Content-Type": "application/json"})
    _status(response, 400, "BadRequest")


def test_non_object_body_is_400(http: httpx.Client) -> None:
    _status(http.post(CM, json=[1, 2]), 400, "BadRequest")


def test_kind_mismatch_is_400(http: httpx.Client) -> None:
    response = http.post(CM, json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    assert "does not match the expected kind" in _status(response, 400, "BadRequest")["message"]


def test_unknown_resources_and_paths_are_404(http: httpx.Client) -> None:
    _status(http.get("/api/v1/namespaces/default/gizmos"), 404, "NotFound")
    _status(http.get("/apis/nope.example.com/v1"), 404, "NotFound")
    _status(http.get("/apis/apps/v1/namespaces/default/deployments/x/logs"), 404, "NotFound")
    _status(http.get("/no/such/path"), 404, "NotFound")


def test_protobuf_and_unknown_content_types_are_415(http: httpx.Client) -> None:
    protobuf = http.post(
        CM, content=b"k8s\x00", headers={"Content-Type": "application/vnd.kubernetes.protobuf"}
    )
    _status(protobuf, 415, "UnsupportedMediaType")
    _status(
        http.post(CM, content=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "UnsupportedMediaType",
    )
    http.post(CM, json={"metadata": {"name": "patched"}})
    smp_on_cr = http.patch(
        CM + "/patched", content=b"{}", headers={"Content-Type": "application/xml"}
    )
    _status(smp_on_cr, 415, "UnsupportedMediaType")
    http.delete(CM + "/patched")


def test_protobuf_only_accept_is_406(http: httpx.Client) -> None:
    response = http.get(CM, headers={"Accept": "application/vnd.kubernetes.protobuf"})
    _status(response, 406, "NotAcceptable")


def test_yaml_bodies_are_accepted(http: httpx.Client) -> None:
    response = http.post(
        CM,
        content=b"metadata: {name: from-yaml}\ndata: {a: b}\n",
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 201
    http.delete(CM + "/from-yaml")


def test_missing_name_is_422(http: httpx.Client) -> None:
    body = _status(http.post(CM, json={"metadata": {}}), 422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_bad_json_patch_is_422_and_bad_patch_body_400(http: httpx.Client) -> None:
    http.post(CM, json={"metadata": {"name": "jp"}})
    missing = http.patch(
        CM + "/jp",
        json=[{"op": "remove", "path": "/data/nope"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    _status(missing, 422, "Invalid")
    garbage = http.patch(
        CM + "/jp", content=b"[{", headers={"Content-Type": "application/merge-patch+json"}
    )
    _status(garbage, 400, "BadRequest")
    http.delete(CM + "/jp")


def test_wrong_method_is_405(http: httpx.Client) -> None:
    _status(http.put(CM, json={}), 405, "MethodNotAllowed")


def test_handler_exceptions_become_500_and_the_server_survives(
    http: httpx.Client,
    emulator: KubeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(emulator.cluster.ops, "get", explode)
    with caplog.at_level("ERROR", logger="tests.kube_emulator"):
        body = _status(http.get(CM + "/anything"), 500, "InternalError")
    assert "boom" in body["message"]
    assert any("handler failed" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert http.get("/healthz").text == "ok"
    assert http.get(CM).status_code == 200
