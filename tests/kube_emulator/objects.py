"""Object metadata rules shared by every write: names, generateName, uid, timestamps,
generation, label and ownerReference checks, plus the defaults the real API server gives
the built-in kinds the operator creates (Deployments, Services, Namespaces).

Pure helpers over dicts; :mod:`.operations` decides when to call them.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import random
import re
import uuid
from typing import Any

from .errors import Cause
from .resources import ResourceInfo

# Kinds whose metadata.generation the real server maintains (custom resources always do).
GENERATION_KINDS = {
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("policy", "poddisruptionbudgets"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
}
# Kinds with a DNS-1123 *label* name (63 chars, no dots), like namespaces and services.
LABEL_NAMED = {("", "namespaces"), ("", "services")}

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def now_timestamp() -> str:
    """RFC 3339 with second precision, as metav1.Time serialises."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None


def generate_name(prefix: str) -> str:
    return prefix + "".join(random.choices(_GENERATE_ALPHABET, k=5))


def new_uid() -> str:
    return str(uuid.uuid4())


def has_generation(info: ResourceInfo) -> bool:
    return info.is_custom or info.storage_key in GENERATION_KINDS


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    return metadata


def served(obj: dict[str, Any], info: ResourceInfo) -> dict[str, Any]:
    """The object as this version's endpoint shows it (no conversion: only apiVersion)."""
    shown = copy.deepcopy(obj)
    shown["apiVersion"] = info.api_version
    shown["kind"] = info.kind
    return shown


def spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """What a generation bump looks at: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def validate_metadata(info: ResourceInfo, obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    metadata = meta(obj)
    name = metadata.get("name") or ""
    label_named = info.storage_key in LABEL_NAMED
    pattern, limit = (_DNS_LABEL, 63) if label_named else (_DNS_SUBDOMAIN, 253)
    if name and (len(name) > limit or not pattern.match(name)):
        message = _LABEL_MESSAGE if label_named else _SUBDOMAIN_MESSAGE
        causes.append(
            Cause("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {message}')
        )
    for field in ("labels", "annotations"):
        value = metadata.get(field)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"metadata.{field}",
                    "Invalid value: must be a map of strings",
                )
            )
    labels = metadata.get("labels")
    for key, value in (labels if isinstance(labels, dict) else {}).items():
        if isinstance(value, str) and (
            len(value) > 63 or not re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", value)
        ):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    "metadata.labels",
                    f'Invalid value: "{value}": a valid label must be an empty string '
                    "or consist of alphanumeric characters, '-', '_' or '.', and must "
                    f"start and end with an alphanumeric character (label {key})",
                )
            )
    for index, ref in enumerate(metadata.get("ownerReferences") or []):
        for field in ("apiVersion", "kind", "name", "uid"):
            if not (isinstance(ref, dict) and ref.get(field)):
                causes.append(
                    Cause(
                        "FieldValueInvalid",
                        f"metadata.ownerReferences[{index}].{field}",
                        f'Invalid value: "": {field} must not be empty',
                    )
                )
    finalizers = metadata.get("finalizers")
    if finalizers is not None and not (
        isinstance(finalizers, list) and all(isinstance(f, str) for f in finalizers)
    ):
        causes.append(
            Cause(
                "FieldValueInvalid",
                "metadata.finalizers",
                "Invalid value: must be a list of strings",
            )
        )
    return causes


def template_hash(template: Any) -> str:
    digest = hashlib.sha256(repr(template).encode()).hexdigest()
    return "".join(_GENERATE_ALPHABET[int(digest[i : i + 2], 16) % 27] for i in range(0, 20, 2))


def default_builtin(info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """The defaults the real server fills in for the built-in kinds the operator writes."""
    key = info.storage_key
    spec = obj.get("spec")
    if key == ("apps", "deployments") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy["type"] = "RollingUpdate"
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxSurge", "25%")
            rolling.setdefault("maxUnavailable", "25%")
        _default_pod_template(spec.get("template"))
    elif key == ("apps", "replicasets") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _default_pod_template(spec.get("template"))
    elif key == ("", "services") and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
        if spec.get("type") != "ExternalName":
            ip = old_ip or f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}"
            spec.setdefault("clusterIP", ip)
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
    elif key == ("", "namespaces"):
        labels = meta(obj).setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = meta(obj).get("name", "")
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    elif key == ("", "secrets"):
        obj.setdefault("type", "Opaque")
        # stringData is write-only: merged into data, base64-encoded, and dropped
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict) and string_data:
            data: dict[str, Any] = obj["data"] if isinstance(obj.get("data"), dict) else {}
            for name, value in string_data.items():
                data[name] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
    elif key == ("autoscaling", "horizontalpodautoscalers") and isinstance(spec, dict):
        spec.setdefault("minReplicas", 1)
        if info.version == "v2" and not spec.get("metrics"):
            target = {"type": "Utilization", "averageUtilization": 80}  # CPU at 80%
            spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]
    if old is None and key in INITIAL_STATUS:
        obj.setdefault("status", copy.deepcopy(INITIAL_STATUS[key]))


# The status a created object shows before any controller writes one (a non-pointer Go
# struct, so never absent; some counts are not omitempty).
INITIAL_STATUS: dict[tuple[str, str], dict[str, Any]] = {
    ("apps", "deployments"): {},
    ("apps", "replicasets"): {"replicas": 0},
    ("", "services"): {"loadBalancer": {}},
    ("policy", "poddisruptionbudgets"): {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    },
    ("autoscaling", "horizontalpodautoscalers"): {"desiredReplicas": 0, "currentMetrics": None},
}


def _pull_policy(image: Any) -> str:
    """Always for a :latest (or untagged) image, else IfNotPresent (SetDefaults_Container)."""
    name = str(image or "")
    if "@" in name:
        return "IfNotPresent"
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_pod_template(template: Any) -> None:
    if not isinstance(template, dict):
        return
    pod_spec = template.get("spec")
    if not isinstance(pod_spec, dict):
        return
    pod_spec.setdefault("restartPolicy", "Always")
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)
    pod_spec.setdefault("schedulerName", "default-scheduler")
    pod_spec.setdefault("securityContext", {})
    for container in pod_spec.get("containers") or []:
        if isinstance(container, dict):
            container.setdefault("imagePullPolicy", _pull_policy(container.get("image")))
            container.setdefault("resources", {})
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def validate_builtin(info: ResourceInfo, obj: dict[str, Any]) -> list[Cause]:
    """The few structural checks of built-in kinds that tests are likely to trip over."""
    causes: list[Cause] = []
    if info.storage_key in (("apps", "deployments"), ("apps", "replicasets")):
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [Cause("FieldValueRequired", "spec", "Required value")]
        selector = spec.get("selector")
        if not isinstance(selector, dict) or not selector:
            causes.append(Cause("FieldValueRequired", "spec.selector", "Required value"))
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        wanted = (selector or {}).get("matchLabels") or {} if isinstance(selector, dict) else {}
        if any(template_labels.get(k) != v for k, v in wanted.items()):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    f"Invalid value: {template_labels!r}: `selector` does not match "
                    "template `labels`",
                )
            )
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
        if not containers:
            causes.append(
                Cause("FieldValueRequired", "spec.template.spec.containers", "Required value")
            )
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas < 0:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    "spec.replicas",
                    f"Invalid value: {replicas}: must be greater than or equal to 0",
                )
            )
    return causes


# metav1.MicroTime fields of the built-in kinds (RFC 3339 with exactly six fraction digits).
MICRO_TIME_FIELDS = {
    ("", "events"): ("eventTime", "series.lastObservedTime"),
    ("events.k8s.io", "events"): ("eventTime", "series.lastObservedTime"),
    ("coordination.k8s.io", "leases"): ("spec.acquireTime", "spec.renewTime"),
}
MICRO_TIME_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_MICROS = re.compile(r"^\.\d{6}")
_ZONE = re.compile(r"^(Z|[+-]\d{2}:\d{2})$")


def micro_time_error(info: ResourceInfo, obj: dict[str, Any]) -> str | None:
    """Go's parse error for the first MicroTime field the real server could not decode."""
    for path in MICRO_TIME_FIELDS.get(info.storage_key, ()):
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str):
            continue
        seconds = _SECONDS.match(value)
        rest = value[seconds.end() :] if seconds else value
        micros = _MICROS.match(rest) if seconds else None
        zone = rest[micros.end() :] if micros else rest
        if seconds and micros and _ZONE.match(zone):
            continue
        expected = ".000000" if seconds and not micros else "Z07:00" if seconds else "2006"
        return (
            f'parsing time "{value}" as "{MICRO_TIME_LAYOUT}": cannot parse "{zone}" as '
            f'"{expected}"'
        )
    return None


