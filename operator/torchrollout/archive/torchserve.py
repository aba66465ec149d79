"""Start and stop a real TorchServe on free loopback ports, serving given .mar files.

Used by the handler tests, the bench and (later) rehearsal, which runs one TorchServe per
revision. What TorchServe 0.12 needs for that, and this module does:

- distinct ports for inference, management, metrics and both gRPC services (all loopback);
- its own working dir (TorchServe writes `logs/` into the cwd) and its own TMPDIR/TEMP: the
  launcher keeps a pid file in the temp dir and refuses to start a second server beside it,
  and the Java side puts the worker sockets in `java.io.tmpdir`;
- `disable_token_authorization=true` (token auth is on by default and answers 400 to
  everything, /ping included), the model API left off (models load at start with `--models`),
  `metrics_mode=prometheus` and the handlers' metrics.yaml, or custom metrics are dropped;
- its own session: the `torchserve` launcher forks the Java front end and exits, and the front
  end forks the Python workers, so `stop()` signals the whole process group (SIGTERM, then
  SIGKILL after a deadline) and waits until no process of the group is left.

No torch import here: a process that only drives TorchServe stays light.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx


class TorchServeError(RuntimeError):
    """TorchServe did not start, or a model did not become ready, in time."""


@dataclass(frozen=True)
class TorchServePorts:
    """The five loopback ports one TorchServe listens on."""

    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (free when asked; bound right after)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _launcher() -> str:
    beside = Path(sys.executable).parent / "torchserve"
    found = str(beside) if beside.exists() else shutil.which("torchserve")
    if found is None:
        raise TorchServeError("the torchserve launcher is not installed")
    return found


class TorchServe:
    """One TorchServe process tree; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        models: Mapping[str, Path],
        workdir: Path,
        metrics_config: Path,
        workers_per_model: int = 1,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        self.models = dict(models)
        self.workdir = workdir
        self.metrics_config = metrics_config
        self.workers_per_model = workers_per_model
        self.extra_properties = dict(extra_properties or {})
        self.ports = TorchServePorts(*free_ports(5))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def _write_config(self) -> Path:
        store = self.workdir / "model-store"
        store.mkdir(parents=True, exist_ok=True)
        for name, mar in self.models.items():
            shutil.copyfile(mar, store / f"{name}.mar")
        p = self.ports
        properties = {
            "inference_address": f"http://127.0.0.1:{p.inference}",
            "management_address": f"http://127.0.0.1:{p.management}",
            "metrics_address": f"http://127.0.0.1:{p.metrics}",
            "grpc_inference_address": "127.0.0.1",
            "grpc_management_address": "127.0.0.1",
            "grpc_inference_port": str(p.grpc_inference),
            "grpc_management_port": str(p.grpc_management),
            "metrics_mode": "prometheus",
            "metrics_config": str(self.metrics_config),
            "disable_token_authorization": "true",
            "enable_model_api": "false",
            "model_store": str(store),
            "load_models": ",".join(f"{name}={name}.mar" for name in self.models),
            "default_workers_per_model": str(self.workers_per_model),
            "install_py_dep_per_model": "false",
            **self.extra_properties,
        }
        config = self.workdir / "config.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        return config

    def start(self, timeout: float = 90.0) -> TorchServe:
        """Launch, then wait until /ping is healthy and every model has a ready worker."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        config = self._write_config()
        env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
        }
        # Any TS_* variable overrides config.properties; an inherited one must not leak in.
        env = {k: v for k, v in env.items() if not k.startswith("TS_")}
        with (self.workdir / "torchserve.out").open("wb") as out:
            self._process = subprocess.Popen(
                [_launcher(), "--start", "--foreground", "--ts-config", str(config), "--ncs"],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        pending = set(self.models)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                if time.monotonic() > deadline:
                    raise TorchServeError(
                        f"not ready in time (waiting for {sorted(pending)}); see {self.log_dir}"
                    )
                if self._process is not None and self._process.poll() is not None:
                    raise TorchServeError(f"TorchServe exited; see {self.workdir}/torchserve.out")
                for name in sorted(pending):
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        answer = client.get(f"{self.management_url}/models/{name}")
                        workers = answer.json()[0].get("workers", []) if answer.is_success else []
                        if workers and all(w.get("status") == "READY" for w in workers):
                            pending.discard(name)
                time.sleep(0.1)  # a poll interval: readiness has no event to wait on
            ping = client.get(f"{self.inference_url}/ping")
            if not ping.is_success:
                raise TorchServeError(f"/ping answered {ping.status_code}: {ping.text}")

    def _group_gone(self) -> bool:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group; SIGKILL what is left after `timeout`; reap the launcher."""
        if self._process is None:
            return
        pgid = self._process.pid  # a new session: the launcher's pid is the group id
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=0.05)
                if self._group_gone():
                    self._process = None
                    return
        self._process.wait(timeout=5)
        self._process = None

    def __enter__(self) -> TorchServe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
