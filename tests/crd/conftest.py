"""Fixtures of the CRD suite: a real control plane with the generated CRD installed.

The CRD is the committed `crds/` file (kept equal to the generator by tests/unit/test_crd.py),
applied with the built kubectl as a user installs it, and waited on until Established; the
tests work in one namespace of their own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.kube_cluster.cluster import ControlPlane
from tests.kube_cluster.fixtures import *  # noqa: F403
from torchrollout.spec import GROUP, PLURAL

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / f"{GROUP}_{PLURAL}.yaml"
CRD_NAME = f"{PLURAL}.{GROUP}"
NAMESPACE = "crd-validation"


@pytest.fixture(scope="session")
def crd_applied(kube_cluster: ControlPlane) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --server-side` of the generated CRD, once Established; its output."""
    applied = kube_cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE), check=False
    )
    if applied.returncode != 0:
        pytest.fail(f"the API server refused the generated CRD:\n{applied.stderr}", pytrace=False)
    kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return applied


@pytest.fixture(scope="session")
def namespace(kube_cluster: ControlPlane, crd_applied: subprocess.CompletedProcess[str]) -> str:
    """A namespace for the suite's ModelDeployments, created once the CRD is served."""
    kube_cluster.kubectl("create", "namespace", NAMESPACE)
    return NAMESPACE