# What typed decoding keeps: ObjectMeta's fields, and the top-level fields of each built-in
# kind (the emulator has no schemas of built-ins, so their nested fields are not checked).
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_SPEC_STATUS = frozenset({"spec", "status"})
BUILTIN_FIELDS: dict[tuple[str, str], frozenset[str]] = {
    ("", "namespaces"): _SPEC_STATUS,
    ("", "configmaps"): frozenset({"data", "binaryData", "immutable"}),
    ("", "secrets"): frozenset({"data", "stringData", "type", "immutable"}),
    ("", "serviceaccounts"): frozenset(
        {"secrets", "imagePullSecrets", "automountServiceAccountToken"}
    ),
    ("", "services"): _SPEC_STATUS,
    ("", "events"): frozenset(
        {
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        }
    ),
    ("events.k8s.io", "events"): frozenset(
        {
            "eventTime",
            "series",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "regarding",
            "related",
            "note",
            "type",
            "deprecatedSource",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        }
    ),
    ("apps", "deployments"): _SPEC_STATUS,
    ("apps", "replicasets"): _SPEC_STATUS,
    ("policy", "poddisruptionbudgets"): _SPEC_STATUS,
    ("autoscaling", "horizontalpodautoscalers"): _SPEC_STATUS,
    ("coordination.k8s.io", "leases"): frozenset({"spec"}),
    ("apiextensions.k8s.io", "customresourcedefinitions"): _SPEC_STATUS,
}


def prune_unknown_fields(info: ResourceInfo, obj: dict[str, Any]) -> list[str]:
    """Drop what decoding into the real server's types drops: unknown fields of metadata
    and, for built-in kinds, at the top level. Returns their paths, for the warnings (or the
    strict decoding error) ``fieldValidation`` asks for."""
    unknown = []
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        for key in [k for k in metadata if k not in OBJECT_META_FIELDS]:
            del metadata[key]
            unknown.append(f"metadata.{key}")
    known = BUILTIN_FIELDS.get(info.storage_key)
    if not info.is_custom and known is not None:
        for key in [k for k in obj if k not in known | {"apiVersion", "kind", "metadata"}]:
            del obj[key]
            unknown.append(key)
    return unknown
