"""Pytest fixtures over the real control plane, for the e2e suite and the conformance suite.

Bring them into a conftest with ``from tests.kube_cluster.fixtures import *  # noqa: F403``.

- ``kube_cluster`` (session): one `ControlPlane` for the whole run, stopped at the end; its
  start-up time is printed in pytest's summary.
- ``kube_api`` (session): a kubernetes ``ApiClient`` as the cluster's admin.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, config

from .cluster import ClusterError, ControlPlane

__all__ = ["STARTUP_KEY", "kube_api", "kube_cluster"]

STARTUP_KEY = pytest.StashKey[float]()


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    try:
        plane = ControlPlane.start(nodes=3)
    except ClusterError as error:
        pytest.fail(f"the real control plane did not start: {error}", pytrace=False)
    request.config.stash[STARTUP_KEY] = plane.startup_seconds
    with plane:
        yield plane


@pytest.fixture(scope="session")
def kube_api(kube_cluster: ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    yield api
    api.close()
