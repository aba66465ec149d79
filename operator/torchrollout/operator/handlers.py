"""kopf registrations: thin handlers that hand every ModelDeployment to the Reconciler.

`kopf run -m torchrollout.operator.handlers` (or `torchrollout operator`) loads this
module. Create, update and resume events reconcile at once; a short timer reconciles
when the last reconciliation asked to be called back (the next analysis tick, a canary
becoming ready) or when a manual request or a new generation is waiting. One lock per
resource keeps the timer and the event handlers from deciding concurrently; everything
else lives in the resource's status, so a restarted operator carries on from there.

Settings, from the environment (`torchrollout operator` sets them from its options):
TORCHROLLOUT_PROMETHEUS_URL (default http://prometheus-operated.monitoring:9090),
TORCHROLLOUT_METRICS_PORT (default 8000, 0 to disable), TORCHROLLOUT_TIMER_SECONDS
(default 2), TORCHROLLOUT_ARCHIVE_STORE (the archive store of resources that name none),
TORCHROLLOUT_EVALUATION_TOKEN (bearer token for https evaluation datasets),
TORCHROLLOUT_NETWORK_POLICY_METRICS_NAMESPACE (set: a NetworkPolicy per resource, metrics
admitted from this namespace), TORCHROLLOUT_DEFAULT_NOTIFICATIONS (one default notification
target a line), TORCHROLLOUT_WATCH_NAMESPACES (the `--namespace` values, one a line, whose
rights are checked at start-up), KUBECONFIG (outside a cluster).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server

from torchrollout.engine import Event
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
TIMER_SECONDS = float(os.environ.get("TORCHROLLOUT_TIMER_SECONDS", "2"))


@dataclass
class Runtime:
    """What the handlers share: the reconciler, per-resource locks and call-back times."""

    reconciler: Reconciler
    locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    next_run: dict[tuple[str, str], float] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, key: tuple[str, str]) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(key, threading.Lock())


def _post_event(body: dict[str, Any], event: Event) -> None:
    kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])  # type: ignore[arg-type]


def _api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


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
    # Events only where the reconciler posts them, not for every log line.
    settings.posting.level = logging.ERROR
    # Watches end server-side after 5 minutes and are re-established; a silent connection
    # is dropped after 6, so a lost watch never goes unnoticed for long.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 360
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 16
    settings.peering.name = "torchrollout"
    settings.peering.mandatory = False

    prometheus = os.environ.get(
        "TORCHROLLOUT_PROMETHEUS_URL", "http://prometheus-operated.monitoring:9090"
    )
    metrics = OperatorMetrics()
    port = int(os.environ.get("TORCHROLLOUT_METRICS_PORT", "8000"))
    if port:
        start_http_server(port, registry=metrics.registry)
    cluster = KubernetesCluster(_api_client())
    evaluation = EvaluationSender(
        on_error=lambda message: logger.warning("%s", message),
        token_for=lambda _md: os.environ.get("TORCHROLLOUT_EVALUATION_TOKEN") or None,
    )
    reconciler = Reconciler(
        cluster,
        PrometheusProvider(prometheus),
        post_event=_post_event,
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
        network_policy_metrics_namespace=(
            os.environ.get("TORCHROLLOUT_NETWORK_POLICY_METRICS_NAMESPACE") or None
        ),
    )
    memo["runtime"] = Runtime(reconciler)
    _check_rights(logger)
    logger.info("torchrollout: Prometheus at %s, metrics on :%s", prometheus, port or "(off)")


def _check_rights(logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Say once, at start-up, in which watched namespaces the operator may not work."""
    from torchrollout.operator.kube import allowed

    namespaces = watched_names(os.environ.get("TORCHROLLOUT_WATCH_NAMESPACES", "").splitlines())
    if not namespaces:
        return
    api = _api_client()
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
            runtime.next_run[key] = time.monotonic() + 5
            if exc.transient:
                raise kopf.TemporaryError(str(exc), delay=5) from exc
            raise kopf.PermanentError(str(exc)) from exc
        if outcome.requeue_after is None:
            runtime.next_run.pop(key, None)
        else:
            runtime.next_run[key] = time.monotonic() + outcome.requeue_after


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def changed(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    _reconcile(memo, namespace, name)


def _waiting(body: kopf.Body) -> bool:
    """A manual request or a new generation the status has not caught up with."""
    status = body.get("status") or {}
    handled = status.get("handledRequests") or {}
    annotations = body.metadata.annotations
    for request in REQUEST_ANNOTATIONS:
        value = annotations.get(ANNOTATION_PREFIX + request)
        if value is not None and handled.get(request) != value:
            return True
    return status.get("observedGeneration") != body.metadata.get("generation")


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_SECONDS)
def tick(*, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    due = runtime.next_run.get((namespace or "default", name), 0.0)
    if time.monotonic() >= due or _waiting(body):
        _reconcile(memo, namespace, name)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def deleted(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Children go with their ownerReferences; forget the resource's call-backs."""
    runtime: Runtime = memo["runtime"]
    runtime.next_run.pop((namespace or "default", name), None)


@kopf.on.probe(id="reconciler")
def reconciler_alive(*, memo: Any, **_: Any) -> str:
    return "ok" if "runtime" in memo else "starting"
