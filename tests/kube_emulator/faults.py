"""Fault injection for chaos tests: errors, slowness and dropped watch streams on demand.

A :class:`FaultRule` matches requests by HTTP method (``WATCH`` stands for watch requests) and
a regular expression searched in the path, fires with a probability and at most ``times``
times, and then either answers an error Status (409 Conflict, 429, 500, 503, ...), delays
the request (``slow``), or cuts a watch stream after ``delay`` seconds (``drop_watch``).
Rules are set at run time through the harness or ``POST /emulator/faults``; the emulator's
own control endpoints are never faulted.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ApiError

KINDS = ("error", "slow", "drop_watch")
_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class FaultRule:
    kind: str = "error"
    status: int = 500
    probability: float = 1.0
    methods: tuple[str, ...] = ()  # GET, POST, PUT, PATCH, DELETE, WATCH; empty: all
    path: str = ""  # a regex searched in the request path; empty: all
    delay: float = 0.0  # seconds: for "slow" and "drop_watch"
    times: int | None = None  # fire at most this many times; None: unlimited
    message: str = "injected fault"
    fired: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {KINDS}")
        if not 0 <= self.probability <= 1:
            raise ValueError("probability must be within [0, 1]")
        self.methods = tuple(m.upper() for m in self.methods)
        re.compile(self.path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "fired"}
        if "methods" in known:
            known["methods"] = tuple(known["methods"])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.methods and method not in self.methods:
            return False
        return not self.path or re.search(self.path, path) is not None

    def error(self) -> ApiError:
        reason = _REASONS.get(self.status, "InternalError")
        details: dict[str, Any] = {}
        if self.status == 429:
            details["retryAfterSeconds"] = 1
        return ApiError(self.status, reason, self.message, details)


class FaultInjector:
    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._random = random.Random(seed)

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def _fire(self, kinds: tuple[str, ...], method: str, path: str) -> FaultRule | None:
        for rule in self.rules:
            fires = rule.kind in kinds and rule.matches(method, path)
            if fires and self._random.random() < rule.probability:
                rule.fired += 1
                return rule
        return None

    def for_request(self, method: str, path: str) -> list[FaultRule]:
        """The slow and error rules that fire for this request, slow ones first."""
        fired = []
        slow = self._fire(("slow",), method, path)
        if slow is not None:
            fired.append(slow)
        error = self._fire(("error",), method, path)
        if error is not None:
            fired.append(error)
        return fired

    def watch_drop_delay(self, path: str) -> float | None:
        rule = self._fire(("drop_watch",), "WATCH", path)
        return None if rule is None else rule.delay
