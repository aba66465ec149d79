"""Server-side printing: ``meta.k8s.io/v1`` Table output, as ``kubectl get`` asks for it.

Custom resources get Name plus their CRD's ``additionalPrinterColumns`` (or Name and Age when
none are declared); built-in kinds get the columns kubectl users know. Column values come
from the simple JSONPath subset CRDs use (``.a.b``, ``.a[0]``, ``.a[*].b`` and filters like
``.status.conditions[?(@.type=="Ready")].status``).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from .objects import parse_timestamp
from .resources import ResourceInfo
from .selectors import selector_to_string

_TOKEN = re.compile(
    r"""\.?([A-Za-z0-9_\-/]+)|\[(\d+|\*)\]|\[\?\(@\.([\w.\-]+)\s*==\s*['"]([^'"]*)['"]\)\]"""
)


def jsonpath(obj: Any, expression: str) -> list[Any]:
    """Evaluate a CRD printer-column JSONPath; returns every match."""
    expression = expression.strip()
    if expression.startswith("{") and expression.endswith("}"):
        expression = expression[1:-1]
    current = [obj]
    position = 0
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if not match:
            return []
        position = match.end()
        key, index, filter_key, filter_value = match.groups()
        nxt: list[Any] = []
        for item in current:
            if key is not None and isinstance(item, dict) and key in item:
                nxt.append(item[key])
            elif index == "*" and isinstance(item, list):
                nxt.extend(item)
            elif index is not None and index != "*" and isinstance(item, list):
                if int(index) < len(item):
                    nxt.append(item[int(index)])
            elif filter_key is not None and isinstance(item, list):
                for element in item:
                    probe: Any = element
                    for part in filter_key.split("."):
                        probe = probe.get(part) if isinstance(probe, dict) else None
                    if probe is not None and str(probe) == filter_value:
                        nxt.append(element)
        current = nxt
    return current


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery's duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    seconds = max(int(seconds), 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 730:
        return f"{days}d"
    years = days // 365
    return f"{years}y{days % 365}d" if years < 8 and days % 365 else f"{years}y"


def age(timestamp: Any) -> str:
    when = parse_timestamp(timestamp) if isinstance(timestamp, str) else None
    if when is None:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.UTC) - when).total_seconds())


Column = tuple[str, str, str, int, Callable[[dict[str, Any]], Any]]  # name,type,format,prio,fn


def _name(obj: dict[str, Any]) -> Any:
    return obj["metadata"]["name"]


def _age(obj: dict[str, Any]) -> Any:
    return age(obj["metadata"].get("creationTimestamp"))


def _get(path: str, default: Any = None) -> Callable[[dict[str, Any]], Any]:
    def read(obj: dict[str, Any]) -> Any:
        found = jsonpath(obj, path)
        return found[0] if found else default

    return read


NAME: Column = ("Name", "string", "name", 0, _name)
AGE: Column = ("Age", "string", "", 0, _age)


def _ports(obj: dict[str, Any]) -> str:
    ports = (obj.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _ready(obj: dict[str, Any]) -> str:
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    return f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}"


def _containers(field: str) -> Callable[[dict[str, Any]], str]:
    def read(obj: dict[str, Any]) -> str:
        pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        return ",".join(str(c.get(field, "")) for c in pod.get("containers") or [])

    return read


def _labels(labels: dict[str, Any]) -> str:
    """labels.FormatLabels: sorted key=value pairs, or <none>."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def _selector(obj: dict[str, Any]) -> str:
    return selector_to_string((obj.get("spec") or {}).get("selector") or {}) or "<none>"


def _int_or_string(path: str) -> Callable[[dict[str, Any]], str]:
    def read(obj: dict[str, Any]) -> str:
        found = jsonpath(obj, path)
        return str(found[0]) if found else "N/A"

    return read


def _event_view(obj: dict[str, Any]) -> dict[str, Any]:
    """An events.k8s.io Event under the core Event's field names (a real server prints both
    from its one internal Event)."""
    if "regarding" not in obj and "note" not in obj and "deprecatedSource" not in obj:
        return obj
    return {
        **obj,
        "involvedObject": obj.get("regarding") or {},
        "message": obj.get("note") or "",
        "source": obj.get("deprecatedSource") or {},
        "firstTimestamp": obj.get("deprecatedFirstTimestamp"),
        "lastTimestamp": obj.get("deprecatedLastTimestamp"),
        "count": obj.get("deprecatedCount") or 0,
    }


