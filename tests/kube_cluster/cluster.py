"""`ControlPlane`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.

The real Kubernetes components, built by `tests.kube_cluster.build`, run as child processes
on loopback ports in one temporary folder: a CA and its certificates, etcd's data, every
process's log and the admin kubeconfig. kwok plays the kubelet of a few fake nodes, so pods
are scheduled and turn Ready without any container running.

    with ControlPlane.start(nodes=3) as cluster:
        cluster.kubeconfig            # admin (system:masters)
        cluster.kubectl("get", "nodes")
        cluster.token_kubeconfig("torchrollout", "torchrollout-system", path)  # a ServiceAccount's
        cluster.audit_events(user)    # what a ServiceAccount asked of the API server

Every wait is bounded; a process that exits or a wait that runs out raises `ClusterError`
with that process's log tail. Children get SIGKILL from the kernel if this process dies
(PR_SET_PDEATHSIG), and `stop()` (or leaving the `with`) stops them and removes the folder;
a folder left by a process that was killed outright is removed by the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from torchrollout.local.ports import free_port
from torchrollout.local.prometheus import log_tail

from .build import Toolchain, toolchain
from .pki import Pki, make_pki

SERVICE_CIDR = "10.0.0.0/16"  # room for a fleet of thousands of Services (bench/)
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: first address of the range
ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 120.0
ETCD_TIMEOUT = 30.0

# The API server's audit log records what ServiceAccounts outside kube-system ask (the
# operator under test, a chart's accounts): verb, resource, user and response code, no
# bodies. Everything else, the controller-manager's per-controller accounts included, is not
# recorded, so other tests pay next to nothing for it.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


class ClusterError(Exception):
    """The control plane could not be built, started or reached; the message says why."""


def ensure_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ClusterError(
                f"port {port} on 127.0.0.1 (for {what}) is in use: stop what listens there "
                f"(`ss -ltnp 'sport = :{port}'` shows it) or choose another port"
            ) from exc


WORKDIR_PREFIX = "torchrollout-kube-"
OWNER_FILE = "owner.pid"


def sweep_abandoned_workdirs(parent: Path) -> list[Path]:
    """Remove the folders of control planes whose owning process no longer exists."""
    removed = []
    for folder in parent.glob(f"{WORKDIR_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if not Path(f"/proc/{owner}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _die_with_parent() -> None:
    """Run in each child before exec: the kernel kills it when this process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Component:
    """One child process and its log."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (single-threaded at this point)
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ClusterError(
                f"{self.name} exited with code {self.process.returncode} (log: {self.log}).\n"
                f"Last lines:\n{log_tail(self.log, 25)}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


def _wait(
    what: str,
    ready: Callable[[], bool],
    *,
    components: list[Component],
    timeout: float,
    interval: float = 0.2,
) -> None:
    """Poll `ready` until it is true; fail fast when a component dies, and at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        for component in components:
            component.check_alive()
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {c.name} ({c.log}):\n{log_tail(c.log, 10)}" for c in components)
            raise ClusterError(f"{what} did not happen within {timeout:.0f} s.\n{logs}")
        time.sleep(interval)


