"""Strategies for ModelDeployment documents: valid ones, mutated ones, hostile strings.

A document is what YAML or JSON parsing gives: dicts, lists, strings, numbers, booleans
and None. `valid_documents` builds only documents the spec accepts, field by field from
the real fields and their rules (steps, durations, checks, routers, autoscaling,
notifications). `mutated_documents` breaks one field of a valid document, and
`hostile_documents` puts a hostile string in one of its string fields or keys.
"""

from __future__ import annotations

import copy
import string
from typing import Any

from hypothesis import strategies as st

from torchrollout.spec import BUILTIN_HANDLERS, Template
from torchrollout.spec.notifications import NOTIFICATION_EVENTS

Path = tuple[str | int, ...]

# -- small pieces ---------------------------------------------------------------------------

lower_alnum = string.ascii_lowercase + string.digits


@st.composite
def dns_labels(draw: st.DrawFn, max_size: int = 20) -> str:
    """A DNS-1123 label: lowercase alphanumerics and '-', alphanumeric at both ends."""
    inner = draw(st.text(lower_alnum + "-", max_size=max(0, max_size - 2)))
    return draw(st.sampled_from(lower_alnum)) + inner + draw(st.sampled_from(lower_alnum))


@st.composite
def metadata_names(draw: st.DrawFn) -> str:
    """metadata.name: a DNS label starting with a letter, at most 52 characters (often
    exactly 52, the longest, which the children's names must still fit)."""
    size = draw(st.sampled_from([1, 52]) | st.integers(1, 52))
    first = draw(st.sampled_from(string.ascii_lowercase))
    if size == 1:
        return first
    middle = draw(st.text(lower_alnum + "-", min_size=size - 2, max_size=size - 2))
    return first + middle + draw(st.sampled_from(lower_alnum))


label_values = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?\Z")
versions = label_values
label_keys = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z"),
    st.builds(lambda p, n: f"{p}.example.com/{n}", dns_labels(), dns_labels()),
)
# canary.interval: 1s..24h, but from 2s (see test_an_interval_of_one_second_is_valid).
intervals = st.sampled_from(["2s", "5s", "30s", "2m", "1m30s", "1h", "24h", "90000ms"])
sha256_digests = st.text("0123456789abcdef", min_size=64, max_size=64)
path_segments = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
source_uris = st.builds(
    lambda scheme, host, path: f"{scheme}{host}/{path}",
    st.sampled_from(["https://", "http://", "s3://", "pvc://", "file://"]),
    dns_labels(),
    path_segments,
)
custom_handlers = st.builds(
    lambda scheme, host, name: f"{scheme}{host}/{name}.py",
    st.sampled_from(["https://", "s3://", "pvc://", "file://"]),
    dns_labels(),
    path_segments,
)
store_uris = st.builds(
    lambda scheme, claim, path: f"{scheme}{claim}/{path}",
    st.sampled_from(["s3://", "pvc://"]),
    dns_labels(),
    path_segments,
)
# What YAML parsing gives (dates too, from an unquoted 2026-01-01).
yaml_scalars = st.one_of(
    st.none(),
    st.dates(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
secret_refs = st.fixed_dictionaries({"name": dns_labels(), "key": path_segments})

# -- spec sections ----------------------------------------------------------------------------


def fields(
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]],
    *,
    complete: bool,
) -> st.SearchStrategy[dict[str, Any]]:
    """A mapping of `required` and some of `optional`; all of them when `complete`."""
    if complete:
        return st.fixed_dictionaries({**required, **optional})
    return st.fixed_dictionaries(required, optional=optional)