def _event_cells(obj: dict[str, Any]) -> list[Any]:
    """printEvent's cells: last seen, type, reason, object, subobject, source, message,
    first seen, count, name."""
    event = _event_view(obj)
    first = age(event.get("firstTimestamp") or event.get("eventTime"))
    last = age(event["lastTimestamp"]) if event.get("lastTimestamp") else first
    count = event.get("count") or 1  # singleton events of the new API have no count
    if series := event.get("series"):
        last, count = age(series.get("lastObservedTime")), series.get("count", count)
    involved = event.get("involvedObject") or {}
    target = str(involved.get("kind", "")).lower()
    if involved.get("name"):
        target = f"{target}/{involved['name']}"
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    component = component or event.get("reportingController") or ""
    instance = source.get("host") or event.get("reportingInstance") or ""
    return [
        last,
        event.get("type", ""),
        event.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        f"{component}, {instance}" if instance else component,
        str(event.get("message") or "").strip(),
        first,
        count,
        event["metadata"]["name"],
    ]


def _event_column(index: int) -> Callable[[dict[str, Any]], Any]:
    return lambda obj: _event_cells(obj)[index]


EVENT_COLUMNS: list[Column] = [
    (name, "string", "name" if name == "Name" else "", priority, _event_column(index))
    for index, (name, priority) in enumerate(
        [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1),
        ]
    )
]


# The field of a MetricSpec that holds each metric type's source.
_METRIC_SOURCES = {
    "Resource": "resource",
    "ContainerResource": "containerResource",
    "Pods": "pods",
    "Object": "object",
    "External": "external",
}


def _hpa_metric(metric: dict[str, Any]) -> str:
    """One metric as formatHPAMetrics shows it; there is no metrics server, so no current
    value is ever known."""
    kind = metric.get("type", "")
    if kind not in _METRIC_SOURCES:
        return "<unknown type>"
    source = metric.get(_METRIC_SOURCES[kind]) or {}
    target = source.get("target") or {}
    if kind in ("Resource", "ContainerResource"):
        if "averageValue" in target:
            return f"{source.get('name')}: <unknown>/{target['averageValue']}"
        goal = target.get("averageUtilization")
        return f"{source.get('name')}: <unknown>/{'<auto>' if goal is None else f'{goal}%'}"
    if kind != "Pods" and "averageValue" in target:
        return f"<unknown>/{target['averageValue']} (avg)"
    return f"<unknown>/{target.get('averageValue', target.get('value'))}"


def _hpa_metrics(obj: dict[str, Any]) -> str:
    spec = obj.get("spec") or {}
    metrics = spec.get("metrics")
    if metrics is None and "targetCPUUtilizationPercentage" in spec:  # an autoscaling/v1 one
        goal = spec["targetCPUUtilizationPercentage"]
        target = {"type": "Utilization", "averageUtilization": goal}
        metrics = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]
    shown = [_hpa_metric(metric) for metric in metrics or []]
    if not shown:
        return "<none>"
    more = len(shown) - 2
    return ", ".join(shown[:2]) + (f" + {more} more..." if more > 0 else "")


HPA_COLUMNS: list[Column] = [
    NAME,
    (
        "Reference",
        "string",
        "",
        0,
        lambda o: "{}/{}".format(
            (o.get("spec") or {}).get("scaleTargetRef", {}).get("kind", ""),
            (o.get("spec") or {}).get("scaleTargetRef", {}).get("name", ""),
        ),
    ),
    ("Targets", "string", "", 0, _hpa_metrics),
    ("MinPods", "string", "", 0, lambda o: str(_get(".spec.minReplicas", "<unset>")(o))),
    ("MaxPods", "string", "", 0, _get(".spec.maxReplicas", 0)),
    ("Replicas", "string", "", 0, _get(".status.currentReplicas", 0)),
    AGE,
]

