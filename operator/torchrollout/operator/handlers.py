"""kopf registrations: thin handlers that hand every ModelDeployment to the Reconciler.

`kopf run -m torchrollout.operator.handlers` (or `torchrollout operator`) loads this
module. Create, update and resume events reconcile at once. Between events, one coroutine
per resource (a kopf daemon) sleeps until the time the last reconciliation asked to be
called back at (the next analysis tick, the fast watch, a canary becoming ready), or, when
nothing is due, for TORCHROLLOUT_RESYNC_SECONDS; it is woken early whenever a reconciliation
changes that time. One sweep every TORCHROLLOUT_TIMER_SECONDS looks, in memory, at every
resource for a manual request or a new generation that no event has reconciled yet, and
wakes its daemon (a daemon asleep costs nothing; one waking to look for itself did).
One lock per resource keeps it and the event handlers from deciding concurrently;
everything else lives in the resource's status, so a restarted operator carries on from
there.

Settings, from the environment (`torchrollout operator` sets them from its options):
TORCHROLLOUT_PROMETHEUS_URL (default http://prometheus-operated.monitoring:9090),
TORCHROLLOUT_METRICS_PORT (default 8000, 0 to disable), TORCHROLLOUT_RESYNC_SECONDS
(default 900), TORCHROLLOUT_TIMER_SECONDS (default 30), TORCHROLLOUT_ARCHIVE_STORE (the
archive store of resources that name none),
TORCHROLLOUT_EVALUATION_TOKEN (bearer token for https evaluation datasets),
TORCHROLLOUT_NETWORK_POLICY_METRICS_NAMESPACE (set: a NetworkPolicy per resource, metrics
admitted from this namespace), TORCHROLLOUT_DEFAULT_NOTIFICATIONS (one default notification
target a line), TORCHROLLOUT_WATCH_NAMESPACES (the `--namespace` values, one a line, whose
rights are checked at start-up), KUBECONFIG (outside a cluster).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server

from torchrollout.metrics import PrometheusProvider
from torchrollout.operator.access import missing_rights, refusal_message, watched_names
from torchrollout.operator.cluster import ClusterError
from torchrollout.operator.evaluation import EvaluationSender
from torchrollout.operator.notifier import Notifier, parse_default_target
from torchrollout.operator.reconcile import Reconciler
from torchrollout.operator.telemetry import OperatorMetrics
from torchrollout.spec.document import (
    ANNOTATION_PREFIX,
    GROUP,
    PLURAL,
    REQUEST_ANNOTATIONS,
    VERSION,
)

STORAGE_PREFIX = "operator.torchrollout.io"
TIMER_SECONDS = float(os.environ.get("TORCHROLLOUT_TIMER_SECONDS", "30"))
RESYNC_SECONDS = float(os.environ.get("TORCHROLLOUT_RESYNC_SECONDS", "900"))
RECONCILE_THREADS = 16


Key = tuple[str, str]


@dataclass
class Runtime:
    """What the handlers share: the reconciler, per-resource locks, call-back times (on the
    monotonic clock) and the events that wake each resource's daemon."""

    reconciler: Reconciler
    locks: dict[Key, threading.Lock] = field(default_factory=dict)
    next_run: dict[Key, float] = field(default_factory=dict)
    wakes: dict[Key, asyncio.Event] = field(default_factory=dict)
    bodies: dict[Key, kopf.Body] = field(default_factory=dict)  # kopf's live views, swept
    loop: asyncio.AbstractEventLoop | None = None
    guard: threading.Lock = field(default_factory=threading.Lock)
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            RECONCILE_THREADS, thread_name_prefix="reconcile"
        )
    )

    def lock(self, key: Key) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(key, threading.Lock())

    def schedule(self, key: Key, seconds: float) -> None:
        """Look at `key` again in `seconds`; its daemon wakes to sleep for the new time."""
        self.next_run[key] = time.monotonic() + seconds
        event, loop = self.wakes.get(key), self.loop
        if event is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def forget(self, key: Key) -> None:
        self.next_run.pop(key, None)
        self.wakes.pop(key, None)
        self.bodies.pop(key, None)
        with self.guard:
            self.locks.pop(key, None)


def _api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    # One kept-alive connection per thread that may reconcile (kopf's handler threads and
    # the daemons' executor), the notifier's and the evaluation sender's: with fewer,
    # connections are dropped and made again, a TLS handshake each.
    configuration.connection_pool_maxsize = 2 * RECONCILE_THREADS + 8
    return client.ApiClient(configuration)