def models(*, complete: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """`spec.model`: version, source, handler, and maybe name, config, sample and batching."""
    return fields(
        {
            "version": versions,
            "source": st.fixed_dictionaries(
                {"uri": source_uris}, optional={"sha256": sha256_digests}
            ),
            "handler": st.sampled_from(BUILTIN_HANDLERS) | custom_handlers,
        },
        optional={
            "name": st.from_regex(r"\A[A-Za-z][A-Za-z0-9_-]{0,62}\Z"),
            "config": st.dictionaries(st.text(max_size=8), yaml_values, max_size=3),
            "sampleInput": yaml_values,
            "batching": st.fixed_dictionaries(
                {},
                optional={
                    "maxBatchSize": st.integers(1, 512),
                    "maxBatchDelayMs": st.integers(0, 10_000),
                },
            ),
        },
        complete=complete,
    )


def runtimes(*, complete: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """`spec.runtime`: image, sizes, resources, environment, identity, placement, labels."""
    return fields(
        {},
        {
            "image": st.sampled_from(
                ["torchrollout/torchserve:0.1.0", "registry.local/ts@sha256:ab"]
            ),
            "replicas": st.integers(1, 1000),
            "workersPerReplica": st.integers(1, 64),
            "gpus": st.integers(0, 16),
            "resources": st.fixed_dictionaries(
                {},
                optional={
                    "requests": st.dictionaries(
                        st.sampled_from(["cpu", "memory"]),
                        st.sampled_from(["1", "500m", "1Gi", "2.5"]),
                    ),
                    "limits": st.dictionaries(
                        st.sampled_from(["cpu", "memory"]), st.sampled_from(["2", "4Gi"])
                    ),
                },
            ),
            "env": st.lists(
                st.fixed_dictionaries(
                    {"name": st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,10}\Z")},
                    optional={"value": st.text(max_size=10)},
                ),
                max_size=2,
            ),
            "serviceAccountName": dns_labels(),
            "imagePullSecrets": st.lists(st.fixed_dictionaries({"name": dns_labels()}), max_size=2),
            "nodeSelector": st.dictionaries(label_keys, label_values, min_size=1, max_size=2),
            "podLabels": st.dictionaries(label_keys, label_values, min_size=1, max_size=3),
            "podAnnotations": st.dictionaries(
                label_keys, st.text(max_size=20), min_size=1, max_size=2
            ),
            "priorityClassName": dns_labels(),
        },
        complete=complete,
    )


thresholds_by_template: dict[Template, st.SearchStrategy[dict[str, Any]]] = {
    Template.ACCURACY: st.fixed_dictionaries(
        {}, optional={"min": st.floats(0, 1), "maxDropVsStable": st.floats(0, 1)}
    ),
    Template.ERROR_RATE: st.fixed_dictionaries({}, optional={"max": st.floats(0, 1)}),
    Template.LATENCY_P99: st.fixed_dictionaries(
        {},
        optional={"maxMs": st.floats(1, 10_000), "maxRatioVsStable": st.floats(1, 10)},
    ),
    Template.LATENCY_MEAN: st.fixed_dictionaries(
        {}, optional={"max": st.floats(1, 10_000), "maxRatioVsStable": st.floats(1, 10)}
    ),
    Template.MEAN_ABSOLUTE_ERROR: st.fixed_dictionaries(
        {}, optional={"max": st.floats(0, 100), "maxDropVsStable": st.floats(0, 10)}
    ),
    Template.LATENCY_DISTRIBUTION: st.fixed_dictionaries(
        {},
        optional={
            "confidence": st.floats(0.5, 0.99),
            "minEffect": st.floats(0.5, 1),
        },
    ),
}

query_templates = st.sampled_from(
    [
        "up",
        'sum(rate(x{namespace="{{ namespace }}",revision="{{ revision }}"}[{{ interval }}]))',
        'avg(y{name="{{name}}",version="{{ version }}"})',
    ]
)


@st.composite
def template_checks(draw: st.DrawFn) -> dict[str, Any]:
    template = draw(st.sampled_from(list(Template)))
    check: dict[str, Any] = {"template": template.value, **draw(thresholds_by_template[template])}
    if draw(st.booleans()):
        check["minSamples"] = draw(st.integers(0, 1000))
    return check


@st.composite
def query_checks(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.floats(-1e6, 1e6))
    return {
        "name": draw(dns_labels(max_size=30)),
        "query": draw(query_templates),
        **draw(st.sampled_from([{"min": low}, {"max": low}, {"min": low, "max": low + 1}])),
    }


def _check_name(check: dict[str, Any]) -> str:
    return str(check.get("name") or check["template"])


analyses = st.fixed_dictionaries(
    {},
    optional={
        "metrics": st.lists(
            template_checks() | query_checks(), min_size=1, max_size=4, unique_by=_check_name
        ),
        "minSamples": st.integers(0, 1000),
        "failureLimit": st.integers(1, 5),
        "inconclusiveLimit": st.integers(1, 5),
        "consecutiveErrorLimit": st.integers(1, 5),
        "onInconclusive": st.sampled_from(["rollback", "pause"]),
        "onError": st.sampled_from(["rollback", "pause"]),
    },
)

steps = st.lists(st.integers(1, 99), min_size=1, max_size=20, unique=True).map(sorted)
header_names = st.from_regex(r"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}\Z")
header_values = st.text(min_size=1, max_size=20)
cookie_names = st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z")


@st.composite
def traffic_and_routing(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """`spec.traffic` and the `canary.match` / `canary.mirror` its router can do."""
    router = draw(st.sampled_from(["replicas", "gateway-api", "istio", "nginx"]))
    traffic: dict[str, Any] = {"router": router} if router != "replicas" else {}
    routing: dict[str, Any] = {}
    if router == "gateway-api":
        traffic["gatewayRef"] = draw(
            st.fixed_dictionaries(
                {"name": dns_labels()},
                optional={"namespace": dns_labels(), "sectionName": dns_labels()},
            )
        )
    if router == "istio" and draw(st.booleans()):
        traffic["gateways"] = draw(
            st.lists(st.builds(lambda n, g: f"{n}/{g}", dns_labels(), dns_labels()), max_size=2)
        )
    if router == "nginx" and draw(st.booleans()):
        traffic["ingressClassName"] = draw(dns_labels())
    if router != "replicas" and draw(st.booleans()):
        traffic["hostnames"] = draw(
            st.lists(st.builds(lambda a, b: f"{a}.{b}", dns_labels(), dns_labels()), max_size=2)
        )
    if router == "nginx":
        header = st.dictionaries(header_names, header_values, min_size=1, max_size=1)
        entries = [{"headers": draw(header)}, {"cookie": draw(cookie_names)}]
        routing["match"] = draw(st.lists(st.sampled_from(entries), max_size=2, unique_by=str))
    elif router != "replicas":
        match = st.fixed_dictionaries(
            {"headers": st.dictionaries(header_names, header_values, min_size=1, max_size=3)},
            optional={"cookie": cookie_names},
        )
        routing["match"] = draw(st.lists(match, max_size=3))
    if router in {"gateway-api", "istio"} and draw(st.booleans()):
        routing["mirror"] = draw(
            st.fixed_dictionaries({}, optional={"percent": st.integers(0, 100)})
        )
    return traffic, {k: v for k, v in routing.items() if v}


@st.composite
def autoscalings(draw: st.DrawFn) -> dict[str, Any]:
    engine = draw(st.sampled_from(["hpa", "prometheus", "keda"]))
    low = draw(st.integers(1, 50))
    scaling: dict[str, Any] = {
        "engine": engine,
        "minReplicas": low,
        "maxReplicas": draw(st.integers(low, 1000)),
    }
    if engine == "hpa":
        scaling["targetCPUUtilization"] = draw(st.none() | st.integers(1, 100))
        if draw(st.booleans()):
            scaling["targetMemoryUtilization"] = draw(st.integers(1, 100))
        if draw(st.booleans()):
            scaling["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    else:
        signal = draw(st.sampled_from(["requests-per-replica", "queue-latency", "query"]))
        scaling["signal"] = signal
        if signal == "query":
            scaling["query"] = draw(query_templates)
        if signal == "query" or draw(st.booleans()):
            scaling["target"] = draw(st.floats(0.001, 1e6))
        scaling["interval"] = draw(st.sampled_from(["1s", "15s", "1m", "1h"]))
    return scaling


notifications = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["webhook", "slack", "teams"]), "secretRef": secret_refs},
        optional={
            "events": st.lists(
                st.sampled_from(NOTIFICATION_EVENTS), min_size=1, max_size=5, unique=True
            )
        },
    ),
    max_size=3,
)


