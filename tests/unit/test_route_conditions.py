"""RouterReady for the gateway-api router, from what the Gateway reports on the HTTPRoute."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import resource
from torchrollout.operator.routers import route_condition

MD = resource(
    spec={"traffic": {"router": "gateway-api", "gatewayRef": {"name": "edge", "namespace": "gw"}}}
)


def route(parent: dict[str, Any], *conditions: tuple[str, str, str]) -> dict[str, Any]:
    reported = [
        {"type": t, "status": s, "reason": r, "message": f"{r} said"} for t, s, r in conditions
    ]
    return {"status": {"parents": [{"parentRef": parent, "conditions": reported}]}}


EDGE = {"name": "edge", "namespace": "gw"}


@pytest.mark.parametrize(
    ("reported", "status", "reason", "says"),
    [
        ({}, "True", "HTTPRouteApplied", "no report from Gateway edge"),
        (route(EDGE, ("Accepted", "True", "Accepted")), "True", "RouteAccepted", ""),
        (
            route(EDGE, ("Accepted", "False", "NotAllowedByListeners")),
            "False",
            "RouteNotAccepted",
            "spec.traffic.gatewayRef",
        ),
        (
            route(
                EDGE, ("Accepted", "True", "Accepted"), ("ResolvedRefs", "False", "RefNotPermitted")
            ),
            "False",
            "BackendsNotResolved",
            "ReferenceGrant",
        ),
        # Another Gateway's verdict is not ours.
        (
            route({"name": "other", "namespace": "gw"}, ("Accepted", "False", "NoMatchingParent")),
            "True",
            "HTTPRouteApplied",
            "",
        ),
    ],
    ids=["no-report", "accepted", "not-accepted", "refs-unresolved", "other-gateway"],
)
def test_router_ready_follows_the_gateways_report(
    reported: dict[str, Any], status: str, reason: str, says: str
) -> None:
    condition = route_condition(reported, MD)
    assert (condition.status, condition.reason) == (status, reason)
    assert says in condition.message
