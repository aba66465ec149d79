"""Pytest fixtures over the real control plane, for the e2e suite and the conformance suite.

Bring them into a conftest with ``from tests.kube_cluster.fixtures import *  # noqa: F403``.

- ``kube_cluster`` (session): one `ControlPlane` for the whole run, stopped at the end; its
  start-up time is printed in pytest's summary.
- ``kube_api`` (session): a kubernetes ``ApiClient`` as the cluster's admin.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest
from kubernetes import client, config

from .cluster import ClusterError, ControlPlane

__all__ = ["STARTUP_KEY", "kube_api", "kube_cluster"]

STARTUP_KEY = pytest.StashKey[float]()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    # SIGTERM (a CI timeout, `kill`) ends the run as Ctrl-C does, so teardown still stops
    # every process and removes the control plane's folder.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            plane = ControlPlane.start(nodes=3)
        except ClusterError as error:
            pytest.fail(f"the real control plane did not start: {error}", pytrace=False)
        request.config.stash[STARTUP_KEY] = plane.startup_seconds
        with plane:
            yield plane
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def kube_api(kube_cluster: ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    yield api
    api.close()
