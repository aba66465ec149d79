"""Read samples out of Prometheus text exposition (what TorchServe serves on :8082/metrics).

Just enough of the format for tests: `name{label="v",...} value` lines, comments skipped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping

import httpx

_LINE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str], float]


def parse(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None or line.startswith("#"):
            continue
        labels = dict(_LABEL.findall(match.group("labels") or ""))
        samples.append((match.group("name"), labels, float(match.group("value"))))
    return samples


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum of `name` samples whose labels include `labels`; None when there is none."""
    found = [
        v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())
    ]
    return sum(found) if found else None


def wait_for(
    url: str, predicate: Callable[[list[Sample]], bool], *, timeout: float = 15.0
) -> list[Sample]:
    """Scrape `url` until `predicate` holds (TorchServe updates metrics asynchronously)."""
    deadline = time.monotonic() + timeout
    samples: list[Sample] = []
    while time.monotonic() < deadline:
        samples = parse(httpx.get(url, timeout=5.0).text)
        if predicate(samples):
            return samples
        time.sleep(0.1)  # poll interval; the front end parses worker logs in the background
    return samples


def labels_of(samples: list[Sample], name: str) -> list[Mapping[str, str]]:
    return [ls for n, ls, _ in samples if n == name]
