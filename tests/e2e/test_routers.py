"""The istio and nginx routers, header matches and mirrors on a real control plane.

The objects are checked by the real CRD schemas (Istio's VirtualService from its Go module,
Gateway API's HTTPRoute) and the weights are read back from the API server. No mesh or
ingress controller runs here, so what they would do with the objects is not tested: the
kinds missing, or an IngressClass no ingress-nginx serves, are what the tests play.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    GOOD,
    OperatorProcess,
    condition_of,
    deploy_stable,
    dump,
    model_deployment,
    phase_is,
    play,
    plugin,
    status_of,
)
from tests.kube_cluster.cluster import ControlPlane
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

VIRTUAL_SERVICES = "virtualservices.networking.istio.io"
HOUR = {"interval": "1h"}  # the canary stays at its first step while the test looks


def router_ready(md_api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    return condition_of(status_of(md_api, namespace), "RouterReady")


def test_istio_says_what_to_install_then_routes_by_weight_header_and_mirror(
    operator_process: OperatorProcess,
    kube_cluster: ControlPlane,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    kube_cluster.kubectl("delete", "crd", VIRTUAL_SERVICES, "--ignore-not-found", "--wait")
    traffic = {"router": "istio", "hostnames": ["fraud.example.com"]}
    deploy_stable(kubectl, md_api, exporter, namespace, traffic=traffic)
    eventually(lambda: router_ready(md_api, namespace).get("reason") == "IstioNotInstalled")
    assert VIRTUAL_SERVICES in router_ready(md_api, namespace)["message"]

    crd = kube_cluster.tools.istio_crd(VIRTUAL_SERVICES)
    kube_cluster.kubectl("apply", "--server-side", "-f", str(crd))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/{VIRTUAL_SERVICES}"
    )
    match = [{"headers": {"X-Canary": "yes"}}, {"cookie": "canary"}]
    canary = model_deployment(namespace, "2.0.0", traffic=traffic, canary={**HOUR, "match": match})
    kubectl.apply(dump(canary))
    eventually(
        lambda: phase_is(md_api, namespace, "Progressing", stepIndex=0, canaryWeight=20),
        timeout=30,
    )
    assert router_ready(md_api, namespace)["status"] == "True"
    custom = client.CustomObjectsApi(api_client)
    service = custom.get_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "virtualservices", "fraud"
    )
    first, primary = service["spec"]["http"]
    assert first["match"][0]["headers"] == {"x-canary": {"exact": "yes"}}
    assert first["route"][0]["destination"]["host"] == "fraud-canary"
    weights = {r["destination"]["host"]: r["weight"] for r in primary["route"]}
    assert weights == {"fraud-stable": 80, "fraud-canary": 20}

    mirrored = model_deployment(
        namespace, "3.0.0", traffic=traffic, canary={**HOUR, "mirror": {"percent": 40}}
    )
    kubectl.apply(dump(mirrored))
    eventually(
        lambda: phase_is(
            md_api, namespace, "Progressing", stepIndex=0, canaryVersion="3.0.0", canaryWeight=0
        ),
        timeout=30,
    )
    service = custom.get_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "virtualservices", "fraud"
    )
    (primary,) = service["spec"]["http"]
    assert primary["mirror"]["host"] == "fraud-canary"
    assert primary["mirrorPercentage"] == {"value": 40}
    assert {r["destination"]["host"]: r["weight"] for r in primary["route"]} == {
        "fraud-stable": 100,
        "fraud-canary": 0,
    }
    share = condition_of(status_of(md_api, namespace), "TrafficShare")
    assert share["reason"] == "Mirrored" and "40%" in share["message"]
    shown = plugin(kubectl, "status", "fraud", "-n", namespace).stdout
    assert "Weight:   0% of traffic  (step 1/2; mirrored: a copy of 40% of requests" in shown

    # Istio uninstalled while the operator runs: it notices at its next reconciliation.
    kube_cluster.kubectl("delete", "crd", VIRTUAL_SERVICES, "--wait")
    kubectl("annotate", "md", "fraud", "-n", namespace, "example.com/touched=1")
    eventually(lambda: router_ready(md_api, namespace).get("reason") == "IstioNotInstalled")


def test_nginx_needs_its_ingress_class_then_weights_the_canary_ingress(
    operator_process: OperatorProcess,
    kube_cluster: ControlPlane,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    ingress_class = f"nginx-{namespace}"  # cluster-scoped: one of its own per test
    traffic = {"router": "nginx", "ingressClassName": ingress_class}
    deploy_stable(kubectl, md_api, exporter, namespace, traffic=traffic)
    eventually(lambda: router_ready(md_api, namespace).get("reason") == "IngressClassNotFound")
    assert "install ingress-nginx" in router_ready(md_api, namespace)["message"]

    networking = client.NetworkingV1Api(api_client)
    networking.create_ingress_class(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": ingress_class},
            "spec": {"controller": "k8s.io/ingress-nginx"},
        }
    )
    try:
        canary = model_deployment(
            namespace,
            "2.0.0",
            traffic=traffic,
            canary={**HOUR, "match": [{"headers": {"X-Canary": "yes"}}]},
        )
        play(exporter, namespace, canary, GOOD)
        kubectl.apply(dump(canary))
        eventually(
            lambda: phase_is(md_api, namespace, "Progressing", stepIndex=0, canaryWeight=20),
            timeout=30,
        )
        assert router_ready(md_api, namespace)["reason"] == "IngressApplied"
        found = networking.read_namespaced_ingress("fraud-canary", namespace)
        annotations = found.metadata.annotations
        assert annotations["nginx.ingress.kubernetes.io/canary"] == "true"
        assert annotations["nginx.ingress.kubernetes.io/canary-weight"] == "20"
        assert annotations["nginx.ingress.kubernetes.io/canary-by-header"] == "X-Canary"
        primary = networking.read_namespaced_ingress("fraud", namespace)
        backend = primary.spec.rules[0].http.paths[0].backend.service.name
        assert backend == "fraud-stable"
    finally:
        networking.delete_ingress_class(ingress_class)


def test_gateway_api_header_match_and_mirror_pass_the_httproute_schema(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    traffic = {"router": "gateway-api", "gatewayRef": {"name": "edge", "namespace": "gateways"}}
    deploy_stable(kubectl, md_api, exporter, namespace, traffic=traffic)
    canary = model_deployment(
        namespace,
        "2.0.0",
        traffic=traffic,
        canary={**HOUR, "match": [{"cookie": "canary"}], "mirror": {"percent": 25}},
    )
    kubectl.apply(dump(canary))
    eventually(
        lambda: phase_is(md_api, namespace, "Progressing", stepIndex=0, canaryWeight=0),
        timeout=30,
    )
    route = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "fraud"
    )
    matched, primary = route["spec"]["rules"]
    assert matched["matches"][0]["headers"][0]["name"] == "Cookie"
    assert [b["name"] for b in matched["backendRefs"]] == ["fraud-canary"]
    (mirror,) = primary["filters"]
    assert mirror["requestMirror"]["percent"] == 25
    assert mirror["requestMirror"]["backendRef"]["name"] == "fraud-canary"
    assert router_ready(md_api, namespace)["status"] == "True"
