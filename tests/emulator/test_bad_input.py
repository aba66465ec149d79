"""Bad input gets the status codes and Status objects a real API server returns (with its
wording, which kubectl prints), and never crashes the emulator: raw HTTP, so nothing in a
client library smooths it over."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.emulator.conftest import GROUP, PLURAL, VERSION, widget
from tests.kube_emulator import KubeEmulator

pytestmark = pytest.mark.emulator


def _status(response: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == code, body
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert (body["code"], body["reason"]) == (code, reason)
    return body


CM = "/api/v1/namespaces/default/configmaps"
UNRECOGNIZED = "the object provided is unrecognized (must be of type ConfigMap): "


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post(CM, content=b"{not json", headers={"Content-Type": "application/json"})
    message = _status(response, 400, "BadRequest")["message"]
    assert message.startswith(UNRECOGNIZED + "couldn't get version/kind; json parse error: ")
    assert message.endswith(" ({not json)")  # the body quoted back


def test_non_object_body_is_400(http: httpx.Client) -> None:
    message = _status(http.post(CM, json=[1, 2]), 400, "BadRequest")["message"]
    assert message.startswith(UNRECOGNIZED + "couldn't get version/kind; json parse error: ")
    assert "cannot unmarshal array into Go value" in message
    assert message.endswith(" (5b312c325d)")  # not JSON-ish: quoted back in hex


def test_kind_mismatch_is_400(http: httpx.Client) -> None:
    response = http.post(CM, json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    assert _status(response, 400, "BadRequest")["message"] == (
        'Secret in version "v1" cannot be handled as a ConfigMap: '
        "converting (v1.Secret) to (core.ConfigMap): unknown conversion"
    )


def test_a_custom_resource_of_another_kind_is_422(http: httpx.Client, widget_crd: str) -> None:
    body = {**widget("x"), "kind": "Gadget"}
    response = http.post(f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}", json=body)
    status = _status(response, 422, "Invalid")
    assert (
        status["message"]
        == 'Gadget.example.com "x" is invalid: kind: Invalid value: "Gadget": must be Widget'
    )
    assert [c["field"] for c in status["details"]["causes"]] == ["kind"]


def test_unknown_resources_are_404_statuses(http: httpx.Client) -> None:
    for path in (
        "/api/v1/namespaces/default/gizmos",
        "/api/v2",
        "/apis/apps/v9",
        "/apis/apps/v1/namespaces/default/deployments/x/logs",
    ):
        status = _status(http.get(path), 404, "NotFound")
        assert status["message"] == "the server could not find the requested resource"


def test_unknown_groups_and_paths_are_plain_404s(http: httpx.Client) -> None:
    for path in ("/apis/nope.example.com", "/apis/nope.example.com/v1", "/no/such/path"):
        response = http.get(path)
        assert (response.status_code, response.text) == (404, "404 page not found\n")
        assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.emulator_only("the emulator speaks no protobuf; a real server decodes it")
def test_protobuf_bodies_are_415(http: httpx.Client) -> None:
    protobuf = http.post(
        CM, content=b"k8s\x00", headers={"Content-Type": "application/vnd.kubernetes.protobuf"}
    )
    _status(protobuf, 415, "UnsupportedMediaType")


def test_unknown_content_types_are_415(http: httpx.Client) -> None:
    _status(
        http.post(CM, content=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "UnsupportedMediaType",
    )
    http.post(CM, json={"metadata": {"name": "patched"}})
    not_a_patch = http.patch(
        CM + "/patched", content=b"{}", headers={"Content-Type": "application/xml"}
    )
    status = _status(not_a_patch, 415, "UnsupportedMediaType")
    assert status["message"] == "415: Unsupported Media Type"
    http.delete(CM + "/patched")


@pytest.mark.emulator_only("the emulator speaks no protobuf; a real server answers in it")
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
    assert body["details"] == {  # no name: empty fields are left out
        "kind": "ConfigMap",
        "causes": [
            {
                "reason": "FieldValueRequired",
                "message": "Required value: name or generateName is required",
                "field": "metadata.name",
            }
        ],
    }


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
    status = _status(http.put(CM, json={}), 405, "MethodNotAllowed")
    assert status["message"] == "the server does not allow this method on the requested resource"


def test_a_micro_time_without_microseconds_is_400(http: httpx.Client) -> None:
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": "ev-"},
        "eventTime": "2026-01-01T00:00:00+00:00",  # what Python's isoformat() gives at .0
        "type": "Normal",
        "reason": "Tested",
        "action": "Test",
        "reportingController": "t",
        "reportingInstance": "t",
        "regarding": {"kind": "ConfigMap", "name": "x"},
    }
    events = "/apis/events.k8s.io/v1/namespaces/default/events"
    status = _status(http.post(events, json=event), 400, "BadRequest")
    assert status["message"] == (
        'Event in version "v1" cannot be handled as a Event: parsing time '
        '"2026-01-01T00:00:00+00:00" as "2006-01-02T15:04:05.000000Z07:00": '
        'cannot parse "+00:00" as ".000000"'
    )
    event["eventTime"] = "2026-01-01T00:00:00.000000Z"
    created = http.post(events, json=event)
    assert created.status_code == 201, created.text
    http.delete(f"{events}/{created.json()['metadata']['name']}")


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


def test_an_event_needs_a_type_and_the_namespace_of_its_object(http: httpx.Client) -> None:
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "incomplete"},
        "eventTime": "2026-01-01T00:00:00.000001Z",
        "reason": "Tested",
        "action": "Test",
        "reportingController": "t",
        "reportingInstance": "t",
        "regarding": {"kind": "Node", "name": "n1"},
    }
    namespace = http.post("/api/v1/namespaces", json={"metadata": {"generateName": "ev-"}})
    name = namespace.json()["metadata"]["name"]
    events = f"/apis/events.k8s.io/v1/namespaces/{name}/events"
    status = _status(http.post(events, json=event), 422, "Invalid")
    # checked as the internal Event: its field names, and no group
    assert status["message"] == (
        'Event "incomplete" is invalid: [involvedObject.namespace: Invalid value: "": '
        'does not match event.namespace, type: Invalid value: "": has invalid value: ]'
    )
    assert status["details"]["kind"] == "Event" and "group" not in status["details"]
    http.delete(f"/api/v1/namespaces/{name}")


def test_unknown_fields_are_dropped_with_a_warning_or_refused_when_strict(
    http: httpx.Client,
) -> None:
    body = {"metadata": {"name": "typo", "lables": {"a": "b"}}, "dta": {"k": "v"}}
    created = http.post(CM, json=body)  # no fieldValidation: Warn, the server's default
    assert created.status_code == 201, created.text
    assert "dta" not in created.json() and "lables" not in created.json()["metadata"]
    assert 'unknown field \\"dta\\"' in created.headers["Warning"]  # a quoted-string
    assert 'unknown field \\"metadata.lables\\"' in created.headers["Warning"]
    http.delete(CM + "/typo")
    strict = http.post(CM, params={"fieldValidation": "Strict"}, json=body)
    message = _status(strict, 400, "BadRequest")["message"]
    assert message.startswith(
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
    )
    assert 'unknown field "dta"' in message
