"""Delivery of `spec.notifications`: a bounded queue and one background worker thread.

The reconciler only calls `enqueue` (it never waits on a webhook): each announced Event
(`torchrollout.operator.notify`) becomes one job per matching target. The worker reads the
target's URL from its Secret (through the ClusterApi, in the resource's namespace) and POSTs
the payload with a timeout, trying `tries` times with a doubling backoff on a timeout, a
connection error, HTTP 429 or 5xx; other answers (4xx) are not retried. A full queue drops
the job with a log line; nothing is retried forever, and the rollout never waits.

Operator-wide default targets (`--default-notification`) serve every resource without
`spec.notifications` of its own; their Secrets live in the namespace the flag names (the
operator's), not the resource's.

Failures are data, not exceptions: `problem(md)` says which targets failed last and why
(None once each has delivered since), for the reconciler to show as the NotificationsReady
condition and a Warning Event; `on_error` gets the same message, for the log.
"""

from __future__ import annotations

import base64
import binascii
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

from torchrollout.engine import Event
from torchrollout.operator.cluster import ClusterApi, ClusterError
from torchrollout.operator.notify import Notice, notices, payload
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.notifications import NOTIFICATION_EVENTS, NotificationTarget
from torchrollout.spec.status import Condition, ModelDeploymentStatus

log = logging.getLogger(__name__)

Reason = Literal["SecretNotFound", "DeliveryFailed"]


@dataclass(frozen=True)
class NotificationProblem:
    """Why the last message to some of a resource's targets was not delivered."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class DefaultTarget:
    """An operator-wide target, for resources without `spec.notifications`."""

    target: NotificationTarget
    namespace: str
    """Where its Secret lives (the operator's namespace)."""


DEFAULT_TARGET_FORMAT = "TYPE:NAMESPACE/SECRET/KEY[:EVENT,EVENT...]"
_DEFAULT_TARGET = re.compile(
    r"(?P<type>[a-z]+):(?P<namespace>[^/:]+)/(?P<name>[^/:]+)/(?P<key>[^/:]+)(?::(?P<events>.+))?"
)


def parse_default_target(text: str) -> DefaultTarget:
    """`slack:torchrollout-system/hooks/url[:promoted,rolledBack]`; ValueError says what to fix."""
    match = _DEFAULT_TARGET.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r}: use {DEFAULT_TARGET_FORMAT}")
    events = match["events"].split(",") if match["events"] else list(NOTIFICATION_EVENTS)
    unknown = [e for e in events if e not in NOTIFICATION_EVENTS]
    if unknown:
        raise ValueError(
            f"{text!r}: unknown event {unknown[0]!r}; events are {', '.join(NOTIFICATION_EVENTS)}"
        )
    try:
        target = NotificationTarget.model_validate(
            {
                "type": match["type"],
                "secretRef": {"name": match["name"], "key": match["key"]},
                "events": events,
            }
        )
    except ValueError as exc:
        raise ValueError(f"{text!r}: TYPE is webhook, slack or teams") from exc
    return DefaultTarget(target, match["namespace"])


@dataclass(frozen=True)
class Job:
    """One notice for one target."""

    key: tuple[str, str]
    label: str
    target: NotificationTarget
    notice: Notice
    secret_namespace: str


def target_label(index: int, target: NotificationTarget, *, default: str = "") -> str:
    """How messages name a target: its place in the spec (or the operator's defaults), its
    kind and its Secret."""
    ref = target.secret_ref
    if default:
        where = f"Secret {default}/{ref.name} key {ref.key}"
        return f"default notification {index} ({target.type}, {where})"
    return f"notifications[{index}] ({target.type}, Secret {ref.name} key {ref.key})"


@dataclass(frozen=True)
class Destination:
    """A target as a resource uses it: its label and where its Secret is read."""

    label: str
    target: NotificationTarget
    secret_namespace: str


class SecretUnavailable(Exception):
    """The target's Secret or key cannot be read; the message says which."""


def _key(md: ModelDeployment) -> tuple[str, str]:
    return (md.metadata.namespace, md.metadata.name)


