"""The weighted routers: their objects, header matches and mirrors, the weight read back,
RouterReady when the cluster cannot route, and the bad `canary.match` / `canary.mirror`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import BASE, merged, resource
from tests.unit.test_reconcile import NAME, NS, World, canary_world, deployed
from torchrollout.errors import SpecError
from torchrollout.operator.reconcile import TROUBLE_RECHECK
from torchrollout.operator.routers import IstioRouter
from torchrollout.render import ingress_weight, route_weight, virtual_service_weight
from torchrollout.render.routes import GATEWAY_API, INGRESS, ISTIO, NGINX, render_routes
from torchrollout.spec import parse_model_deployment

ROUTERS: dict[str, dict[str, Any]] = {
    "gateway-api": {"router": "gateway-api", "gatewayRef": {"name": "edge"}},
    "istio": {"router": "istio", "gateways": ["edge/public", "mesh"]},
    "nginx": {"router": "nginx", "hostnames": ["fraud.example.com"]},
}
MATCH = [{"headers": {"X-Canary": "yes"}}, {"cookie": "canary"}]
NGINX_CLASS = {
    "apiVersion": INGRESS,
    "kind": "IngressClass",
    "metadata": {"name": "nginx", "namespace": ""},
    "spec": {"controller": "k8s.io/ingress-nginx"},
}


def weight_of(router: str, objects: list[dict[str, Any]], md: Any) -> int | None:
    """What the router's reader finds in the objects, as the operator reads them back."""
    if router == "gateway-api":
        return route_weight(objects[0], md)
    if router == "istio":
        return virtual_service_weight(objects[0], md)
    return ingress_weight(objects[1])


def canary_md(router: str, **canary: Any) -> Any:
    spec: dict[str, Any] = {"traffic": ROUTERS[router]}
    if canary:
        spec["canary"] = canary
    return resource(spec=spec)


@pytest.mark.parametrize("router", list(ROUTERS))
@pytest.mark.parametrize("weight", [0, 10, 50])
def test_each_router_carries_the_weight_it_is_given(router: str, weight: int) -> None:
    md = canary_md(router)
    objects = render_routes(md, weight=weight)
    assert weight_of(router, objects, md) == weight


def test_the_replicas_router_has_no_route_objects() -> None:
    assert render_routes(resource(), weight=10) == []


@pytest.mark.parametrize(
    ("router", "expected"),
    [
        (
            "gateway-api",
            [
                {
                    "path": {"type": "PathPrefix", "value": "/"},
                    "headers": [{"type": "Exact", "name": "X-Canary", "value": "yes"}],
                },
                {
                    "path": {"type": "PathPrefix", "value": "/"},
                    "headers": [
                        {
                            "type": "RegularExpression",
                            "name": "Cookie",
                            "value": r"^(.*?;\s*)?canary=always(;.*)?$",
                        }
                    ],
                },
            ],
        ),
        (
            "istio",
            [
                {"headers": {"x-canary": {"exact": "yes"}}},
                {"headers": {"cookie": {"regex": r"^(.*?;\s*)?canary=always(;.*)?$"}}},
            ],
        ),
        (
            "nginx",
            {
                NGINX + "canary-by-header": "X-Canary",
                NGINX + "canary-by-header-value": "yes",
                NGINX + "canary-by-cookie": "canary",
            },
        ),
    ],
)
def test_a_match_sends_matching_requests_to_the_canary_during_a_step(
    router: str, expected: Any
) -> None:
    md = canary_md(router, match=MATCH)
    objects = render_routes(md, weight=10)
    if router == "gateway-api":
        rule = objects[0]["spec"]["rules"][0]
        assert rule["matches"] == expected
        assert [b["name"] for b in rule["backendRefs"]] == [f"{NAME}-canary"]
    elif router == "istio":
        first = objects[0]["spec"]["http"][0]
        assert first["match"] == expected
        assert first["route"] == [
            {"destination": {"host": f"{NAME}-canary", "port": {"number": 80}}}
        ]
    else:
        annotations = objects[1]["metadata"]["annotations"]
        assert {k: annotations[k] for k in expected} == expected
    assert weight_of(router, objects, md) == 10  # the split of the other requests is unchanged


