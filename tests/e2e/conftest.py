"""The operator end to end: a real `torchrollout operator` process against the API emulator,
a real Prometheus scraping an exporter that plays each revision's metrics, and the real
kubectl and kubernetes client driving it.

One emulator, one Prometheus and one operator (watching every namespace) serve the whole
session; each test works in a fresh namespace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.fixtures import *  # noqa: F403
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter, Rates
from torchrollout.local.ports import free_port
from torchrollout.local.prometheus import PrometheusServer, ScrapeTarget
from torchrollout.spec import compute_revision, parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CRD = ROOT / "crds" / "torchrollout.io_modeldeployments.yaml"
HTTPROUTE_CRD = Path(__file__).parent / "manifests" / "httproutes-crd.yaml"
# kubectl finds its `torchrollout` plugin (kubectl-torchrollout) on PATH, as users install it.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def exporter() -> Iterator[Exporter]:
    with Exporter() as running:
        yield running


@pytest.fixture(scope="session")
def prometheus(
    exporter: Exporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    target = ScrapeTarget(exporter.address, honor_labels=True)
    with PrometheusServer([target], workdir=tmp_path_factory.mktemp("prometheus")) as server:
        server.wait_for_targets()
        yield server


@dataclass
class OperatorProcess:
    """`torchrollout operator` in a subprocess; `restart()` kills it hard and starts anew."""

    argv: list[str]
    log: Path
    env: dict[str, str]
    metrics_url: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        eventually(self._serving, timeout=30)

    def _serving(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[
            -3000:
        ]
        try:
            return httpx.get(self.metrics_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def metrics(self) -> str:
        return httpx.get(self.metrics_url, timeout=2).text

    def healthy(self) -> bool:
        liveness = next(a.split("=", 1)[1] for a in self.argv if a.startswith("--liveness="))
        return httpx.get(liveness, timeout=2).status_code == 200


@pytest.fixture(scope="session")
def operator_process(
    kube_emulator: KubeEmulator,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    kubectl = Kubectl(kube_emulator.kubeconfig_path, tmp_path_factory.mktemp("kubectl-cache"))  # type: ignore[arg-type]
    kubectl("apply", "-f", str(CRD))
    port = free_port()
    argv = [
        str(BIN / "torchrollout"),
        "operator",
        "--all-namespaces",
        f"--kubeconfig={kube_emulator.kubeconfig_path}",
        f"--prometheus-url={prometheus.url}",
        f"--metrics-port={port}",
        f"--liveness=http://127.0.0.1:{free_port()}/healthz",
        "--timer-seconds=0.5",
        "--verbose",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    running = OperatorProcess(
        argv,
        tmp_path_factory.mktemp("operator") / "operator.log",
        env,
        f"http://127.0.0.1:{port}/metrics",
    )
    running.start()
    yield running
    running.stop()


def model_deployment(namespace: str, version: str = "1.0.0", **spec: Any) -> dict[str, Any]:
    """A ModelDeployment with a fast policy: 3s ticks, two steps, small sample floors."""
    canary = {
        "steps": [20, 60],
        "interval": "3s",
        "progressDeadlineSeconds": 20,
        "analysis": {
            "metrics": [
                {"template": "accuracy", "min": 0.85},
                {"template": "error-rate", "max": 0.05},
            ],
            "minSamples": 5,
            "failureLimit": 2,
        },
    }
    body: dict[str, Any] = {
        "apiVersion": "torchrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": namespace},
        "spec": {
            "model": {
                "version": version,
                "source": {"uri": "s3://models/fraud/model.pt"},
                "handler": "sequence-classifier",
            },
            "canary": canary,
        },
    }
    for key, value in spec.items():
        body["spec"][key] = (
            {**body["spec"].get(key, {}), **value} if isinstance(value, dict) else value
        )
    return body


def plugin(kube_emulator: KubeEmulator, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl torchrollout ARGS`: kubectl finds the plugin on PATH and passes it KUBECONFIG."""
    env = {**os.environ, "KUBECONFIG": str(kube_emulator.kubeconfig_path)}
    done = subprocess.run(
        [str(BIN / "kubectl"), "torchrollout", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def revision_of(body: dict[str, Any]) -> str:
    return compute_revision(parse_model_deployment(body).spec)


GOOD = Rates(requests=50, errors=0, labeled=20, correct=19)
BAD = Rates(requests=50, errors=0, labeled=20, correct=10)


def play(exporter: Exporter, namespace: str, body: dict[str, Any], rates: Rates) -> None:
    """Make the exporter serve `rates` for the revision `body` names."""
    exporter.revision(namespace, revision_of(body)).__dict__.update(rates.__dict__)


@pytest.fixture
def md_api(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def get_md(api: client.CustomObjectsApi, namespace: str, name: str = "fraud") -> dict[str, Any]:
    found: dict[str, Any] = api.get_namespaced_custom_object(
        "torchrollout.io", "v1alpha1", namespace, "modeldeployments", name
    )
    return found


def status_of(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = get_md(api, namespace).get("status") or {}
    return status


def dump(body: dict[str, Any]) -> str:
    return yaml.safe_dump(body)
