"""The API server's validation of Events, core/v1 and events.k8s.io/v1 alike.

A real server stores both as one internal Event and validates that (k8s.io/kubernetes
``pkg/apis/core/validation/events.go``), so causes name the internal fields
(``involvedObject.namespace`` even when an events.k8s.io client sent ``regarding``) and the
error names no group. The newer API adds its own rules on create: an eventTime, a type of
Normal or Warning, none of the deprecated fields. Updates get the same rules as creates here
(the real server also keeps most fields immutable).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import Cause
from .resources import ResourceInfo
from .schema import render_value

CORE_EVENTS = ("", "events")
NEW_EVENTS = ("events.k8s.io", "events")
LENGTH_LIMITS = {"reportingInstance": 128, "action": 128, "reason": 128}
NOTE_LIMIT = 1024
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_QUALIFIED_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def _internal(info: ResourceInfo, event: dict[str, Any]) -> dict[str, Any]:
    """The fields validation reads, under the internal Event's names."""
    if info.storage_key == NEW_EVENTS:
        return {
            "involvedObject": event.get("regarding") or {},
            "message": event.get("note") or "",
            "reportingController": event.get("reportingController") or "",
            "firstTimestamp": event.get("deprecatedFirstTimestamp"),
            "lastTimestamp": event.get("deprecatedLastTimestamp"),
            "count": event.get("deprecatedCount") or 0,
            "source": event.get("deprecatedSource") or {},
            **{k: event.get(k) for k in ("eventTime", "series", "type", "metadata")},
            **{k: event.get(k) or "" for k in ("reportingInstance", "action", "reason")},
        }
    return {
        "involvedObject": event.get("involvedObject") or {},
        "message": event.get("message") or "",
        "reportingController": event.get("reportingComponent") or "",
        **{k: event.get(k) for k in ("eventTime", "series", "type", "metadata")},
        **{k: event.get(k) or "" for k in ("reportingInstance", "action", "reason")},
    }


def _invalid(field: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", field, f"Invalid value: {render_value(value)}: {detail}")


def _qualified_name(value: str, field: str) -> list[Cause]:
    """IsQualifiedName for a name without a prefix, as ValidateQualifiedName reports it."""
    name = value.rsplit("/", maxsplit=1)[-1]
    causes = []
    if not name:
        causes.append(_invalid(field, value, "name part must be non-empty"))
    elif len(name) > 63:
        causes.append(_invalid(field, value, "name part must be no more than 63 characters"))
    if not _QUALIFIED_NAME.match(name):
        causes.append(_invalid(field, value, _QUALIFIED_MESSAGE))
    return causes


def validate_event(info: ResourceInfo, event: dict[str, Any]) -> list[Cause]:
    """ValidateEventCreate's causes, in its order; [] for any other kind."""
    if info.storage_key not in (CORE_EVENTS, NEW_EVENTS):
        return []
    internal = _internal(info, event)
    namespace = (event.get("metadata") or {}).get("namespace") or ""
    regarding = internal["involvedObject"].get("namespace") or ""
    causes: list[Cause] = []
    mismatch = _invalid("involvedObject.namespace", regarding, "does not match event.namespace")
    if not internal["eventTime"]:  # an old-style event: the object must be in its namespace
        if (regarding and regarding != namespace) or (
            not regarding and namespace not in ("", "default")
        ):
            causes.append(mismatch)
    else:
        if not regarding and namespace not in ("default", "kube-system"):
            causes.append(mismatch)
        controller_field = (
            "reportingComponent" if info.storage_key == CORE_EVENTS else "reportingController"
        )
        if not internal["reportingController"]:
            causes.append(Cause("FieldValueRequired", controller_field, "Required value"))
        causes.extend(_qualified_name(internal["reportingController"], controller_field))
        for field, limit in LENGTH_LIMITS.items():
            if not internal[field]:
                causes.append(Cause("FieldValueRequired", field, "Required value"))
            if len(internal[field]) > limit:
                causes.append(_invalid(field, "", f"can have at most {limit} characters"))
        if len(internal["message"]) > NOTE_LIMIT:
            causes.append(_invalid("message", "", f"can have at most {NOTE_LIMIT} characters"))
    if info.storage_key == NEW_EVENTS:
        causes.extend(_new_api_rules(internal))
    return causes


def _new_api_rules(internal: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    series = internal["series"]
    if isinstance(series, dict):
        if (series.get("count") or 0) < 2:
            causes.append(_invalid("series.count", "", "should be at least 2"))
        if not series.get("lastObservedTime"):
            causes.append(Cause("FieldValueRequired", "series.lastObservedTime", "Required value"))
    if not internal["eventTime"]:
        causes.append(Cause("FieldValueRequired", "eventTime", "Required value"))
    if internal["type"] not in ("Normal", "Warning"):
        causes.append(_invalid("type", "", f"has invalid value: {internal['type'] or ''}"))
    for field in ("firstTimestamp", "lastTimestamp", "count"):
        if internal[field]:
            causes.append(_invalid(field, "", "needs to be unset"))
    source = internal["source"]
    if source.get("component") or source.get("host"):
        causes.append(_invalid("source", "", "needs to be unset"))
    return causes