@pytest.mark.parametrize("router", list(ROUTERS))
def test_without_a_canary_step_nothing_is_matched(router: str) -> None:
    objects = render_routes(canary_md(router, match=MATCH), weight=0)
    if router == "gateway-api":
        assert len(objects[0]["spec"]["rules"]) == 1
    elif router == "istio":
        assert [h["name"] for h in objects[0]["spec"]["http"]] == ["primary"]
    else:  # null annotations: the merge patch removes them
        annotations = objects[1]["metadata"]["annotations"]
        assert annotations[NGINX + "canary-by-header"] is None
        assert annotations[NGINX + "canary-by-cookie"] is None


@pytest.mark.parametrize("router", ["gateway-api", "istio"])
def test_a_mirror_copies_traffic_and_gives_the_canary_no_weight(router: str) -> None:
    md = canary_md(router, mirror={"percent": 30})
    objects = render_routes(md, weight=50)
    assert weight_of(router, objects, md) == 0
    if router == "gateway-api":
        filters = objects[0]["spec"]["rules"][0]["filters"]
        assert filters == [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": f"{NAME}-canary", "port": 80},
                    "percent": 30,
                },
            }
        ]
    else:
        primary = objects[0]["spec"]["http"][0]
        assert primary["mirror"] == {"host": f"{NAME}-canary", "port": {"number": 80}}
        assert primary["mirrorPercentage"] == {"value": 30.0}
    # Rolling back (weight 0): no copies either.
    stopped = render_routes(md, weight=0)
    assert "filters" not in stopped[0]["spec"].get("rules", [{}])[0]
    assert "mirror" not in stopped[0]["spec"].get("http", [{}])[0]


def test_istio_defaults_to_the_client_service_host_and_binds_the_gateways_given() -> None:
    (service,) = render_routes(canary_md("istio"), weight=10)
    assert service["apiVersion"] == ISTIO
    assert service["spec"]["hosts"] == [NAME]
    assert service["spec"]["gateways"] == ["edge/public", "mesh"]


def test_nginx_puts_a_canary_ingress_beside_the_primary_on_the_same_hosts() -> None:
    primary, canary = render_routes(canary_md("nginx"), weight=25)
    for ingress in (primary, canary):
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert [r["host"] for r in ingress["spec"]["rules"]] == ["fraud.example.com"]
    backend = primary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
    assert backend == f"{NAME}-stable"
    assert NGINX + "canary" not in primary["metadata"].get("annotations", {})
    assert canary["metadata"]["annotations"][NGINX + "canary"] == "true"
    assert canary["metadata"]["annotations"][NGINX + "canary-weight"] == "25"


@pytest.mark.parametrize(
    ("traffic", "canary", "says"),
    [
        ({}, {"match": MATCH}, "canary.match needs a router that routes by request"),
        ({}, {"mirror": {"percent": 10}}, "canary.mirror needs traffic.router gateway-api"),
        ({"router": "nginx"}, {"mirror": {}}, "canary.mirror needs traffic.router gateway-api"),
        ({"router": "istio"}, {"mirror": {"percent": 101}}, "less than or equal to 100"),
        ({"router": "istio"}, {"mirror": {"percent": -1}}, "greater than or equal to 0"),
        ({"router": "istio"}, {"match": [{}]}, "a match needs headers or a cookie"),
        ({"router": "istio"}, {"match": [{"headers": {"bad name": "x"}}]}, "not an HTTP token"),
        ({"router": "istio"}, {"match": [{"cookie": "a;b"}]}, "spec.canary.match[0].cookie"),
        (
            {"router": "nginx"},
            {"match": [{"headers": {"a": "1", "b": "2"}}]},
            "router nginx matches one header",
        ),
        (
            {"router": "nginx"},
            {"match": [{"headers": {"a": "1"}}, {"headers": {"b": "2"}}]},
            "at most one of each",
        ),
        ({"router": "nginx", "gateways": ["mesh"]}, {}, "gateways is used only with router: istio"),
        ({"router": "istio", "ingressClassName": "x"}, {}, "ingressClassName is used only"),
        ({"hostnames": ["a.example.com"]}, {}, "hostnames are used only with router"),
    ],
)
def test_routing_the_router_cannot_do_is_refused_naming_the_field(
    traffic: dict[str, Any], canary: dict[str, Any], says: str
) -> None:
    body = merged(BASE, {"spec": {"traffic": traffic, "canary": canary}})
    with pytest.raises(SpecError) as raised:
        parse_model_deployment(body)
    assert says in str(raised.value)


