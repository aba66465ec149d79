"""Discovery, version, health and OpenAPI endpoints, and server-side Table output."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client

from tests.emulator.conftest import GROUP, PLURAL, VERSION, widget
from tests.kube_emulator.fixtures import REPO_ROOT, Kubectl

pytestmark = pytest.mark.emulator
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"
MODEL_DEPLOYMENTS_CRD = REPO_ROOT / "crds" / "torchrollout.io_modeldeployments.yaml"


def test_core_and_group_discovery(http: httpx.Client) -> None:
    assert http.get("/api").json()["versions"] == ["v1"]
    core = http.get("/api/v1").json()
    assert core["groupVersion"] == "v1"
    names = {r["name"] for r in core["resources"]}
    assert {
        "namespaces",
        "namespaces/status",
        "configmaps",
        "secrets",
        "services",
        "events",
        "serviceaccounts",
    } <= names
    namespaces = next(r for r in core["resources"] if r["name"] == "namespaces")
    assert "deletecollection" not in namespaces["verbs"]  # one namespace at a time
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    assert {
        "apps",
        "policy",
        "autoscaling",
        "coordination.k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
    } <= set(groups)
    assert groups["autoscaling"]["preferredVersion"]["version"] == "v2"
    apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
    scale = apps["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert apps["deployments"]["shortNames"] == ["deploy"]


def test_crd_resources_are_discovered(http: httpx.Client, widget_crd: str) -> None:
    resources = {r["name"]: r for r in http.get(f"/apis/{GROUP}/{VERSION}").json()["resources"]}
    assert resources["widgets"]["shortNames"] == ["wd"]
    assert resources["widgets"]["categories"] == ["examples"]
    assert {"widgets/status", "widgets/scale"} <= set(resources)
    assert resources["widgets"]["verbs"] == [
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "create",
        "update",
        "watch",
    ]
    assert http.get(f"/apis/{GROUP}").json()["preferredVersion"]["version"] == VERSION


def test_version_health_and_openapi(http: httpx.Client) -> None:
    assert http.get("/version").json()["major"] == "1"
    for path in ("/healthz", "/livez", "/readyz"):
        assert http.get(path).text == "ok"
    assert http.get("/openapi/v2").json()["swagger"] == "2.0"


@pytest.mark.emulator_only("the emulator serves no schemas, so kubectl skips its validation")
def test_openapi_v2_is_empty(http: httpx.Client) -> None:
    assert http.get("/openapi/v2").json()["paths"] == {}
    protobuf = http.get(
        "/openapi/v2",
        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
    )
    assert (protobuf.status_code, protobuf.content) == (200, b"")


def test_table_output_for_custom_and_builtin_kinds(
    http: httpx.Client, widgets: object, namespace: str, api_client: client.ApiClient
) -> None:
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w1", replicas=2)
    )
    table = http.get(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", headers={"Accept": TABLE}
    ).json()
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns == ["Name", "Color", "Replicas", "Phase", "Ready", "Size", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:3] == ["w1", "red", 2] and cells[-1].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    namespaces = http.get("/api/v1/namespaces/default", headers={"Accept": TABLE}).json()
    assert namespaces["rows"][0]["cells"][:2] == ["default", "Active"]


# `kubectl get` (and -o wide, which adds the priority-1 columns) of the built-in kinds:
# (name, type, priority) of each column, as the API server's printers declare them.
BUILTIN_COLUMNS = {
    "/api/v1/namespaces/{ns}/configmaps": "Name Data Age",
    "/api/v1/namespaces/{ns}/secrets": "Name Type Data Age",
    "/api/v1/namespaces/{ns}/services": "Name Type Cluster-IP External-IP Port(s) Age Selector*",
    "/api/v1/namespaces/{ns}/serviceaccounts": "Name Age",
    "/api/v1/namespaces/{ns}/events": (
        "Last-Seen Type Reason Object Subobject* Source* Message First-Seen* Count* Name*"
    ),
    "/apis/events.k8s.io/v1/namespaces/{ns}/events": (
        "Last-Seen Type Reason Object Subobject* Source* Message First-Seen* Count* Name*"
    ),
    "/apis/apps/v1/namespaces/{ns}/deployments": (
        "Name Ready Up-to-date Available Age Containers* Images* Selector*"
    ),
    "/apis/apps/v1/namespaces/{ns}/replicasets": (
        "Name Desired Current Ready Age Containers* Images* Selector*"
    ),
    "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets": (
        "Name Min-Available Max-Unavailable Allowed-Disruptions Age"
    ),
    "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers": (
        "Name Reference Targets MinPods MaxPods Replicas Age"
    ),
    "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases": "Name Holder Age",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions": "Name Created-At",
}


def test_builtin_kinds_print_the_api_servers_columns(http: httpx.Client, namespace: str) -> None:
    for path, expected in BUILTIN_COLUMNS.items():
        table = http.get(path.format(ns=namespace), headers={"Accept": TABLE}).json()
        columns = " ".join(
            c["name"].replace(" ", "-") + ("*" if c["priority"] else "")
            for c in table["columnDefinitions"]
        )
        assert columns == expected, path


def test_autoscaler_and_service_rows(
    http: httpx.Client, namespace: str, api_client: client.ApiClient
) -> None:
    autoscaling = client.AutoscalingV2Api(api_client)
    autoscaling.create_namespaced_horizontal_pod_autoscaler(
        namespace,
        {
            "metadata": {"name": "hpa"},
            "spec": {
                "maxReplicas": 3,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            },
        },
    )
    client.CoreV1Api(api_client).create_namespaced_service(
        namespace,
        {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}},
    )

    def cells(path: str) -> list[object]:
        table = http.get(path, headers={"Accept": TABLE}).json()
        return list(table["rows"][0]["cells"])

    hpa = cells(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers")
    # no metrics server: the current value is unknown; no minReplicas: the default, 1
    assert hpa[:5] == ["hpa", "Deployment/d", "cpu: <unknown>/80%", "1", 3]
    service = cells(f"/api/v1/namespaces/{namespace}/services")
    assert (service[0], service[3], service[4], service[6]) == ("svc", "<none>", "80/TCP", "a=b")
    kubernetes = cells("/api/v1/namespaces/default/services")  # the API server's own
    assert (kubernetes[0], kubernetes[4]) == ("kubernetes", "443/TCP")


def test_the_operators_own_crd_applies(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", str(MODEL_DEPLOYMENTS_CRD))
    crd = yaml.safe_load(MODEL_DEPLOYMENTS_CRD.read_text())
    names = crd["spec"]["names"]
    assert names["plural"] in kubectl("api-resources", f"--api-group={crd['spec']['group']}").stdout
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mdep-check"}})
    listing = kubectl("get", names["shortNames"][0], "-n", "mdep-check").stderr
    assert "No resources found" in listing
    kubectl("delete", "ns", "mdep-check", "--timeout=10s")
    kubectl("delete", "-f", str(MODEL_DEPLOYMENTS_CRD), "--timeout=10s")
