"""Discovery, version, health and OpenAPI endpoints, and server-side Table output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client

from tests.emulator.conftest import GROUP, PLURAL, VERSION, widget
from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.fixtures import REPO_ROOT, Kubectl

pytestmark = pytest.mark.emulator
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"
MODEL_DEPLOYMENTS_CRD = REPO_ROOT / "crds" / "torchrollout.io_modeldeployments.yaml"


@pytest.fixture
def http(emulator: KubeEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=10) as session:
        yield session


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
    } <= names
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
    assert http.get(f"/apis/{GROUP}").json()["preferredVersion"]["version"] == VERSION


def test_version_health_and_openapi(http: httpx.Client) -> None:
    assert http.get("/version").json()["major"] == "1"
    for path in ("/healthz", "/livez", "/readyz"):
        assert http.get(path).text == "ok"
    assert http.get("/openapi/v2").json()["swagger"] == "2.0"
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


def test_the_operators_own_crd_applies(kubectl: Kubectl, tmp_path: Path) -> None:
    if not MODEL_DEPLOYMENTS_CRD.exists():
        pytest.skip(f"{MODEL_DEPLOYMENTS_CRD} is not generated yet")
    kubectl("apply", "-f", str(MODEL_DEPLOYMENTS_CRD))
    crd = yaml.safe_load(MODEL_DEPLOYMENTS_CRD.read_text())
    names = crd["spec"]["names"]
    assert names["plural"] in kubectl("api-resources", f"--api-group={crd['spec']['group']}").stdout
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mdep-check"}})
    listing = kubectl("get", names["shortNames"][0], "-n", "mdep-check").stderr
    assert "No resources found" in listing
    kubectl("delete", "ns", "mdep-check", "--timeout=10s")
    kubectl("delete", "-f", str(MODEL_DEPLOYMENTS_CRD), "--timeout=10s")