@kopf.on.startup()
def configure(
    *,
    settings: kopf.OperatorSettings,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    from torchrollout.operator.kube import KubernetesCluster

    # Progress and the last-handled spec live in our own annotations; status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=STORAGE_PREFIX)
    settings.persistence.finalizer = f"{STORAGE_PREFIX}/finalizer"
    # kopf posts an Event only for an error it logs; the reconciler posts its own.
    settings.posting.level = logging.ERROR
    # Watches end server-side after 5 minutes and are re-established; a silent connection
    # is dropped after 6, so a lost watch never goes unnoticed for long.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 360
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.execution.max_workers = RECONCILE_THREADS
    settings.peering.name = "torchrollout"
    settings.peering.mandatory = False

    prometheus = os.environ.get(
        "TORCHROLLOUT_PROMETHEUS_URL", "http://prometheus-operated.monitoring:9090"
    )
    metrics = OperatorMetrics()
    port = int(os.environ.get("TORCHROLLOUT_METRICS_PORT", "8000"))
    if port:
        start_http_server(port, registry=metrics.registry)
    api = _api_client()
    cluster = KubernetesCluster(api)
    evaluation = EvaluationSender(
        on_error=lambda message: logger.warning("%s", message),
        token_for=lambda _md: os.environ.get("TORCHROLLOUT_EVALUATION_TOKEN") or None,
    )
    reconciler = Reconciler(
        cluster,
        PrometheusProvider(prometheus),
        metrics=metrics,
        evaluation=evaluation,
        notifier=Notifier(
            cluster,
            on_error=lambda message: logger.warning("%s", message),
            defaults=[
                parse_default_target(line)
                for line in os.environ.get("TORCHROLLOUT_DEFAULT_NOTIFICATIONS", "").splitlines()
                if line.strip()
            ],
        ),
        archive_store=os.environ.get("TORCHROLLOUT_ARCHIVE_STORE") or None,
        prometheus_url=prometheus,
        resync_seconds=RESYNC_SECONDS,
        network_policy_metrics_namespace=(
            os.environ.get("TORCHROLLOUT_NETWORK_POLICY_METRICS_NAMESPACE") or None
        ),
    )
    memo["runtime"] = Runtime(reconciler)
    _check_rights(api, logger)
    logger.info("torchrollout: Prometheus at %s, metrics on :%s", prometheus, port or "(off)")


@kopf.on.startup()
async def start_sweep(memo: Any, **_: Any) -> None:
    """The sweep, on kopf's loop for as long as the operator runs."""
    memo["sweep"] = asyncio.get_running_loop().create_task(_sweep(memo["runtime"]))


@kopf.on.cleanup()
async def stop_sweep(memo: Any, **_: Any) -> None:
    sweep = memo.get("sweep")
    if sweep is not None:
        sweep.cancel()


async def _sweep(runtime: Runtime) -> None:
    """Every TIMER_SECONDS, wake the daemon of each resource with a request or a new
    generation that no event has reconciled yet (a safety net for a missed event)."""
    while True:
        await asyncio.sleep(TIMER_SECONDS)
        now = time.monotonic()
        for key, body in list(runtime.bodies.items()):
            if runtime.next_run.get(key, 0.0) > now and _waiting(body):
                runtime.schedule(key, 0)


def _check_rights(api: Any, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Say once, at start-up, in which watched namespaces the operator may not work."""
    from torchrollout.operator.kube import allowed

    namespaces = watched_names(os.environ.get("TORCHROLLOUT_WATCH_NAMESPACES", "").splitlines())
    if not namespaces:
        return
    refused = missing_rights(lambda namespace, right: allowed(api, namespace, right), namespaces)
    for namespace, rights in refused.items():
        logger.error("%s", refusal_message(namespace, rights))


def _reconcile(memo: Any, namespace: str | None, name: str) -> None:
    runtime: Runtime = memo["runtime"]
    key = (namespace or "default", name)
    with runtime.lock(key):
        try:
            outcome = runtime.reconciler.reconcile(*key)
        except ClusterError as exc:
            runtime.reconciler.metrics.reconcile_errors.labels("api").inc()
            runtime.schedule(key, 5)
            if exc.transient:
                raise kopf.TemporaryError(str(exc), delay=5) from exc
            raise kopf.PermanentError(str(exc)) from exc
        after = outcome.requeue_after
        runtime.schedule(key, TIMER_SECONDS if after is None else after)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def changed(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    _reconcile(memo, namespace, name)


def _waiting(body: kopf.Body) -> bool:
    """A manual request or a new generation the status has not caught up with."""
    status = body.get("status")
    status = status if isinstance(status, Mapping) else {}
    handled = status.get("handledRequests")
    handled = handled if isinstance(handled, Mapping) else {}
    annotations = body.metadata.annotations
    for request in REQUEST_ANNOTATIONS:
        value = annotations.get(ANNOTATION_PREFIX + request)
        if value is not None and handled.get(request) != value:
            return True
    return status.get("observedGeneration") != body.metadata.get("generation")


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=1.0)
async def look_again(
    *,
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    """Reconcile when the last reconciliation asked to be called back, or when a request or
    a new generation waits; sleep otherwise (woken early when the call-back time moves)."""
    runtime: Runtime = memo["runtime"]
    key = (namespace or "default", name)
    loop = runtime.loop = asyncio.get_running_loop()
    wake = runtime.wakes.setdefault(key, asyncio.Event())
    runtime.bodies[key] = body
    runtime.next_run.setdefault(key, time.monotonic() + TIMER_SECONDS)
    try:
        while not stopped:
            wake.clear()  # before reading the time, so a later schedule() still wakes it
            due, now = runtime.next_run.get(key, 0.0), time.monotonic()
            if now < due:
                try:
                    await asyncio.wait_for(wake.wait(), timeout=due - now)
                    continue  # the call-back time moved (or the sweep woke it): look again
                except TimeoutError:
                    if time.monotonic() < runtime.next_run.get(key, 0.0):
                        continue
            try:
                await loop.run_in_executor(runtime.executor, _reconcile, memo, namespace, name)
            except (kopf.TemporaryError, kopf.PermanentError) as exc:
                logger.error("%s", exc)  # _reconcile has set the next look, 5 s on
            except Exception:
                logger.exception("reconciling %s/%s failed; looking again in 5s", *key)
                runtime.schedule(key, 5)
    finally:
        runtime.wakes.pop(key, None)
        runtime.bodies.pop(key, None)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def deleted(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Children go with their ownerReferences; forget the resource's call-backs."""
    runtime: Runtime = memo["runtime"]
    runtime.forget((namespace or "default", name))


@kopf.on.probe(id="reconciler")
def reconciler_alive(*, memo: Any, **_: Any) -> str:
    return "ok" if "runtime" in memo else "starting"
