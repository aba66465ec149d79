"""Structural schemas of custom resources: pruning, defaulting and validation with the API
server's 422 Status format (reason Invalid, details.causes with field paths)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.emulator.conftest import GROUP, PLURAL, VERSION, widget

pytestmark = pytest.mark.emulator


def _create(widgets: client.CustomObjectsApi, namespace: str, **spec: Any) -> dict[str, Any]:
    return widgets.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w1", **spec)
    )


def _invalid(widgets: client.CustomObjectsApi, namespace: str, **spec: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as caught:
        _create(widgets, namespace, **spec)
    assert caught.value.status == 422
    return json.loads(caught.value.body)


def test_defaults_are_filled_in(widgets: client.CustomObjectsApi, namespace: str) -> None:
    spec = _create(widgets, namespace, steps=[{"weight": 5}])["spec"]
    assert spec == {
        "color": "red",
        "replicas": 1,
        "size": "1Gi",
        "steps": [{"weight": 5, "pause": "1m"}],
    }


def test_unknown_fields_are_pruned_except_where_preserved(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    spec = _create(
        widgets,
        namespace,
        bogus=1,
        steps=[{"weight": 5, "junk": True}],
        extra={"free": {"form": [1, 2]}},
    )["spec"]
    assert "bogus" not in spec
    assert spec["steps"] == [{"weight": 5, "pause": "1m"}]
    assert spec["extra"] == {"free": {"form": [1, 2]}}


def test_int_or_string_and_nullable(widgets: client.CustomObjectsApi, namespace: str) -> None:
    assert _create(widgets, namespace, size=3, note=None)["spec"]["size"] == 3
    status = _invalid(widgets, namespace, size=[1])
    assert status["details"]["causes"][0]["field"] == "spec.size"


def test_null_on_a_non_nullable_field_with_a_default_is_defaulted(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    assert _create(widgets, namespace, replicas=None)["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    "case",
    [
        (
            {"color": "pink"},
            "spec.color",
            "FieldValueNotSupported",
            'Unsupported value: "pink": supported values: "red", "green", "blue"',
        ),
        (
            {"replicas": 11},
            "spec.replicas",
            "FieldValueInvalid",
            "Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        ),
        (
            {"weight": 1},
            "spec.weight",
            "FieldValueInvalid",
            "Invalid value: 1: spec.weight in body should be less than 1",
        ),
        (
            {"label": "A"},  # too short and not matching the pattern: only the first is told
            "spec.label",
            "FieldValueInvalid",
            'Invalid value: "A": spec.label in body should be at least 2 chars long',
        ),
        (
            {"label": "a" * 13},
            "spec.label",
            "FieldValueTooLong",
            "Too long: may not be more than 12 bytes",
        ),
        (
            {"label": "Upper"},
            "spec.label",
            "FieldValueInvalid",
            "Invalid value: \"Upper\": spec.label in body should match '^[a-z][a-z0-9-]*$'",
        ),
        (
            {"steps": [{"weight": 1}] * 4},
            "spec.steps",
            "FieldValueTooMany",
            "Too many: 4: must have at most 3 items",
        ),
        (
            {"steps": [{"weight": 0}]},
            "spec.steps[0].weight",
            "FieldValueInvalid",
            "Invalid value: 0: spec.steps[0].weight in body should be greater than or equal to 1",
        ),
        (
            {"steps": [{"pause": "1s"}]},
            "spec.steps[0].weight",
            "FieldValueRequired",
            "Required value",
        ),
    ],
)
def test_validation_errors_match_the_api_server(
    widgets: client.CustomObjectsApi, namespace: str, case: tuple[dict[str, Any], str, str, str]
) -> None:
    spec, field, reason, message = case
    status = _invalid(widgets, namespace, **spec)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Invalid", 422)
    assert status["details"]["causes"] == [{"reason": reason, "message": message, "field": field}]
    assert status["message"] == f'Widget.example.com "w1" is invalid: {field}: {message}'


@pytest.mark.parametrize(
    ("replicas", "schema_cause", "scale_cause"),
    [
        (
            -1,
            (
                "FieldValueInvalid",
                "Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
            ),
            ("FieldValueInvalid", "Invalid value: -1: should be a non-negative integer"),
        ),
        (
            "two",
            (
                "FieldValueTypeInvalid",
                'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
            ),
            (
                "FieldValueInvalid",
                "Invalid value: 0: .spec.replicas accessor error: two is of the type string, "
                "expected int64",
            ),
        ),
    ],
)
def test_the_scale_subresource_checks_its_replicas_too(
    widgets: client.CustomObjectsApi,
    namespace: str,
    replicas: object,
    schema_cause: tuple[str, str],
    scale_cause: tuple[str, str],
) -> None:
    causes = _invalid(widgets, namespace, replicas=replicas)["details"]["causes"]
    assert causes == [
        {"reason": schema_cause[0], "message": schema_cause[1], "field": "spec.replicas"},
        {"reason": scale_cause[0], "message": scale_cause[1], "field": ".spec.replicas"},
    ]


def test_several_causes_are_listed_in_brackets(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    status = _invalid(widgets, namespace, color="pink", replicas=99)
    fields = sorted(cause["field"] for cause in status["details"]["causes"])
    assert fields == ["spec.color", "spec.replicas"]
    # in no particular order: a real server walks the properties of a Go map
    assert status["message"].startswith('Widget.example.com "w1" is invalid: [spec.')
    assert status["message"].endswith("]")


def test_required_fields_and_object_names(widgets: client.CustomObjectsApi, namespace: str) -> None:
    body = widget("w1")
    del body["spec"]["color"]
    with pytest.raises(ApiException) as caught:
        widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert json.loads(caught.value.body)["details"]["causes"][0]["field"] == "spec.color"
    with pytest.raises(ApiException) as caught:
        widgets.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, widget("Not_Valid")
        )
    cause = json.loads(caught.value.body)["details"]["causes"][0]
    assert cause["field"] == "metadata.name"
    assert "a lowercase RFC 1123 subdomain" in cause["message"]


def test_updates_are_validated_too(widgets: client.CustomObjectsApi, namespace: str) -> None:
    _create(widgets, namespace)
    with pytest.raises(ApiException) as caught:
        widgets.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "w1", {"spec": {"replicas": 50}}
        )
    assert caught.value.status == 422
