"""The e2e cases only the API emulator can stage: injected 409/5xx answers, cut watches,
a Deployment kept unready, and a resource the API accepted although the CRD's CEL rules
would refuse it (an older CRD, or a server without CEL).

The fixtures here replace the real cluster's (same names) with the emulator's; the operator
runs as a process against it, as in the parent folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import CRD, OperatorProcess, start_operator
from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.fixtures import *  # noqa: F403
from tests.kube_emulator.fixtures import Kubectl
from torchrollout.local.prometheus import PrometheusServer


@pytest.fixture(scope="session")
def kubeconfig(kube_emulator: KubeEmulator) -> Path:
    assert kube_emulator.kubeconfig_path is not None
    return kube_emulator.kubeconfig_path


@pytest.fixture(scope="session")
def operator_process(
    kube_emulator: KubeEmulator,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    kubeconfig = kube_emulator.kubeconfig_path
    assert kubeconfig is not None
    Kubectl(kubeconfig, tmp_path_factory.mktemp("kubectl-cache"))("apply", "-f", str(CRD))
    running = start_operator(kubeconfig, prometheus, tmp_path_factory.mktemp("operator"))
    yield running
    running.stop()
