"""Fixtures of the control plane's own checks: the shared real-cluster fixtures."""

from __future__ import annotations

from tests.kube_cluster.fixtures import *  # noqa: F403