@st.composite
def valid_documents(draw: st.DrawFn, *, complete: bool = False) -> dict[str, Any]:
    """A ModelDeployment document the spec accepts, as YAML or JSON parsing gives it; with
    `complete`, one that sets every optional field (so each is there to be broken)."""
    traffic, routing = draw(traffic_and_routing())
    canary = draw(
        fields(
            {},
            {
                "steps": steps,
                "interval": intervals,
                "progressDeadlineSeconds": st.integers(1, 10_000),
                "analysis": analyses,
                "evaluation": st.fixed_dictionaries(
                    {"datasetUri": st.sampled_from(["s3://data/eval.jsonl", "file:///e.jsonl"])},
                    optional={"samplesPerTick": st.integers(1, 100_000)},
                ),
                "rollbackWindow": st.integers(0, 20),
                "scaleDownDelaySeconds": st.integers(0, 86_400),
            },
            complete=complete,
        )
    )
    spec = draw(
        fields(
            {"model": models(complete=complete)},
            {
                "runtime": runtimes(complete=complete),
                "archive": st.fixed_dictionaries({}, optional={"store": store_uris}),
                "autoscaling": autoscalings(),
                "notifications": notifications,
                "paused": st.booleans(),
            },
            complete=complete,
        )
    )
    if traffic:
        spec["traffic"] = traffic
    if canary or routing:
        spec["canary"] = {**canary, **routing}
    metadata = draw(
        fields(
            {"name": metadata_names()},
            {
                "namespace": dns_labels(),
                "uid": st.uuids().map(str),
                "generation": st.integers(1, 2**31),
            },
            complete=complete,
        )
    )
    document: dict[str, Any] = {"metadata": metadata, "spec": spec}
    if draw(st.booleans()):
        document = {"apiVersion": "torchrollout.io/v1alpha1", "kind": "ModelDeployment", **document}
    return document


