"""What the operator says when the API server refuses a request: the Status message the
server gave (the field, the quota, the full IP range), not only the HTTP reason."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from torchrollout.operator.kube import _translate

FULL = "Internal error occurred: failed to allocate a serviceIP: range is full"


def refused(status: int, reason: str, body: object) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = body
    return exc


@pytest.mark.parametrize(
    ("exc", "said", "transient"),
    [
        (
            refused(500, "Internal Server Error", json.dumps({"message": FULL})),
            f"create Service risk/fraud: HTTP 500 Internal Server Error: {FULL}",
            True,
        ),
        (
            refused(
                422, "Unprocessable Entity", json.dumps({"message": "spec.x: Invalid"}).encode()
            ),
            "create Service risk/fraud: HTTP 422 Unprocessable Entity: spec.x: Invalid",
            False,
        ),
        (
            refused(503, "Service Unavailable", "<html>upstream down</html>"),
            "create Service risk/fraud: HTTP 503 Service Unavailable",
            True,
        ),
        (
            refused(409, "Conflict", None),
            "create Service risk/fraud: HTTP 409 Conflict",
            True,
        ),
    ],
    ids=["status message", "bytes body", "not JSON", "no body"],
)
def test_the_api_servers_message_is_kept(exc: ApiException, said: str, transient: bool) -> None:
    error = _translate(exc, "create Service risk/fraud")
    assert str(error) == said
    assert error.transient is transient
