"""Small builders for ModelDeployments and ticks, shared by the unit tests."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from torchrollout.engine import CheckMeasurements, Event
from torchrollout.operator.announcements import creator
from torchrollout.operator.cluster import FakeCluster
from torchrollout.simulation import load_resource, parse_ticks, replay
from torchrollout.spec import ModelDeployment, ModelDeploymentStatus

BASE: dict[str, Any] = {
    "apiVersion": "torchrollout.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "risk", "generation": 1},
    "spec": {
        "model": {
            "version": "2.0.0",
            "source": {"uri": "s3://models/fraud/model.pt"},
            "handler": "sequence-classifier",
        },
        "canary": {
            "steps": [10, 50],
            "interval": "30s",
            "progressDeadlineSeconds": 120,
            "analysis": {
                "metrics": [
                    {"template": "accuracy", "min": 0.85, "maxDropVsStable": 0.02},
                    {"template": "latency-p99", "maxMs": 500, "maxRatioVsStable": 1.5},
                ],
                "minSamples": 50,
                "failureLimit": 2,
                "inconclusiveLimit": 3,
                "consecutiveErrorLimit": 3,
            },
        },
    },
    "status": {"stableVersion": "1.0.0"},
}


def merged(base: Any, override: Any) -> Any:
    """`override` deep-merged into a copy of `base`; None values delete keys."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key), value)
    return out


def resource(**override: Any) -> ModelDeployment:
    """The base resource with `override` merged in (keys: metadata, spec, status)."""
    return load_resource(merged(BASE, override))


GOOD = {
    "accuracy": {"canary": 0.92, "stable": 0.91, "samples": 200},
    "latency-p99": {"canary": 40.0, "stable": 38.0, "samples": 400},
}
BAD_ACCURACY = {**GOOD, "accuracy": {"canary": 0.70, "stable": 0.91, "samples": 200}}
ERRORS = {"accuracy": {"error": "Prometheus unreachable"}, "latency-p99": {"error": "timeout"}}


def tick(t: float, checks: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"t": t, **fields}
    if checks is not None:
        line["checks"] = checks
    return line


def run(md: ModelDeployment, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The simulate output for `lines`, as `torchrollout simulate` prints it."""
    return [o.summary() for o in replay(md, parse_ticks(json.dumps(line) for line in lines))]


def final_status(md: ModelDeployment, lines: list[dict[str, Any]]) -> ModelDeploymentStatus:
    """The status after `lines`."""
    *_, last = replay(md, parse_ticks(json.dumps(line) for line in lines))
    return last.status


def status_after(md: ModelDeployment, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The status after `lines`, as a resource's YAML would hold it."""
    return final_status(md, lines).model_dump(mode="json", by_alias=True, exclude_none=True)


def measured(checks: dict[str, Any]) -> dict[str, CheckMeasurements]:
    """Measurements written as in a ticks file."""
    (parsed,) = parse_ticks([json.dumps({"t": 0, "checks": checks})])
    return parsed.checks


def event_recorder(events: list[Event], cluster: FakeCluster) -> Callable[[dict[str, Any]], bool]:
    """An Event sink for a Reconciler: creates each Event in `cluster` (which refuses a second
    of the same name, as the API server does) and keeps those created in `events`."""
    create = creator(cluster)

    def post(obj: dict[str, Any]) -> bool:
        created = create(obj)
        if created:
            events.append(Event(obj["type"], obj["reason"], obj["message"]))
        return created

    return post
