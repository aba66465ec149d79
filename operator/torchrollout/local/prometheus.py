"""A Prometheus server as a child process, scraping loopback targets with revision labels.

Rehearsal runs the operator's own PromQL against it, so the scrape configuration gives
every target the same `namespace` and `revision` labels the chart's ServiceMonitor gives
pods in a cluster. `PrometheusServer` is a context manager: leaving it stops the process
and nothing is left behind; a server that fails to start raises with its log's tail.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from torchrollout.errors import TorchrolloutError
from torchrollout.local.ports import free_port

INSTALL_HINT = (
    "install Debian's package (apt-get install -y --no-install-recommends prometheus) "
    "or pass the binary's path with --prometheus-bin"
)


class LocalServerError(TorchrolloutError):
    """A local server (Prometheus, TorchServe) could not be started or reached."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One host:port to scrape, with the labels its series get."""

    address: str
    labels: dict[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"
    honor_labels: bool = False  # keep the target's own namespace/revision labels


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PrometheusServer:
    """`with PrometheusServer(targets, workdir=...) as prom: prom.url`."""

    def __init__(
        self,
        targets: list[ScrapeTarget],
        *,
        workdir: Path,
        binary: str = "prometheus",
        scrape_interval: str = "1s",
        start_timeout: float = 30.0,
    ) -> None:
        self.targets = targets
        self.workdir = workdir
        self.binary = binary
        self.scrape_interval = scrape_interval
        self.start_timeout = start_timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        jobs = []
        for number, target in enumerate(self.targets):
            jobs.append(
                {
                    "job_name": f"target-{number}",
                    "metrics_path": target.metrics_path,
                    "honor_labels": target.honor_labels,
                    "static_configs": [{"targets": [target.address], "labels": target.labels}],
                }
            )
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": jobs,
        }

    def start(self) -> None:
        executable = shutil.which(self.binary)
        if executable is None:
            raise LocalServerError(
                f"the prometheus binary {self.binary!r} was not found: {INSTALL_HINT}"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.port = free_port()
        command = [
            executable,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self._process.poll() if self._process is not None else None
            if code is not None:
                self._process = None
                tail = log_tail(self.log_path)
                raise LocalServerError(f"prometheus exited with code {code}:\n{tail}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise LocalServerError(
            f"prometheus was not ready within {self.start_timeout:g}s:\n{log_tail(self.log_path)}"
        )

    def wait_for_targets(self, timeout: float = 30.0) -> None:
        """Block until every target has been scraped successfully once."""
        deadline = time.monotonic() + timeout
        health: list[str] = []
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{self.url}/api/v1/targets", timeout=2.0).json()
                health = [t["health"] for t in body["data"]["activeTargets"]]
            except (httpx.HTTPError, ValueError, KeyError):
                health = []
            if len(health) == len(self.targets) and all(h == "up" for h in health):
                return
            time.sleep(0.2)
        raise LocalServerError(f"prometheus targets not up within {timeout:g}s: {health}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