# -- walking and changing a document --------------------------------------------------------


def leaves(value: Any, path: Path = ()) -> list[Path]:
    """Paths of every value in `value` (containers included), root first."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaves(item, (*path, index))
    return found


def get(document: Any, path: Path) -> Any:
    for part in path:
        document = document[part]
    return document


def replaced(document: Any, path: Path, value: Any) -> Any:
    """A copy of `document` with the value at `path` (not the root) replaced."""
    out = copy.deepcopy(document)
    get(out, path[:-1])[path[-1]] = value
    return out


def without(document: Any, path: Path) -> Any:
    """A copy of `document` without the key or item at `path` (not the root)."""
    out = copy.deepcopy(document)
    del get(out, path[:-1])[path[-1]]
    return out


# Mappings whose keys are fields of a spec model (not free-form like config or podLabels).
MODEL_MAPPINGS = (
    (),
    ("spec",),
    ("spec", "model"),
    ("spec", "model", "source"),
    ("spec", "model", "batching"),
    ("spec", "runtime"),
    ("spec", "archive"),
    ("spec", "traffic"),
    ("spec", "traffic", "gatewayRef"),
    ("spec", "canary"),
    ("spec", "canary", "analysis"),
    ("spec", "canary", "evaluation"),
    ("spec", "canary", "mirror"),
    ("spec", "autoscaling"),
)


# Lists whose items are spec models.
LISTS_OF_MODELS = (
    ("spec", "canary", "analysis", "metrics"),
    ("spec", "canary", "match"),
    ("spec", "notifications"),
    ("spec", "runtime", "env"),
)


def model_mappings(document: dict[str, Any]) -> list[Path]:
    """Paths of the mappings in `document` that hold a spec model's fields."""
    found = [p for p in MODEL_MAPPINGS if _holds(document, p)]
    for path in LISTS_OF_MODELS:
        if _holds(document, path):
            found += [(*path, k) for k in range(len(get(document, path)))]
    return found


