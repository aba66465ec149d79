"""Fixtures of the emulator's conformance suite: the shared ones, plus the Widget CRD."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.fixtures import *  # noqa: F403
from tests.kube_emulator.fixtures import eventually

MANIFESTS = Path(__file__).parent / "manifests"
WIDGETS_CRD = MANIFESTS / "widgets-crd.yaml"
GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"color": "red", **spec},
    }


@pytest.fixture(scope="session")
def widget_crd(kube_emulator: KubeEmulator, api_client: client.ApiClient) -> Iterator[str]:
    """The Widget CRD, created once per session (tests use their own namespaces)."""
    body = yaml.safe_load(WIDGETS_CRD.read_text())
    ext = client.ApiextensionsV1Api(api_client)
    ext.create_custom_resource_definition(body)
    eventually(
        lambda: any(
            r.name == PLURAL
            for r in client.CustomObjectsApi(api_client).get_api_resources(GROUP, VERSION).resources
        )
    )
    yield body["metadata"]["name"]


@pytest.fixture
def widgets(api_client: client.ApiClient, widget_crd: str) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)
