"""The local servers of a rehearsal: one archive and one TorchServe per revision, Prometheus.

Every start registers its stop on the caller's `ExitStack` *before* starting, so a server
interrupted half-way through its start (Ctrl-C, a failure of its neighbour) is stopped
too. A server that fails to start raises `RehearsalError` with the tail of its logs.

Prometheus scrapes each TorchServe's metrics port with the target labels `namespace`
(metadata.namespace) and `revision` (the spec's revision hash): the labels the chart's
ServiceMonitor gives pods, which the operator's PromQL templates select on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from torchrollout.archive import ArchiveError
from torchrollout.archive.torchserve import TorchServe, TorchServeError
from torchrollout.local.prometheus import (
    LocalServerError,
    PrometheusServer,
    ScrapeTarget,
    log_tail,
)
from torchrollout.metrics import PrometheusProvider
from torchrollout.rehearsal.resources import Pair, RehearsalError, Revision
from torchrollout.rehearsal.signals import deferred
from torchrollout.rehearsal.traffic import Traffic

Note = Callable[[str], None]


def build_archive_of(revision: Revision, folder: Path) -> Path:
    """The .mar of one revision, built by the operator's archive builder."""
    from torchrollout.archive.build import BuildRequest, build_archive

    model = revision.spec.model
    request = BuildRequest(
        source=model.source.uri,
        name=revision.resource.model_name,
        version=model.version,
        handler=model.handler,
        output=folder / revision.revision,
        sha256=model.source.sha256,
        config=model.config,
        sample_input=model.sample_input,
        batch_size=model.batching.max_batch_size,
        max_batch_delay_ms=model.batching.max_batch_delay_ms,
    )
    try:
        return build_archive(request).archive
    except ArchiveError as exc:
        raise RehearsalError(
            f"{revision.path}: building the archive of version {model.version} failed at "
            f"{exc.step}: {exc.message}"
        ) from exc


@dataclass(frozen=True)
class Servers:
    """What is running: a TorchServe per revision (by revision) and Prometheus."""

    torchserves: dict[str, TorchServe]
    prometheus: PrometheusServer

    def urls(self) -> dict[str, str]:
        return {revision: ts.inference_url for revision, ts in self.torchserves.items()}

    def addresses(self) -> dict[str, object]:
        """Every port in use, for the report (and for tests that check nothing is left)."""
        return {
            "prometheus": self.prometheus.url,
            "torchserve": {
                revision: {
                    "inference": ts.ports.inference,
                    "management": ts.ports.management,
                    "metrics": ts.ports.metrics,
                    "grpcInference": ts.ports.grpc_inference,
                    "grpcManagement": ts.ports.grpc_management,
                }
                for revision, ts in self.torchserves.items()
            },
        }


# TorchServe's Python workers listen on `<workdir>/tmp/.ts.sock.<9000+n>`; a Unix socket
# path longer than 107 bytes cannot be bound, and the worker dies at every restart until
# the start times out. Said up front instead.
_SUN_PATH_MAX = 107


def check_socket_path(folder: Path) -> None:
    """RehearsalError if TorchServe's worker sockets under `folder` would be too long."""
    socket = folder / "tmp" / ".ts.sock.9000"
    if len(str(socket).encode()) > _SUN_PATH_MAX:
        raise RehearsalError(
            f"the work folder {folder.parent} is too deep for TorchServe's worker sockets "
            f"({socket} is longer than {_SUN_PATH_MAX} bytes); set TMPDIR or --workdir to "
            "a shorter path"
        )


def _torchserve_failure(revision: Revision, server: TorchServe, exc: Exception) -> RehearsalError:
    tails = []
    for log in (
        server.workdir / "torchserve.out",
        server.log_dir / "ts_log.log",
        server.log_dir / "model_log.log",
    ):
        if log.exists():
            tails.append(f"--- {log}\n{log_tail(log)}")
    detail = "\n".join(tails) or "(no logs written)"
    return RehearsalError(
        f"TorchServe for {revision.path} (version {revision.version}) did not start: {exc}\n"
        f"{detail}"
    )


