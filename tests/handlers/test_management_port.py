"""TorchServe's management API is reachable from inside the pod only (CVE-2023-43654).

The operator renders TorchServe's config.properties (render/workload.py) with the management
API on 127.0.0.1 and inference and metrics on 0.0.0.0. Here a real TorchServe runs on that
rendered text, started with the rendered container's command line, and the kernel's socket
table says where it listens: the management ports (REST and gRPC) on loopback only, never on
a wildcard or an external address, and nothing answers on them at this machine's other
addresses. What is rewritten for this machine, and nothing else: every port number (to
free ones), the model store and metrics config paths (the pod's volumes), and the
inference and metrics hosts, 0.0.0.0 in a pod, to 127.0.0.1 (tests serve on loopback
only). The management host stays exactly as rendered.

The opt-in NetworkPolicy (render/traffic.py) admits the inference and metrics ports and no
other: the metrics port the config renders is the one it admits, the management port is not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.fixtures import build
from tests.support.models import FamilyModel
from torchrollout.archive.handlers import metrics_config
from torchrollout.archive.torchserve import free_ports
from torchrollout.render import names
from torchrollout.render.traffic import render_network_policy
from torchrollout.render.workload import render_config_map, render_deployment
from torchrollout.spec import ModelDeployment, load_model_deployment

pytestmark = pytest.mark.torchserve

REPO = Path(__file__).resolve().parents[2]
# A sequence-classifier deployment, served here with the tiny `seq-gru` family model.
DEPLOYMENT = REPO / "examples" / "deployments" / "fraud-lstm.yaml"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp{,6}


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket: its local address and port."""

    address: IPAddress
    port: int

    @property
    def loopback(self) -> bool:
        mapped = getattr(self.address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
        return bool(self.address.is_loopback or (mapped is not None and mapped.is_loopback))


def _address(hex_address: str) -> IPAddress:
    """/proc/net/tcp{,6}'s address: 32-bit words in the host's (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def process_group(pgid: int) -> list[int]:
    """The live processes of a process group, from /proc/*/stat."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # state, ppid, pgrp
                members.append(int(stat.parent.name))
    return members


def listening(pids: list[int]) -> list[Listener]:
    """The TCP sockets these processes listen on, from the kernel's socket table: the
    socket inodes their file descriptors point at, looked up in /proc/PID/net/tcp{,6}."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    found = set()
    for pid in pids:
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
                for row in rows:
                    cols = row.split()
                    local, state, inode = cols[1], cols[3], cols[9]
                    if state == LISTEN and inode in inodes:
                        host, port = local.split(":")
                        found.add(Listener(_address(host), int(port, 16)))
    return sorted(found, key=lambda s: (s.port, str(s.address)))


def external_addresses() -> list[IPAddress]:
    """This machine's addresses that are not loopback nor link-local (`hostname -I`, else
    the one its name resolves to)."""
    texts: list[str] = []
    hostname = shutil.which("hostname")
    if hostname is not None:
        result = subprocess.run([hostname, "-I"], capture_output=True, text=True, check=False)
        texts = result.stdout.split() if result.returncode == 0 else []
    if not texts:
        with contextlib.suppress(OSError):
            texts = [socket.gethostbyname(socket.gethostname())]
    found = []
    for text in texts:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(text.split("%")[0])
            if not (address.is_loopback or address.is_link_local or address.is_unspecified):
                found.append(address)
    return found


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and "=" in line)
    return {key: value for key, value in pairs}


@dataclass(frozen=True)
class Ports:
    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int


def for_this_machine(rendered: str, ports: Ports, store: Path, metrics: Path) -> str:
    """The rendered config.properties with only what the brief allows rewritten: port
    numbers, the pod's volume paths, and the inference and metrics hosts to loopback."""
    rewritten = {
        "inference_address": f"http://127.0.0.1:{ports.inference}",
        "management_address": None,  # the host as rendered; the port only
        "metrics_address": f"http://127.0.0.1:{ports.metrics}",
        "model_store": str(store),
        "metrics_config": str(metrics),
    }
    lines = []
    for line in rendered.splitlines():
        key, _, value = line.partition("=")
        if key == "management_address":
            url = urlsplit(value)
            value = url._replace(netloc=f"{url.hostname}:{ports.management}").geturl()
        elif rewritten.get(key) is not None:
            value = str(rewritten[key])
        lines.append(f"{key}={value}")
    # The rendered config leaves the gRPC services at their default addresses and ports
    # (7070, 7071); only the ports are set here, so that two servers never collide.
    lines += [
        f"grpc_inference_port={ports.grpc_inference}",
        f"grpc_management_port={ports.grpc_management}",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class RenderedServer:
    """A TorchServe started as the rendered pod starts it, in its own process group."""

    process: subprocess.Popen[bytes]
    ports: Ports
    model: str
    workdir: Path

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def pids(self) -> list[int]:
        return process_group(self.process.pid)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                assert self.process.poll() is None, self.log()
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                    answer = client.get(f"{self.management_url}/models/{self.model}")
                    workers = answer.json()[0]["workers"]
                    if workers and all(w["status"] == "READY" for w in workers):
                        return
                assert time.monotonic() < deadline, f"not ready in time\n{self.log()}"
                time.sleep(0.2)  # readiness has no event to wait on

    def log(self) -> str:
        out = self.workdir / "torchserve.out"
        return out.read_text(errors="replace")[-4000:] if out.exists() else ""

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 20 s, until no process is left."""
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.05)
                if not self.pids:
                    return


@pytest.fixture(scope="module")
def deployment() -> ModelDeployment:
    md = load_model_deployment(DEPLOYMENT)
    assert md.spec.model.handler == "sequence-classifier"
    return md


@pytest.fixture(scope="module")
def rendered(deployment: ModelDeployment) -> dict[str, str]:
    """config.properties as the ConfigMap carries it."""
    return properties(render_config_map(deployment)["data"]["config.properties"])


@pytest.fixture(scope="module")
def server(
    deployment: ModelDeployment,
    family_models: dict[str, FamilyModel],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RenderedServer]:
    workdir = tmp_path_factory.mktemp("rendered-torchserve")
    store, config_dir, tmp = workdir / "models", workdir / "config", workdir / "tmp"
    for folder in (store, config_dir, tmp):
        folder.mkdir()
    fm, name = family_models["seq-gru"], deployment.model_name
    built = build(
        weights=fm.weights,
        handler=fm.handler,
        config=fm.config_data(),
        name=name,
        version=deployment.spec.model.version,
        output=workdir / "out",
        sample=fm.sample,
    )
    shutil.copyfile(built.archive, store / f"{name}.mar")  # as the init container leaves it
    ports = Ports(*free_ports(5))
    text = render_config_map(deployment)["data"]["config.properties"]
    config = config_dir / "config.properties"
    config.write_text(for_this_machine(text, ports, store, metrics_config()))
    # The rendered container's command line, with the config and store paths of this run.
    [container] = render_deployment(deployment, replicas=1)["spec"]["template"]["spec"][
        "containers"
    ]
    paths = {f"{names.CONFIG_DIR}/config.properties": str(config), names.MODEL_STORE: str(store)}
    command = [*container["command"], *(paths.get(a, a) for a in container["args"])]
    beside = Path(sys.executable).parent / command[0]  # the venv's, as TorchServe's helper
    launcher = str(beside) if beside.exists() else shutil.which(command[0])
    assert launcher is not None, "the torchserve launcher is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    env |= {"TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(workdir / "logs")}
    env["METRICS_LOCATION"] = str(workdir / "logs")
    with (workdir / "torchserve.out").open("wb") as out:
        process = subprocess.Popen(
            [launcher, *command[1:]],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    running = RenderedServer(process, ports, name, workdir)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_the_rendered_config_binds_management_to_localhost(rendered: dict[str, str]) -> None:
    """What the pod gets, before anything here is rewritten."""
    assert urlsplit(rendered["management_address"]).hostname == "127.0.0.1"
    assert urlsplit(rendered["inference_address"]).hostname == "0.0.0.0"
    assert rendered["enable_model_api"] == "false"


def test_management_listens_on_loopback_only(server: RenderedServer) -> None:
    sockets = listening(server.pids)
    by_port: dict[int, list[Listener]] = {}
    for s in sockets:
        by_port.setdefault(s.port, []).append(s)
    ports = server.ports
    for port in (ports.management, ports.grpc_management):
        assert by_port.get(port), f"nothing listens on {port}: {sockets}"
        outside = [s for s in by_port[port] if not s.loopback]
        assert not outside, f"management port {port} listens beyond loopback: {outside}"
    # The server does listen where it should: the probe found the real sockets.
    assert by_port.get(ports.inference), sockets
    assert by_port.get(ports.metrics), sockets
    # Nothing listens on any other port, a wildcard address least of all.
    assert set(by_port) <= set(astuple(ports)), sockets


def test_the_management_api_answers_on_loopback(server: RenderedServer) -> None:
    with httpx.Client(timeout=10.0) as client:
        answer = client.get(f"{server.management_url}/models/{server.model}")
    assert answer.status_code == 200, answer.text
    assert answer.json()[0]["modelName"] == server.model


def test_the_management_port_refuses_connections_at_this_machines_other_addresses(
    server: RenderedServer,
) -> None:
    addresses = external_addresses()
    if not addresses:
        pytest.skip("this machine has no address besides loopback (hostname -I gave none)")
    for address in addresses:
        for port in (server.ports.management, server.ports.grpc_management):
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(5.0)
                with pytest.raises(ConnectionRefusedError):
                    s.connect((str(address), port))


def test_the_network_policy_admits_inference_and_metrics_and_never_management(
    deployment: ModelDeployment, rendered: dict[str, str]
) -> None:
    policy = render_network_policy(deployment, metrics_namespace="monitoring")
    admitted: set[Any] = {
        p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])
    }
    metrics_port = urlsplit(rendered["metrics_address"]).port
    inference_port = urlsplit(rendered["inference_address"]).port
    management_port = urlsplit(rendered["management_address"]).port
    assert admitted == {inference_port, metrics_port}
    assert management_port not in admitted
    [container] = render_deployment(deployment, replicas=1)["spec"]["template"]["spec"][
        "containers"
    ]
    exposed = {p["containerPort"] for p in container["ports"]}
    assert exposed == admitted


def test_the_socket_table_reader_sees_listeners_and_their_addresses() -> None:
    """The reader the assertions above rely on: this process's own loopback listeners, and
    the table's encodings of a wildcard and an IPv4-mapped address."""
    opened = []
    try:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = socket.socket(family, socket.SOCK_STREAM)
            opened.append(s)
            try:
                s.bind((host, 0))
            except OSError:
                continue  # no IPv6 loopback here
            s.listen()
            mine = Listener(ipaddress.ip_address(host), s.getsockname()[1])
            assert mine in listening([os.getpid()])
            assert mine.loopback
    finally:
        for s in opened:
            s.close()
    assert _address("00000000") == ipaddress.ip_address("0.0.0.0")
    assert _address("0100007F") == ipaddress.ip_address("127.0.0.1")
    assert not Listener(_address("0" * 32), 8081).loopback  # ::
    mapped = _address("0000000000000000FFFF00000100007F")
    assert mapped == ipaddress.ip_address("::ffff:127.0.0.1")
    assert Listener(mapped, 8081).loopback
    assert not Listener(_address("0000000000000000FFFF000002000207"), 8081).loopback