def _holds(document: Any, path: Path) -> bool:
    try:
        return isinstance(get(document, path), dict | list)
    except (KeyError, IndexError, TypeError):
        return False


wrong_types = st.sampled_from([None, True, 7, -1.5, "text", [], {}, [1, "a"], {"x": {"y": 1}}])
out_of_range_numbers = st.sampled_from(
    [-1, 0, -(2**63), 2**63, 10**30, 1e308, -1e308, float("inf"), float("-inf"), float("nan")]
)
unknown_field_names = st.sampled_from(["replica", "Steps", "x-extra", "on", "__class__", ""])


@st.composite
def mutated_documents(draw: st.DrawFn) -> tuple[dict[str, Any], str, Path]:
    """A valid document with one field broken: (document, how, path of the field)."""
    document = draw(valid_documents())
    how = draw(st.sampled_from(["drop", "wrong type", "out of range", "unknown field"]))
    if how == "unknown field":
        at = draw(st.sampled_from(model_mappings(document)))
        name = draw(unknown_field_names.filter(lambda n: n not in get(document, at)))
        return replaced(document, (*at, name), 1), how, (*at, name)
    path = draw(st.sampled_from(leaves(document)[1:]))
    if how == "drop":
        return without(document, path), how, path
    value = draw(out_of_range_numbers if how == "out of range" else wrong_types)
    return replaced(document, path, value), how, path


hostile_strings = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\nb",
            "\r\n",
            "\t",
            "\u202e",
            "\ufeff",
            "🦜",
            "ǅ",
            "İ",
            "$(rm -rf /)",
            "`id`",
            "; ls",
            "a|b&c>d<e",
            "${HOME}",
            "'\"\\",
            "~",
            "null",
            "true",
            "no",
            "on",
            "0x10",
            "1e3",
            "NaN",
            ".inf",
            "2026-01-01",
            "- a",
            "key: value",
            "&anchor",
            "*alias",
            "!!python/object:os.system",
            "{{ revision }}",
            "{{ pod }}",
            "%s%n",
            "../../etc/passwd",
            "a" * 64,
            "9" * 400 + "s",
            "a" * 300,
            "x" * 5000,
            "a-",
            "-a",
            "A",
            "torchrollout.io/revision",
        ]
    ),
    st.text(max_size=80),
    st.text(st.characters(codec="utf-8"), min_size=60, max_size=70),
)


@st.composite
def hostile_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document, often one setting every field, with one to three of its string
    fields or mapping keys made hostile: replaced, or with hostile text inserted."""
    document = draw(valid_documents(complete=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 3))):
        document = _with_hostile_string(document, draw(hostile_strings), draw)
    return document


def _with_hostile_string(document: dict[str, Any], hostile: str, draw: st.DrawFn) -> Any:
    strings = [p for p in leaves(document) if isinstance(get(document, p), str)]
    keys = [p for p in leaves(document)[1:] if isinstance(p[-1], str)]
    if keys and (not strings or draw(st.booleans())):
        path = draw(st.sampled_from(keys))
        parent = get(document, path[:-1])
        renamed = {k: v for k, v in parent.items() if k != path[-1]}
        renamed[hostile] = parent[path[-1]]
        return replaced(document, path[:-1], renamed) if path[:-1] else renamed
    path = draw(st.sampled_from(strings))
    original: str = get(document, path)
    at = draw(st.integers(0, len(original)))
    # The whole value, or the hostile text inside what was there (`pvc://cl;aim/x`).
    value = draw(st.sampled_from([hostile, original[:at] + hostile + original[at:]]))
    return replaced(document, path, value)
