"""Leader election on a `coordination.k8s.io` Lease, so that several replicas run one operator.

`torchrollout operator --leader-election-lease NAME` calls `lead()` before kopf starts: the
replica blocks until it holds the Lease, then renews it from a thread while kopf runs. A
replica that cannot renew within the renew deadline exits at once (status code 1), before
the Lease can expire and a standby take over, so two replicas never reconcile together.
A replica that stops cleanly releases the Lease and a standby takes over without waiting.

Why not kopf's peering: it pauses lower-priority operators but lets equal-priority ones run
side by side (with a warning), and a newly started higher-priority one starts processing
before the old one pauses; it is a freeze switch, not mutual exclusion.

Expiry is judged on this replica's own clock, as client-go does: a Lease is taken over only
after it has been seen unchanged for its whole duration, whatever the holder's clock says.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger("torchrollout.leadership")


@dataclass(frozen=True)
class ElectionSettings:
    """Where the Lease lives and how long it lasts (client-go's defaults, scaled down)."""

    name: str
    namespace: str
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class LeaseElector:
    """Acquires, renews and releases one Lease with optimistic concurrency (resourceVersion)."""

    api: client.CoordinationV1Api
    settings: ElectionSettings
    clock: Callable[[], float] = time.monotonic
    # The last Lease version seen held by someone else, and when this replica first saw it.
    _observed: tuple[str, float] | None = None

    def try_acquire(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        s = self.settings
        try:
            lease: Any = self.api.read_namespaced_lease(s.name, s.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._write(None)
        spec = lease.spec
        holder = spec.holder_identity or ""
        if holder and holder != s.identity:
            version = lease.metadata.resource_version
            if self._observed is None or self._observed[0] != version:
                self._observed = (version, self.clock())
                return False
            duration = spec.lease_duration_seconds or s.lease_seconds
            if self.clock() - self._observed[1] < duration:
                return False
            logger.info("Lease %s of %s expired: taking over", s.name, holder)
        return self._write(lease)

    def _write(self, lease: Any) -> bool:
        s = self.settings
        now = _now()
        held = lease is not None and lease.spec.holder_identity == s.identity
        spec = client.V1LeaseSpec(
            holder_identity=s.identity,
            lease_duration_seconds=int(s.lease_seconds),
            acquire_time=lease.spec.acquire_time if held else now,
            renew_time=now,
            lease_transitions=(lease.spec.lease_transitions or 0) + (0 if held else 1)
            if lease is not None
            else 0,
        )
        try:
            if lease is None:
                body = client.V1Lease(
                    metadata=client.V1ObjectMeta(name=s.name, namespace=s.namespace), spec=spec
                )
                self.api.create_namespaced_lease(s.namespace, body)
            else:
                lease.spec = spec
                self.api.replace_namespaced_lease(s.name, s.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first: look again next time
                return False
            raise
        return True

    def release(self) -> None:
        """Give the Lease up, so that a standby takes over at its next look."""
        s = self.settings
        with contextlib.suppress(ApiException):
            lease: Any = self.api.read_namespaced_lease(s.name, s.namespace)
            if lease.spec.holder_identity == s.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.api.replace_namespaced_lease(s.name, s.namespace, lease)
                logger.info("Released lease %s", s.name)


def _renew_forever(elector: LeaseElector, on_lost: Callable[[str], None]) -> None:
    s = elector.settings
    last_renewed = elector.clock()
    while True:
        time.sleep(s.retry_seconds)
        try:
            if elector.try_acquire():
                last_renewed = elector.clock()
                continue
            reason = "another replica holds it"
        except Exception as exc:  # any failure to renew counts the same
            reason = f"renewal failed: {exc}"
            if elector.clock() - last_renewed < s.renew_deadline_seconds:
                logger.warning("Lease %s: %s; retrying", s.name, reason)
                continue
        on_lost(reason)
        return


def _lost(reason: str) -> None:
    logger.error("Lost leadership (%s): exiting so that a standby takes over", reason)
    logging.shutdown()
    os._exit(1)  # kopf must not act one more step without the Lease


@contextlib.contextmanager
def _standby_health(liveness: str | None) -> Iterator[None]:
    """While waiting, answer the liveness endpoint: a standby is healthy, not stuck."""
    if not liveness:
        yield
        return
    url = urlsplit(liveness)

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"standby")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def lead(
    api_client: client.ApiClient,
    settings: ElectionSettings,
    *,
    liveness: str | None = None,
    on_lost: Callable[[str], None] = _lost,
) -> LeaseElector:
    """Block until this replica holds the Lease, then keep renewing it in a daemon thread."""
    elector = LeaseElector(client.CoordinationV1Api(api_client), settings)
    logger.info(
        "Waiting to lead: lease %s/%s as %s", settings.namespace, settings.name, settings.identity
    )
    with _standby_health(liveness):
        while not elector.try_acquire():
            time.sleep(settings.retry_seconds)
    logger.info(
        "Became the leader: lease %s/%s as %s", settings.namespace, settings.name, settings.identity
    )
    threading.Thread(
        target=_renew_forever, args=(elector, on_lost), name="lease renewal", daemon=True
    ).start()
    return elector


def api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; outside: KUBECONFIG (set before kubernetes is imported)."""
    from kubernetes import config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()
