"""Watch streams: newline-delimited JSON events over a chunked HTTP response.

Semantics follow the API server's watch cache: without a resourceVersion (or with "0") the
stream starts with synthetic ADDED events for what exists; with one, it replays the history
after it, or answers an ERROR event with a 410 Expired Status once that history is compacted.
Label/field selectors turn transitions into ADDED/DELETED as the real server does.
``allowWatchBookmarks`` yields periodic BOOKMARKs; ``sendInitialEvents`` ends the initial
burst with the ``k8s.io/initial-events-end`` bookmark. ``timeoutSeconds`` ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .cluster import Cluster
from .errors import bad_request, status_body
from .objects import served
from .resources import ResourceInfo
from .store import WatchEvent

Match = Callable[[dict[str, Any]], bool]
Render = Callable[[dict[str, Any]], dict[str, Any]]


def translate(event: WatchEvent, match: Match) -> str | None:
    """The event type this watcher sees, given its selectors (None: not seen at all)."""
    now = match(event.obj)
    before = event.old is not None and match(event.old)
    if event.type == "ADDED":
        return "ADDED" if now else None
    if event.type == "DELETED":
        return "DELETED" if before or now else None
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if before else None


async def serve_watch(
    request: web.Request,
    *,
    cluster: Cluster,
    info: ResourceInfo,
    namespace: str | None,
    match: Match,
    render: Render,
) -> web.StreamResponse:
    query = request.query
    store = cluster.store
    key = info.storage_key
    rv = query.get("resourceVersion", "")
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
    send_initial = query.get("sendInitialEvents") in ("true", "1")
    timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
    drop_after = cluster.faults.watch_drop_delay(request.path)

    def visible(obj: dict[str, Any]) -> bool:
        in_namespace = namespace is None or obj["metadata"].get("namespace") == namespace
        return in_namespace and match(obj)

    # Snapshot and subscribe with no await in between: no event can fall into a gap.
    initial: list[dict[str, Any]] = []
    backlog: list[tuple[str, WatchEvent]] = []
    expired = False
    if send_initial or rv in ("", "0"):
        initial = [obj for obj in store.items(key, namespace) if match(obj)]
    else:
        try:
            since = int(rv)
        except ValueError:
            raise bad_request(f'invalid resource version "{rv}"') from None
        if since < store.compacted_rv:
            expired = True
        else:
            for event in store.events_since(key, since):
                if namespace is None or event.namespace == namespace:
                    seen = translate(event, match)
                    if seen:
                        backlog.append((seen, event))
    snapshot_rv = store.rv
    subscription = store.subscribe(key)

    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        if expired:
            gone = status_body(
                410, "Expired", f"too old resource version: {rv} ({store.compacted_rv + 1})"
            )
            await _send(response, "ERROR", gone)
            return response
        for obj in initial:
            await _send(response, "ADDED", render(obj))
        if send_initial and bookmarks:
            await _send(response, "BOOKMARK", _bookmark(info, snapshot_rv, initial_end=True))
        for seen, event in backlog:
            await _send(response, seen, render(event.obj))
        await _stream(
            request,
            response=response,
            cluster=cluster,
            info=info,
            queue=subscription.queue,
            visible=visible,
            render=render,
            timeout=timeout,
            bookmarks=bookmarks,
            drop_after=drop_after,
        )
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client went away or the server stops: nothing to tell anyone
    finally:
        store.unsubscribe(subscription)
    return response


async def _stream(
    request: web.Request,
    *,
    response: web.StreamResponse,
    cluster: Cluster,
    info: ResourceInfo,
    queue: asyncio.Queue[WatchEvent | None],
    visible: Match,
    render: Render,
    timeout: float | None,
    bookmarks: bool,
    drop_after: float | None,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    drop_at = None if drop_after is None else loop.time() + drop_after
    next_bookmark = loop.time() + cluster.config.bookmark_interval
    while True:
        now = loop.time()
        wake_at = min(
            t
            for t in (deadline, drop_at, next_bookmark if bookmarks else None, now + 3600)
            if t is not None
        )
        try:
            event = await asyncio.wait_for(queue.get(), max(wake_at - now, 0))
        except TimeoutError:
            now = loop.time()
            if drop_at is not None and now >= drop_at:
                _abort(request)
                return
            if deadline is not None and now >= deadline:
                return
            if bookmarks and now >= next_bookmark:
                # The queue is empty, so every event up to store.rv has been delivered.
                await _send(response, "BOOKMARK", _bookmark(info, cluster.store.rv))
                next_bookmark = now + cluster.config.bookmark_interval
            continue
        if event is None:  # dropped by a fault or the server stopping
            _abort(request)
            return
        seen = translate(event, visible)
        if seen:
            await _send(response, seen, render(event.obj))


def _abort(request: web.Request) -> None:
    """Cut the connection the way a crashing API server or a load balancer would."""
    transport = request.transport
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()


def _bookmark(info: ResourceInfo, rv: int, *, initial_end: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": info.kind, "apiVersion": info.api_version, "metadata": metadata}


async def _send(response: web.StreamResponse, kind: str, obj: dict[str, Any]) -> None:
    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")


def render_plain(info: ResourceInfo) -> Render:
    return lambda obj: served(obj, info)
