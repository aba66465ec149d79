"""Replayed traffic: the labeled request file, the weighted router and the load generator.

`read_traffic` turns a JSON-lines file (UTF-8, at most MAX_TRAFFIC_BYTES) into request
bodies. Blank lines and lines starting with `#` are skipped quietly; a line that is not a
JSON object is skipped and counted, so a long capture with a few broken lines still
rehearses (the CLI warns with the count and the first bad line). A line the model rejects
(wrong shape, bad label) is sent anyway and answered 4xx: that is the model's judgement,
not the file's.

`LoadGenerator` sends the bodies round-robin at a steady rate from a few threads, one
`httpx.Client` each (an asyncio client saturates a core before TorchServe does here).
Request k is due at `start + k / rate`; a thread that falls behind sends at once rather
than skipping, so the rate holds on average. Each request goes to the canary with
probability weight/100, read from the `Router` at send time, and every answer is counted
per revision and status class. Transport failures are counted too, never raised.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from torchrollout.rehearsal.resources import RehearsalError
from torchrollout.spec.document import DocumentError, read_text

STATUS_CLASSES = ("2xx", "4xx", "5xx", "failed")
MAX_TRAFFIC_BYTES = 32 * 1024 * 1024  # request bodies are held in memory


@dataclass(frozen=True)
class Traffic:
    """Request bodies from a traffic file, and what was skipped."""

    bodies: tuple[bytes, ...]
    labeled: int
    skipped: int
    first_problem: str = ""


def read_traffic(path: Path) -> Traffic:
    """The request bodies in `path`; RehearsalError if it has none."""
    try:
        lines = read_text(path, limit=MAX_TRAFFIC_BYTES).splitlines()
    except DocumentError as exc:
        raise RehearsalError(f"--traffic {exc}") from exc
    bodies: list[bytes] = []
    labeled = skipped = 0
    first = ""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        problem = ""
        try:
            body: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"line {number}: not JSON ({exc.msg} at column {exc.colno})"
        except RecursionError:
            problem = f"line {number}: nested too deeply"
        else:
            if not isinstance(body, dict):
                problem = f"line {number}: a request body must be a JSON object"
        if problem:
            skipped += 1
            first = first or problem
            continue
        labeled += "label" in body
        bodies.append(json.dumps(body).encode())
    if not bodies:
        why = f" (first problem: {first})" if first else ""
        raise RehearsalError(f"--traffic {path}: no request bodies{why}")
    return Traffic(tuple(bodies), labeled=labeled, skipped=skipped, first_problem=first)


@dataclass(frozen=True)
class Route:
    """Where traffic goes now: the stable and (maybe) canary revisions, the canary weight,
    and the percent of requests also copied to the canary (a mirror; answers discarded)."""

    stable: str
    canary: str | None = None
    weight: int = 0
    mirror: int = 0


class Router:
    """The traffic split, swapped as a whole so a sender never sees half an update."""

    def __init__(self, urls: dict[str, str], route: Route) -> None:
        self.urls = dict(urls)  # revision -> the base URL of its TorchServe
        self._route = route

    @property
    def route(self) -> Route:
        return self._route

    def set(self, route: Route) -> Route:
        if route.canary is None or route.canary not in self.urls:
            route = Route(route.stable, route.canary, 0, 0)
        self._route = route  # one reference assignment: atomic for the sender threads
        return route


@dataclass
class TrafficStats:
    """Answers counted per revision and status class, and per second for the timeline."""

    by_revision: dict[str, Counter[str]] = field(default_factory=dict)
    per_second: dict[int, Counter[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, revision: str, outcome: str, second: int) -> None:
        with self.lock:
            self.by_revision.setdefault(revision, Counter())[outcome] += 1
            bucket = self.per_second.setdefault(second, Counter())
            bucket[revision] += 1
            bucket[outcome] += 1

    def totals(self) -> Counter[str]:
        with self.lock:
            total: Counter[str] = Counter()
            for counts in self.by_revision.values():
                total.update(counts)
            return total

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the report."""
        with self.lock:
            return {
                "byRevision": {r: dict(c) for r, c in self.by_revision.items()},
                # {"t": second, <revision>: answers, "2xx": ..., "4xx": ..., ...}
                "perSecond": [{"t": s, **c} for s, c in sorted(self.per_second.items())],
            }


def _outcome(status: int) -> str:
    if 200 <= status < 300:
        return "2xx"
    if 400 <= status < 500:
        return "4xx"
    return "5xx"


class LoadGenerator:
    """Threads replaying `traffic` at `rate` requests per second through `router`."""

    def __init__(
        self,
        traffic: Traffic,
        router: Router,
        *,
        model_name: str,
        rate: float,
        threads: int | None = None,
        seed: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self.traffic = traffic
        self.router = router
        self.model_name = model_name
        self.rate = rate
        self.stats = TrafficStats()
        self.timeout = timeout
        # Enough threads that a slow answer does not hold the rate back; a few suffice
        # for the tens of requests per second a rehearsal needs.
        self._threads_wanted = threads or max(2, min(16, round(rate / 10)))
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next = 0
        self._start = 0.0
        self.origin = 0.0  # monotonic time that per-second buckets count from

    def start(self, origin: float | None = None) -> None:
        self._start = time.monotonic()
        self.origin = self._start if origin is None else origin
        for number in range(self._threads_wanted):
            thread = threading.Thread(target=self._run, name=f"rehearsal-load-{number}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        self._threads.clear()

    def _claim(self) -> tuple[float, bytes, bool, Route]:
        with self._lock:
            k = self._next
            self._next += 1
            due = self._start + k / self.rate
            body = self.traffic.bodies[k % len(self.traffic.bodies)]
            route = self.router.route
            to_canary = route.canary is not None and self._random.random() * 100 < route.weight
        return due, body, to_canary, route

    def _mirrored(self, route: Route) -> bool:
        if route.canary is None or route.mirror <= 0:
            return False
        with self._lock:
            return self._random.random() * 100 < route.mirror

    def _send(self, client: httpx.Client, revision: str, body: bytes) -> None:
        url = f"{self.router.urls[revision]}/predictions/{self.model_name}"
        headers = {"Content-Type": "application/json"}
        try:
            outcome = _outcome(client.post(url, content=body, headers=headers).status_code)
        except httpx.HTTPError:
            outcome = "failed"
        self.stats.count(revision, outcome, math.floor(time.monotonic() - self.origin))

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                due, body, to_canary, route = self._claim()
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                # Read the route again at send time: a weight change while this request
                # waited for its slot applies to it.
                current = self.router.route
                if current != route:
                    with self._lock:
                        draw = self._random.random() * 100
                    to_canary = current.canary is not None and draw < current.weight
                revision = current.canary if to_canary and current.canary else current.stable
                self._send(client, revision, body)
                if current.canary is not None and self._mirrored(current):
                    self._send(client, current.canary, body)  # the copy: its answer is dropped