@dataclass
class ControlPlane:
    """A running control plane; build it with `ControlPlane.start()`."""

    tools: Toolchain
    workdir: Path
    keep_workdir: bool
    pki: Pki
    apiserver_port: int
    etcd_port: int
    nodes: int
    components: dict[str, Component] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @classmethod
    def start(
        cls,
        *,
        nodes: int = 3,
        apiserver_port: int = 0,
        workdir: Path | None = None,
        tools: Toolchain | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> ControlPlane:
        """Start every component and wait until the cluster schedules pods onto Ready nodes."""
        tools = tools or toolchain()
        missing = tools.missing()
        if missing:
            raise ClusterError(
                "the control plane's binaries are not built: missing "
                + ", ".join(str(m) for m in missing)
                + ". Build them with `make kube` (python3 -m tests.kube_cluster.build)."
            )
        if apiserver_port:
            ensure_free(apiserver_port, "kube-apiserver")
        sweep_abandoned_workdirs(Path(tempfile.gettempdir()))
        folder = workdir or Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / OWNER_FILE).write_text(str(os.getpid()))
        try:
            pki = make_pki(folder / "pki", service_ip=SERVICE_IP)
        except BaseException:
            if workdir is None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        plane = cls(
            tools=tools,
            workdir=folder,
            keep_workdir=workdir is not None,
            pki=pki,
            apiserver_port=apiserver_port or free_port(),
            etcd_port=free_port(),
            nodes=nodes,
        )
        try:
            plane._boot(progress or (lambda _: None))
        except BaseException:
            plane.stop()
            raise
        return plane

    # -- what tests use -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON event a line (see AUDIT_POLICY)."""
        return self.workdir / "logs" / "audit.log"

    def audit_events(self, username: str | None = None) -> list[dict[str, Any]]:
        """The audit log's events so far, of `username` only when given (a ServiceAccount is
        `system:serviceaccount:NAMESPACE:NAME`); a request shows once per stage it reached
        (a watch: ResponseStarted, then ResponseComplete when it ends)."""
        if not self.audit_log.exists():
            return []
        events = []
        for line in self.audit_log.read_text().splitlines():
            if not line.endswith("}") or (username and f'"{username}"' not in line):
                continue  # a line being written, or another user's
            event: dict[str, Any] = json.loads(line)
            if username is None or event.get("user", {}).get("username") == username:
                events.append(event)
        return events

    def binary(self, name: str) -> Path:
        return self.tools.binary(name)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The built kubectl as admin."""
        result = subprocess.run(
            [str(self.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def token_kubeconfig(
        self, service_account: str, namespace: str, path: Path, *, hours: int = 24
    ) -> Path:
        """A kubeconfig that acts as a ServiceAccount, with a token from the TokenRequest API."""
        token = self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={hours}h"
        ).stdout.strip()
        self._write_kubeconfig(path, user={"token": token}, namespace=namespace)
        return path

    def restart(self, name: str) -> None:
        """Stop one component and start it again with the same flags (etcd keeps its data)."""
        component = self.components[name]
        component.stop()
        component.start()
        if name == "kube-apiserver":
            _wait("kube-apiserver /readyz", self._readyz, components=[component], timeout=90)

    def stop(self) -> None:
        for component in reversed(list(self.components.values())):
            with contextlib.suppress(Exception):
                component.stop()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start-up -------------------------------------------------------------------------

    def _component(self, name: str, argv: list[str]) -> Component:
        component = Component(name, argv, self.workdir / "logs" / f"{name}.log")
        component.log.parent.mkdir(exist_ok=True)
        self.components[name] = component
        component.start()
        return component

    def _boot(self, progress: Callable[[str], None]) -> None:
        started = time.monotonic()
        etcd = self._component("etcd", self._etcd_argv())
        _wait(
            "etcd /health",
            lambda: (
                b'"health":"true"'
                in urllib.request.urlopen(
                    f"http://127.0.0.1:{self.etcd_port}/health", timeout=2
                ).read()
            ),
            components=[etcd],
            timeout=ETCD_TIMEOUT,
        )
        progress(f"etcd ready in {time.monotonic() - started:.1f} s")
        apiserver = self._component("kube-apiserver", self._apiserver_argv())
        _wait(
            "kube-apiserver /readyz",
            self._readyz,
            components=[etcd, apiserver],
            timeout=START_TIMEOUT,
        )
        self._write_kubeconfig(self.kubeconfig, user=self._admin_user(), namespace="default")
        progress(f"kube-apiserver ready in {time.monotonic() - started:.1f} s")
        self._component("kube-controller-manager", self._controller_manager_argv())
        self._component("kube-scheduler", self._scheduler_argv())
        self._component("kwok", self._kwok_argv())
        self._create_nodes()
        everything = list(self.components.values())
        _wait(
            f"{self.nodes} Ready nodes",
            lambda: self._ready_nodes() >= self.nodes,
            components=everything,
            timeout=START_TIMEOUT,
            interval=0.5,
        )
        _wait(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            components=everything,
            timeout=START_TIMEOUT,
            interval=0.5,
        )
        self.startup_seconds = time.monotonic() - started
        progress(f"control plane ready in {self.startup_seconds:.1f} s")

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def _readyz(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.url}/readyz", context=self._ssl_context(), timeout=3
            ) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _ready_nodes(self) -> int:
        listing = self.kubectl("get", "nodes", "-o", "json", check=False)
        if listing.returncode != 0:
            return 0
        ready = 0
        for node in yaml.safe_load(listing.stdout)["items"]:
            conditions = node.get("status", {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready += 1
        return ready

    def _admin_user(self) -> dict[str, Any]:
        return {
            "client-certificate": str(self.pki.admin_cert),
            "client-key": str(self.pki.admin_key),
        }

    def _write_kubeconfig(self, path: Path, *, user: dict[str, Any], namespace: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "torchrollout-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.pki.ca_cert),
                    },
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {
                    "name": "torchrollout-test",
                    "context": {
                        "cluster": "torchrollout-test",
                        "user": "user",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "torchrollout-test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _etcd_argv(self) -> list[str]:
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        return [
            str(self.binary("etcd")),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        pki = self.pki
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        return [
            str(self.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--secure-port={self.apiserver_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=1024",  # MB: no rotation within a test run
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_argv(self) -> list[str]:
        kubeconfig = self.kubeconfig
        return [
            str(self.binary("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'controller-manager-certs'}",
            f"--service-account-private-key-file={self.pki.service_account_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            f"--cluster-signing-cert-file={self.pki.ca_cert}",
            f"--cluster-signing-key-file={self.pki.ca_key}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        kubeconfig = self.kubeconfig
        return [
            str(self.binary("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def _kwok_argv(self) -> list[str]:
        # Nodes and pods turn Ready at once; nodes renew their Lease, as kubelets do, so the
        # node lifecycle controller never marks them unreachable (and their pods unready).
        # Job pods complete at once too, except archive builds: a test runs their command
        # and reports its end itself (tests/e2e/kubelet.py).
        stages = self.tools.kwok_stages
        chosen = [
            stages / "node" / "fast" / "node-initialize.yaml",
            *sorted((stages / "node" / "heartbeat-with-lease").glob("*.yaml")),
            *sorted((stages / "pod" / "fast").glob("*.yaml")),
        ]
        config = self.workdir / "kwok-stages.yaml"
        config.write_text("\n---\n".join(_stage(p) for p in chosen))
        return [
            str(self.binary("kwok")),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={config}",
            "--manage-all-nodes=true",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{free_port()}",
        ]

    def _create_nodes(self) -> None:
        nodes = []
        for index in range(self.nodes):
            name = f"kwok-node-{index}"
            capacity = {"cpu": "32", "memory": "128Gi", "pods": "110"}
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "topology.kubernetes.io/zone": f"zone-{'abc'[index % 3]}",
                            "type": "kwok",
                        },
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                    },
                    "status": {"allocatable": capacity, "capacity": capacity},
                }
            )
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )


# Pods kwok leaves Running, for a test to finish as a kubelet would.
TEST_COMPLETED_LABEL = "torchrollout.io/component"


def _stage(path: Path) -> str:
    """A kwok stage as shipped; pod-complete skips pods labelled TEST_COMPLETED_LABEL."""
    text = path.read_text()
    if path.name != "pod-complete.yaml":
        return text
    anchor = "    matchExpressions:\n"
    assert anchor in text, f"kwok's {path} changed shape: no selector.matchExpressions"
    skip = (
        f"    - key: '.metadata.labels[\"{TEST_COMPLETED_LABEL}\"]'\n"
        "      operator: 'DoesNotExist'\n"
    )
    return text.replace(anchor, anchor + skip, 1)
