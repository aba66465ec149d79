"""Durations as Kubernetes users write them: `30s`, `2m`, `1m30s`, `500ms`, `1h`.

The spec keeps the string the user wrote (so the resource round-trips unchanged) and
the engine asks for seconds through `parse_duration`.
"""

from __future__ import annotations

import re

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError naming the expected form, or when `text` is too
    long to count in seconds (a number of hundreds of digits)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"{text!r} is not a duration; write a number with a unit, like 30s, 2m, 1m30s or 500ms"
        )
    try:
        return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    except OverflowError:
        raise ValueError(f"{text!r} is far too long a duration") from None


def format_duration(seconds: float) -> str:
    """The shortest duration string for `seconds`, as used in PromQL ranges (`30s`, `2m`)."""
    millis = round(seconds * 1000)
    if millis % 60_000 == 0:
        return f"{millis // 60_000}m"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"
