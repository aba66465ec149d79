"""Events that survive a crash: written into the status first, then posted once each.

The reconciler adds every Event it decides to `status.pendingEvents`, under a name made
from the resource's uid and the Event itself, and writes the status. Only then does it
create the Events under those names and empty the list. An operator killed between the
write and the posting finds them on its next look and posts them; one killed after posting
and before the list is emptied gets AlreadyExists for each, so no Event is posted twice.

Notifications are queued for the Events created by that call, so a restart repeats none;
one being delivered when the operator dies is lost (it lives in the notifier's memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from torchrollout.engine import Event
from torchrollout.operator.cluster import ClusterApi, ClusterError
from torchrollout.spec.document import API_VERSION, KIND
from torchrollout.spec.status import PENDING_EVENTS_LIMIT, ModelDeploymentStatus, PendingEvent

EventSink = Callable[[dict[str, Any]], bool]
"""Creates one Event object: True when created now, False when it already exists."""

COMPONENT = "torchrollout-operator"
MESSAGE_LIMIT = 1024  # what an Event's message may reasonably hold; longer ones are cut
NAME_PREFIX_LIMIT = 200  # leaves room for ".<digest>" within a 253-character name


def event_name(meta: dict[str, Any], event: Event, at: datetime, index: int) -> str:
    """The same for the same Event decided at the same moment, unique otherwise."""
    key = "\n".join(
        (meta.get("uid") or "", event.reason, event.message, at.isoformat(), str(index))
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{meta['name'][:NAME_PREFIX_LIMIT]}.{digest}"


def with_pending(
    status: ModelDeploymentStatus, meta: dict[str, Any], events: list[Event], at: datetime
) -> ModelDeploymentStatus:
    """`status` with `events` added to the Events still to post."""
    if not events:
        return status
    added = [
        PendingEvent(
            name=event_name(meta, event, at, index),
            type=event.type,
            reason=event.reason,
            message=event.message[:MESSAGE_LIMIT],
            at=at,
        )
        for index, event in enumerate(events)
    ]
    kept = [*status.pending_events, *added][-PENDING_EVENTS_LIMIT:]
    return status.model_copy(update={"pending_events": kept})


def event_object(meta: dict[str, Any], pending: PendingEvent) -> dict[str, Any]:
    """The core/v1 Event for `pending`, about the resource `meta` describes."""
    at = pending.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": pending.name, "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": pending.type,
        "reason": pending.reason,
        "message": pending.message,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
    }


def creator(cluster: ClusterApi) -> EventSink:
    """Creates Events through `cluster`, taking AlreadyExists as posted before."""

    def create(obj: dict[str, Any]) -> bool:
        try:
            cluster.create(obj)
        except ClusterError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    return create


def post_pending(
    post: EventSink, meta: dict[str, Any], pending: list[PendingEvent]
) -> tuple[list[Event], list[PendingEvent], list[str]]:
    """Posts `pending` in order. Returns the Events created now, those to try again (the API
    server failed for a while), and why each Event that was not posted failed."""
    created: list[Event] = []
    left: list[PendingEvent] = []
    problems: list[str] = []
    for one in pending:
        try:
            if post(event_object(meta, one)):
                created.append(Event(one.type, one.reason, one.message))
        except ClusterError as exc:
            if exc.transient:
                left.append(one)
            problems.append(f"Event {one.name} ({one.reason}) not posted: {exc}")
    return created, left, problems