def _stop_all(servers: list[TorchServe]) -> None:
    # Each stop waits for its process group to exit (≈2.5 s for TorchServe): in parallel.
    threads = [threading.Thread(target=s.stop, name="stop-torchserve") for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def start_servers(
    pair: Pair,
    archives: dict[str, Path],
    *,
    workdir: Path,
    prometheus_bin: str,
    stack: ExitStack,
    note: Note,
) -> Servers:
    """TorchServes and Prometheus, all stopped when `stack` closes."""
    from torchrollout.archive.handlers import metrics_config

    metrics = metrics_config()
    torchserves: dict[str, TorchServe] = {}
    for number, side in enumerate((pair.stable, pair.canary)):
        folder = workdir / f"ts-{number}"  # short: TorchServe's worker sockets live in it
        check_socket_path(folder)
        torchserves[side.revision] = TorchServe(
            models={side.resource.model_name: archives[side.revision]},
            workdir=folder,
            metrics_config=metrics,
            workers_per_model=side.spec.runtime.workers_per_replica,
        )
    stack.callback(_stop_all, list(torchserves.values()))

    targets = [
        ScrapeTarget(
            f"127.0.0.1:{ts.ports.metrics}",
            {"namespace": pair.namespace, "revision": revision},
        )
        for revision, ts in torchserves.items()
    ]
    prometheus = PrometheusServer(targets, workdir=workdir / "prometheus", binary=prometheus_bin)
    stack.callback(prometheus.stop)
    # Prometheus first: its first scrape comes seconds after it starts, and that wait
    # overlaps the TorchServe starts instead of following them.
    note(f"starting Prometheus ({prometheus_bin})")
    try:
        with deferred():
            prometheus.start()
    except LocalServerError as exc:
        raise RehearsalError(str(exc)) from exc
    for side in (pair.stable, pair.canary):
        server = torchserves[side.revision]
        note(f"starting TorchServe for version {side.version} (revision {side.revision})")
        try:
            with deferred():
                server.start()
        except TorchServeError as exc:
            raise _torchserve_failure(side, server, exc) from exc
    try:
        prometheus.wait_for_targets()
    except LocalServerError as exc:
        raise RehearsalError(f"{exc}\n{log_tail(prometheus.log_path)}") from exc
    return Servers(torchserves, prometheus)


def warm_up(
    pair: Pair, servers: Servers, traffic: Traffic, *, requests: int = 8, timeout: float = 30.0
) -> None:
    """Send a few requests to each revision and wait until Prometheus has their series.

    The handlers' series appear on their first emission. Without this, the first analysis
    window would start from nothing: increase() cannot count a counter's first value, and
    the first, slow requests of a fresh worker would land in the canary's first tick.
    """
    model = pair.canary.resource.model_name
    labeled = [b for b in traffic.bodies if b'"label"' in b] or list(traffic.bodies)
    with httpx.Client(timeout=10.0) as client:
        for url in servers.urls().values():
            for body in (labeled * requests)[:requests]:
                with contextlib.suppress(httpx.HTTPError):
                    client.post(
                        f"{url}/predictions/{model}",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
    provider = PrometheusProvider(servers.prometheus.url)
    try:
        deadline = time.monotonic() + timeout
        pending = set(servers.torchserves)
        while pending:
            for revision in sorted(pending):
                selector = f'{{namespace="{pair.namespace}",revision="{revision}"}}'
                found = provider.query(
                    f"count(torchrollout_inference_latency_seconds_count{selector})"
                )
                if found.value:
                    pending.discard(revision)
            if pending and time.monotonic() > deadline:
                raise RehearsalError(
                    f"Prometheus has no handler metrics for revisions {sorted(pending)} after "
                    f"{timeout:g}s; see {servers.prometheus.log_path}"
                )
            if pending:
                time.sleep(0.2)  # a poll: Prometheus has no change notification
    finally:
        provider.close()