class Notifier:
    """Announces rollout milestones without holding up a reconciliation."""

    def __init__(
        self,
        cluster: ClusterApi,
        client: httpx.Client | None = None,
        *,
        tries: int = 3,
        backoff: float = 0.5,
        timeout: float = 5.0,
        queue_size: int = 256,
        on_error: Callable[[str], None] = lambda message: log.warning("%s", message),
        sleep: Callable[[float], None] = time.sleep,
        start: bool = True,
        defaults: Sequence[DefaultTarget] = (),
    ) -> None:
        self.cluster = cluster
        self.defaults = tuple(defaults)
        self.client = client or httpx.Client()
        self.tries = max(1, tries)
        self.backoff = backoff
        self.timeout = timeout
        self.on_error = on_error
        self.sleep = sleep
        self.dropped = 0
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._problems: dict[tuple[str, str], dict[str, NotificationProblem]] = {}
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="notifications", daemon=True)
            self._worker.start()

    def destinations(self, md: ModelDeployment) -> list[Destination]:
        """The resource's own targets, or the operator's defaults when it names none."""
        namespace = md.metadata.namespace
        if md.spec.notifications:
            return [
                Destination(target_label(i, t), t, namespace)
                for i, t in enumerate(md.spec.notifications)
            ]
        return [
            Destination(target_label(i, d.target, default=d.namespace), d.target, d.namespace)
            for i, d in enumerate(self.defaults)
        ]

    def enqueue(
        self, md: ModelDeployment, status: ModelDeploymentStatus, events: list[Event]
    ) -> int:
        """Queue a job per announced Event and matching target; returns at once, with how
        many were queued (a full queue drops the rest, with a log line)."""
        queued = 0
        destinations = self.destinations(md)
        for notice in notices(md, status, events):
            for destination in destinations:
                if notice.event not in destination.target.events:
                    continue
                job = Job(
                    _key(md),
                    destination.label,
                    destination.target,
                    notice,
                    destination.secret_namespace,
                )
                try:
                    self._queue.put_nowait(job)
                except queue.Full:
                    self.dropped += 1
                    log.warning(
                        "notification queue full: dropped %s of %s to %s",
                        notice.event,
                        notice.model,
                        job.label,
                    )
                    continue
                queued += 1
        return queued

    def problem(self, md: ModelDeployment) -> NotificationProblem | None:
        """The resource's failed targets since their last delivery; None when there are none."""
        with self._lock:
            failed = dict(self._problems.get(_key(md), {}))
        # Targets no longer in the spec are not reported.
        labels = {d.label for d in self.destinations(md)}
        failed = {label: p for label, p in failed.items() if label in labels}
        if not failed:
            return None
        reason: Reason = (
            "SecretNotFound"
            if all(p.reason == "SecretNotFound" for p in failed.values())
            else "DeliveryFailed"
        )
        return NotificationProblem(reason, "; ".join(p.message for p in failed.values()))

    def forget(self, md: ModelDeployment) -> None:
        with self._lock:
            self._problems.pop(_key(md), None)

    def deliver(self, job: Job) -> NotificationProblem | None:
        """Send one job now (the worker's step); records and returns its problem."""
        problem = self._send(job)
        with self._lock:
            failed = self._problems.setdefault(job.key, {})
            if problem is None:
                failed.pop(job.label, None)
            else:
                failed[job.label] = problem
        if problem is not None:
            self.on_error(f"{job.notice.model}: {problem.message}")
        return problem

    def _send(self, job: Job) -> NotificationProblem | None:
        what = f"{job.notice.event} notification to {job.label}"
        try:
            url = self._url(job)
        except SecretUnavailable as exc:
            return NotificationProblem("SecretNotFound", f"{what} not sent: {exc}")
        body = payload(job.target.type, job.notice)
        error, attempt = "", 0
        for attempt in range(self.tries):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.client.post(url, json=body, timeout=self.timeout)
            except httpx.TimeoutException:
                error = f"timed out after {self.timeout:g}s"
                continue
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return None
            text = " ".join(response.text.split())[:200]
            error = f"HTTP {response.status_code} {text}".strip()
            if response.status_code != 429 and response.status_code < 500:
                break
        # The URL is a credential: the message names the Secret, never the URL.
        tries = f"{attempt + 1} {'try' if attempt == 0 else 'tries'}"
        return NotificationProblem("DeliveryFailed", f"{what} failed after {tries}: {error}")

    def _url(self, job: Job) -> str:
        ref = job.target.secret_ref
        namespace = job.secret_namespace
        try:
            secret = self.cluster.get("v1", "Secret", namespace, ref.name)
        except ClusterError as exc:
            raise SecretUnavailable(f"Secret {namespace}/{ref.name} cannot be read: {exc}") from exc
        if secret is None:
            raise SecretUnavailable(f"Secret {namespace}/{ref.name} does not exist")
        encoded = (secret.get("data") or {}).get(ref.key)
        if encoded is None:
            raise SecretUnavailable(f"Secret {namespace}/{ref.name} has no key {ref.key}")
        try:
            url = base64.b64decode(encoded).decode().strip()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise SecretUnavailable(
                f"Secret {namespace}/{ref.name} key {ref.key} is not a URL"
            ) from exc
        if not url.startswith(("https://", "http://")):
            raise SecretUnavailable(
                f"Secret {namespace}/{ref.name} key {ref.key} is not an http(s) URL"
            )
        return url

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self.deliver(job)
            except Exception:  # a bug in one job must not end the worker
                log.exception("notification worker")
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every queued job is done (tests)."""
        self._queue.join()

    def close(self) -> None:
        """Stop after the queued jobs (each has a bounded time), then close the client."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None
        self.client.close()


def notifications_condition(problem: NotificationProblem | None) -> Condition:
    """NotificationsReady: the last message to every target went out, or which did not."""
    if problem is None:
        return Condition(type="NotificationsReady", status="True", reason="Delivered")
    return Condition(
        type="NotificationsReady", status="False", reason=problem.reason, message=problem.message
    )