# The columns and cell types of k8s.io/kubernetes' printers (pkg/printers/internalversion),
# which some declare as strings and fill with integers.
BUILTIN_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "namespaces"): [NAME, ("Status", "string", "", 0, _get(".status.phase")), AGE],
    ("", "configmaps"): [
        NAME,
        (
            "Data",
            "string",
            "",
            0,
            lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
        ),
        AGE,
    ],
    ("", "secrets"): [
        NAME,
        ("Type", "string", "", 0, _get(".type")),
        ("Data", "string", "", 0, lambda o: len(o.get("data") or {})),
        AGE,
    ],
    ("", "services"): [
        NAME,
        ("Type", "string", "", 0, _get(".spec.type")),
        ("Cluster-IP", "string", "", 0, _get(".spec.clusterIP", "<none>")),
        ("External-IP", "string", "", 0, lambda o: "<none>"),
        ("Port(s)", "string", "", 0, _ports),
        AGE,
        (
            "Selector",
            "string",
            "",
            1,
            lambda o: _labels((o.get("spec") or {}).get("selector") or {}),
        ),
    ],
    ("", "events"): EVENT_COLUMNS,
    ("events.k8s.io", "events"): EVENT_COLUMNS,
    ("apps", "deployments"): [
        NAME,
        ("Ready", "string", "", 0, _ready),
        ("Up-to-date", "string", "", 0, _get(".status.updatedReplicas", 0)),
        ("Available", "string", "", 0, _get(".status.availableReplicas", 0)),
        AGE,
        ("Containers", "string", "", 1, _containers("name")),
        ("Images", "string", "", 1, _containers("image")),
        ("Selector", "string", "", 1, _selector),
    ],
    ("apps", "replicasets"): [
        NAME,
        ("Desired", "integer", "", 0, _get(".spec.replicas", 0)),
        ("Current", "integer", "", 0, _get(".status.replicas", 0)),
        ("Ready", "integer", "", 0, _get(".status.readyReplicas", 0)),
        AGE,
        ("Containers", "string", "", 1, _containers("name")),
        ("Images", "string", "", 1, _containers("image")),
        ("Selector", "string", "", 1, _selector),
    ],
    ("policy", "poddisruptionbudgets"): [
        NAME,
        ("Min Available", "string", "", 0, _int_or_string(".spec.minAvailable")),
        ("Max Unavailable", "string", "", 0, _int_or_string(".spec.maxUnavailable")),
        ("Allowed Disruptions", "integer", "", 0, _get(".status.disruptionsAllowed", 0)),
        AGE,
    ],
    ("autoscaling", "horizontalpodautoscalers"): HPA_COLUMNS,
    ("coordination.k8s.io", "leases"): [
        NAME,
        ("Holder", "string", "", 0, _get(".spec.holderIdentity", "")),
        AGE,
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        NAME,
        ("Created At", "date", "", 0, _get(".metadata.creationTimestamp")),
    ],
}


def _custom_columns(info: ResourceInfo) -> list[Column]:
    if not info.printer_columns:
        return [NAME, AGE]
    columns: list[Column] = [NAME]
    for spec in info.printer_columns:
        kind = spec.get("type", "string")
        path = spec.get("jsonPath", "")
        columns.append(
            (
                spec["name"],
                kind,
                spec.get("format", ""),
                int(spec.get("priority", 0)),
                _printer(path, kind),
            )
        )
    return columns


def _printer(path: str, kind: str) -> Callable[[dict[str, Any]], Any]:
    def read(obj: dict[str, Any]) -> Any:
        found = jsonpath(obj, path)
        if not found:
            return None
        if kind == "date":
            return age(found[0])
        if kind in ("integer", "number", "boolean") and len(found) == 1:
            return found[0]
        values = [v if isinstance(v, str) else _go_string(v) for v in found]
        return ",".join(values)

    return read


def _go_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def columns_for(info: ResourceInfo) -> list[Column]:
    if info.is_custom:
        return _custom_columns(info)
    return BUILTIN_COLUMNS.get(info.storage_key, [NAME, AGE])


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def to_table(
    info: ResourceInfo,
    objects: list[dict[str, Any]],
    *,
    resource_version: str,
    include_object: str = "Metadata",
    table_version: str = "v1",
    with_columns: bool = True,
) -> dict[str, Any]:
    columns = columns_for(info)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [fn(obj) for *_, fn in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    table: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{table_version}",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": fmt,
                "description": name,
                "priority": priority,
            }
            for name, kind, fmt, priority, _ in columns
        ]
        if with_columns
        else [],
        "rows": rows,
    }
    return table
