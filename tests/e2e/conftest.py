"""The operator end to end on a real control plane (tests/kube_cluster): installed with the
built helm from the chart, run as a process with the chart's ServiceAccount token (never
admin), driven by the real kubectl, the plugin and the kubernetes client, and judged on a
real Prometheus scraping an exporter that plays each revision's metrics. Pods are kwok's:
they turn Ready without running TorchServe. Test namespaces enforce the restricted Pod
Security Standard, so every pod the operator renders must pass it.

One control plane, one Prometheus and one operator (watching every namespace) serve the
whole session; each test works in a fresh namespace. `tests/e2e/emulator/` runs what only
the emulator can do (injected faults, pods kept unready) with the same helpers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from tests.kube_cluster.cluster import ControlPlane
from tests.kube_cluster.fixtures import *  # noqa: F403
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter, Rates
from torchrollout.local.ports import free_port
from torchrollout.local.prometheus import PrometheusServer, ScrapeTarget, log_tail
from torchrollout.spec import compute_revision, parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHART = ROOT / "charts" / "torchrollout"
CRD = CHART / "crds" / "torchrollout.io_modeldeployments.yaml"
RELEASE, OPERATOR_NAMESPACE = "torchrollout", "torchrollout-system"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
# Namespaces whose tests run operators of their own: the session's operator leaves them alone.
OWN_OPERATOR_PREFIX = "own-op-"
# kubectl finds its `torchrollout` plugin (kubectl-torchrollout) on PATH, as users install it.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed e2e test shows the last lines of the session operator's log beside it."""
    report = yield
    running = getattr(item, "funcargs", {}).get("operator_process")
    if report.failed and isinstance(running, OperatorProcess) and running.log.exists():
        report.sections.append(("operator log (last lines)", log_tail(running.log, 60)))
    return report


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


def start_operator(
    kubeconfig: Path,
    prometheus: PrometheusServer | str,
    workdir: Path,
    *,
    args: Sequence[str] = ("--all-namespaces",),
    name: str = "operator",
    wait: bool = True,
) -> OperatorProcess:
    """`torchrollout operator` (every namespace unless `args` say), with fast timers.

    `wait=False` returns at once: a standby replica serves no metrics until it leads.
    """
    port = free_port()
    argv = [
        str(BIN / "torchrollout"),
        "operator",
        *args,
        f"--kubeconfig={kubeconfig}",
        f"--prometheus-url={prometheus if isinstance(prometheus, str) else prometheus.url}",
        f"--metrics-port={port}",
        f"--liveness=http://127.0.0.1:{free_port()}/healthz",
        "--timer-seconds=0.5",
        "--verbose",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    running = OperatorProcess(
        argv, workdir / f"{name}.log", env, f"http://127.0.0.1:{port}/metrics"
    )
    if wait:
        running.start()
    else:
        with running.log.open("ab") as log:
            running.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    return running


@dataclass(frozen=True)
class Helm:
    """The built helm against the test cluster."""

    binary: Path
    kubeconfig: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        done = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="session")
def kubeconfig(kube_cluster: ControlPlane) -> Path:
    return kube_cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(kube_api: client.ApiClient) -> client.ApiClient:
    return kube_api


@pytest.fixture
def kubectl(kube_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(
        kube_cluster.kubeconfig,
        tmp_path_factory.mktemp("kubectl-cache"),
        binary=kube_cluster.binary("kubectl"),
    )


@pytest.fixture(scope="session")
def helm(kube_cluster: ControlPlane) -> Helm:
    return Helm(kube_cluster.binary("helm"), kube_cluster.kubeconfig)


def create_namespace(api_client: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api_client).create_namespace(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}
    )


@pytest.fixture
def namespace(api_client: client.ApiClient, operator_process: OperatorProcess) -> Iterator[str]:
    """A fresh namespace enforcing the restricted Pod Security Standard."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    create_namespace(api_client, name)
    yield name
    client.CoreV1Api(api_client).delete_namespace(name)


@pytest.fixture(scope="session")
def installed(kube_cluster: ControlPlane, api_client: client.ApiClient, helm: Helm) -> str:
    """The chart installed as a user does, and Gateway API's standard CRDs."""
    create_namespace(api_client, OPERATOR_NAMESPACE)
    helm("install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE, "--wait", "--timeout=2m")
    kube_cluster.kubectl("apply", "--server-side", "-f", str(kube_cluster.tools.gateway_api_crds))
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modeldeployments.torchrollout.io",
        "crd/httproutes.gateway.networking.k8s.io",
    )
    # Established is not yet served: until the API server's cache for the new kind is filled,
    # lists answer 429 "storage is (re)initializing" and the operator's first watch backs off.
    eventually(
        lambda: kube_cluster.kubectl("get", "modeldeployments", "-A", check=False).returncode == 0,
        timeout=60,
        interval=0.5,
    )
    return RELEASE


@pytest.fixture(scope="session")
def operator_process(
    kube_cluster: ControlPlane,
    installed: str,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator as the chart's ServiceAccount: a missing RBAC rule fails a test."""
    workdir = tmp_path_factory.mktemp("operator")
    token = kube_cluster.token_kubeconfig(installed, OPERATOR_NAMESPACE, workdir / "kubeconfig")
    running = start_operator(
        token, prometheus, workdir, args=(f"--namespace=!{OWN_OPERATOR_PREFIX}*",)
    )
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


def plugin(kubectl: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl torchrollout ARGS`: kubectl finds the plugin on PATH and passes it KUBECONFIG."""
    env = {**os.environ, "KUBECONFIG": str(kubectl.kubeconfig)}
    done = subprocess.run(
        [str(kubectl.binary), "torchrollout", *args],
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


def condition_of(status: dict[str, Any], kind: str) -> dict[str, Any]:
    """The status condition of type `kind`, empty when there is none."""
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def events_of(kubectl: Kubectl, namespace: str) -> str:
    """Every Event message of the namespace, space-separated."""
    return kubectl("get", "events", "-n", namespace, "-o", "jsonpath={.items[*].message}").stdout


def dump(body: dict[str, Any]) -> str:
    return yaml.safe_dump(body)


def phase_is(api: client.CustomObjectsApi, namespace: str, phase: str, **fields: Any) -> bool:
    status = status_of(api, namespace)
    assert status.get("phase") not in {"RolledBack", "Failed"} - {phase}, status.get("message")
    return status.get("phase") == phase and all(status.get(k) == v for k, v in fields.items())


def deploy_stable(
    kubectl: Kubectl, api: client.CustomObjectsApi, exporter: Exporter, namespace: str, **spec: Any
) -> dict[str, Any]:
    body = model_deployment(namespace, "1.0.0", **spec)
    play(exporter, namespace, body, GOOD)
    kubectl.apply(dump(body))
    eventually(lambda: phase_is(api, namespace, "Succeeded", stableVersion="1.0.0"), timeout=30)
    return body


def deployments(api_client: client.ApiClient, namespace: str) -> dict[str, int]:
    apps = client.AppsV1Api(api_client)
    found = apps.list_namespaced_deployment(namespace).items
    return {d.metadata.name: d.spec.replicas for d in found}


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body and answers `status`."""

    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def events(self) -> list[str]:
        return [b["event"] for b in list(self.bodies)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(received.status)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()
    thread.join()