# -- the reconciler: RouterReady and the weight read back -------------------------------


def router_ready(world: World) -> dict[str, Any]:
    return next(c for c in world.status()["conditions"] if c["type"] == "RouterReady")


def test_missing_istio_crds_say_what_to_install_and_the_stable_keeps_all_traffic() -> None:
    world, _, _ = canary_world(traffic=ROUTERS["istio"])
    world.cluster.missing_kinds.add("VirtualService")
    world.reconcile(1)
    ready = router_ready(world)
    assert (ready["status"], ready["reason"]) == ("False", "IstioNotInstalled")
    assert "virtualservices.networking.istio.io" in ready["message"]
    assert world.status()["canaryWeight"] == 0


def test_a_stable_waiting_for_its_router_is_looked_at_again_soon_not_at_the_resync() -> None:
    """Istio installed after the resource settled is noticed within seconds."""
    world = deployed(traffic=ROUTERS["istio"])
    world.cluster.missing_kinds.add("VirtualService")
    outcome = world.reconcile(1)
    assert (router_ready(world)["status"], outcome.requeue_after) == ("False", TROUBLE_RECHECK)
    world.cluster.missing_kinds.discard("VirtualService")
    outcome = world.reconcile(outcome.requeue_after)
    assert router_ready(world)["status"] == "True"
    assert outcome.requeue_after is not None and outcome.requeue_after > TROUBLE_RECHECK


def test_istio_weights_are_read_back_from_the_virtual_service() -> None:
    world, _, _ = canary_world(traffic=ROUTERS["istio"])
    world.reconcile(1)
    assert world.status()["canaryWeight"] == 10
    assert router_ready(world)["reason"] == "VirtualServiceApplied"
    service = world.cluster.get(ISTIO, "VirtualService", NS, NAME)
    assert service is not None
    service["spec"]["http"][0]["route"][1]["weight"] = 3  # someone edits it
    service["spec"]["http"][0]["route"][0]["weight"] = 97
    world.cluster.objects[("VirtualService", NS, NAME)] = service
    md = parse_model_deployment(world.body())
    assert IstioRouter(world.cluster).achieved_weight(md, stable=None, canary=None) == 3


@pytest.mark.parametrize(
    ("ingress_class", "reason", "weight"),
    [
        (None, "IngressClassNotFound", 0),
        ({**NGINX_CLASS, "spec": {"controller": "example.com/other"}}, "NotIngressNginx", 0),
        (NGINX_CLASS, "IngressApplied", 10),
    ],
)
def test_nginx_needs_ingress_nginx_to_serve_its_class(
    ingress_class: dict[str, Any] | None, reason: str, weight: int
) -> None:
    world, _, _ = canary_world(traffic=ROUTERS["nginx"])
    if ingress_class is not None:
        world.cluster.create(ingress_class)
    world.reconcile(1)
    assert router_ready(world)["reason"] == reason
    assert world.status()["canaryWeight"] == weight
    canary = world.cluster.get(INGRESS, "Ingress", NS, f"{NAME}-canary")
    assert canary is not None
    # Null annotations are not stored: nothing to match before the canary's first step.
    assert NGINX + "canary-by-header" not in canary["metadata"]["annotations"]


def test_a_changed_router_deletes_the_previous_routers_objects() -> None:
    world, _, _ = canary_world(traffic=ROUTERS["istio"])
    world.reconcile(1)
    assert world.cluster.get(ISTIO, "VirtualService", NS, NAME) is not None
    world.set_spec(
        traffic={"router": "gateway-api", "gatewayRef": {"name": "edge"}, "gateways": None}
    )
    world.reconcile(1)
    assert world.cluster.get(ISTIO, "VirtualService", NS, NAME) is None
    assert world.cluster.get(GATEWAY_API, "HTTPRoute", NS, NAME) is not None
    assert world.status()["router"] == "gateway-api"
