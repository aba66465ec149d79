"""The ModelDeployment spec as pydantic models: defaults, validation, documentation.

These models are the one definition of the resource. The CRD in `crds/` is generated
from them (`torchrollout.spec.crd`), the operator and `rehearse` parse resources with
them, and their validators are mirrored as CEL rules in the CRD where CEL can say the
same thing. Field names are the YAML's (camelCase); Python code uses snake_case.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from torchrollout.spec.base import FieldValueError, SpecModel, cel, cel_rule, cel_strings
from torchrollout.spec.checks import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_EFFECT,
    DISTRIBUTION_TEMPLATES,
    HEAD_PATTERN,
    HEAD_TEMPLATES,
    LATENCY_TEMPLATES,
    QUERY_VARIABLES,
    TEMPLATES,
    VARIABLE_NAME_PATTERN,
    VARIABLE_PATTERN,
    ModelHeads,
    ResolvedCheck,
    Template,
    query_variables,
)
from torchrollout.spec.durations import DURATION_PATTERN, parse_duration
from torchrollout.spec.notifications import NotificationTarget
from torchrollout.spec.pod import PodSettings, SecretKeySelector
from torchrollout.spec.scaling import AutoscalingSpec
from torchrollout.spec.traffic import (
    ROUTING_RULES,
    MirrorSpec,
    RequestMatch,
    TrafficSpec,
    routing_problem,
)

BUILTIN_HANDLERS = (
    "sequence-classifier",
    "sequence-regressor",
    "transformer-classifier",
    "cnn1d-classifier",
    "graph-classifier",
    "mlp-policy",
    "lstm-autoencoder-anomaly",
)
SOURCE_URI_PATTERN = r"^((https?|s3|pvc|file)://\S+|/\S*)$"
HANDLER_PATTERN = r"^(" + "|".join(BUILTIN_HANDLERS) + r"|(https?|s3|pvc|file)://\S+\.py|/\S+\.py)$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"
# Versions become label values: at most 63 characters, alphanumeric at both ends.
VERSION_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
CHECK_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# Kubernetes quantities, e.g. 500m, 1Gi, 2.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


# A pvc:// URI names a PersistentVolumeClaim of the namespace, which the pods mount.
PVC_CLAIM_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def pvc_claim_problem(uri: str) -> str | None:
    """Why the claim of a pvc://CLAIM/path URI cannot be mounted; None when it can (or when
    `uri` is not a pvc:// one). Checked by the models only: the CRD's schema stays as is."""
    if not uri.startswith("pvc://"):
        return None
    claim = uri.removeprefix("pvc://").partition("/")[0]
    if len(claim) <= 253 and re.fullmatch(PVC_CLAIM_PATTERN, claim):
        return None
    return (
        f"{claim!r} in {uri} is not a PersistentVolumeClaim name: lowercase letters, digits, "
        "'-' and '.', alphanumeric at both ends, at most 253 characters"
    )


def _token_for_https(uri_field: str) -> dict[str, Any]:
    return cel(
        cel_rule(
            f"!has(self.tokenSecretRef) || self.{uri_field}.startsWith('https://')",
            "tokenSecretRef is for https:// sources",
            field_path=".tokenSecretRef",
        )
    )


class ModelSource(SpecModel, json_schema_extra=_token_for_https("uri")):
    """Where the model's weights are, and their digest."""

    uri: str = Field(pattern=SOURCE_URI_PATTERN, max_length=2048)
    """https://, s3://bucket/key, pvc://claim/path, file:///path or an absolute path."""
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    """Hex sha256 of the weights file; the archive build refuses a file that differs."""
    token_secret_ref: SecretKeySelector | None = None
    """For https:// sources: a Secret key holding a bearer token sent with the download."""

    @field_validator("uri")
    @classmethod
    def _mountable_claim(cls, uri: str) -> str:
        problem = pvc_claim_problem(uri)
        if problem:
            raise ValueError(problem)
        return uri

    @model_validator(mode="after")
    def _token_for_https(self) -> Self:
        if self.token_secret_ref is not None and not self.uri.startswith("https://"):
            raise ValueError("tokenSecretRef is for https:// sources")
        return self


class Batching(SpecModel):
    """TorchServe server-side batching."""

    max_batch_size: int = Field(default=8, ge=1, le=512)
    """Requests TorchServe groups into one forward pass."""
    max_batch_delay_ms: int = Field(default=1, ge=0, le=10_000)
    """How long TorchServe waits to fill a batch. At low load a batch never fills and every
    request waits this long: 1 ms keeps the throughput of 5 ms (bench/serving.py) at 4 ms
    less latency."""


class ModelSpec(SpecModel):
    """The model: what to serve and how to build its archive."""

    name: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)
    """TorchServe model name; defaults to metadata.name."""
    version: str = Field(pattern=VERSION_PATTERN)
    """The model's version; changing it (with new weights) starts a canary."""
    source: ModelSource
    handler: str = Field(pattern=HANDLER_PATTERN, max_length=2048)
    """A built-in handler name, or the URI of a custom handler module (a .py file)."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Handler and architecture parameters, packed into the archive."""
    sample_input: Any = None
    """A request body run through the archive before it gets traffic."""
    batching: Batching = Field(default_factory=Batching)

    @field_validator("handler", mode="before")
    @classmethod
    def _known_handler(cls, handler: object) -> object:
        if isinstance(handler, str) and not re.fullmatch(HANDLER_PATTERN, handler):
            raise ValueError(
                f"unknown handler {handler!r}; use one of {', '.join(BUILTIN_HANDLERS)}, "
                "or the URI of a custom handler module ending in .py"
            )
        return handler


class ResourceList(SpecModel):
    requests: dict[str, Annotated[str, Field(pattern=QUANTITY_PATTERN)]] = Field(
        default_factory=lambda: {"cpu": "500m", "memory": "1Gi"}
    )
    limits: dict[str, Annotated[str, Field(pattern=QUANTITY_PATTERN)]] = Field(
        default_factory=lambda: {"memory": "2Gi"}
    )


class RuntimeSpec(PodSettings):
    """How the TorchServe pods run, and where: the pod settings are named as in a pod spec."""

    image: str = Field(default="torchrollout/torchserve:0.1.0", min_length=1)
    """Image with TorchServe, the handlers and the torchrollout archive builder."""
    replicas: int = Field(default=1, ge=1, le=1000)
    """Replicas of the stable revision when autoscaling is off."""
    workers_per_replica: int = Field(default=1, ge=1, le=64)
    """TorchServe workers per pod."""
    resources: ResourceList = Field(default_factory=ResourceList)
    gpus: int = Field(default=0, ge=0, le=16)
    """GPUs per pod: an nvidia.com/gpu limit, and TorchServe's number_of_gpu."""


# The API server refuses a CRD whose rules it estimates too costly for the longest values
# the schema allows (a 4096-character query, 32 checks). Counting the variables and the
# known ones is cheap enough; listing the unknown ones only fits in a message that names
# the first. string() of a number has no size bound, so no message may print one.
_LATENCY = cel_strings(LATENCY_TEMPLATES)
_FRACTIONS = cel_strings(t for t, info in TEMPLATES.items() if info.fraction)
_KNOWN_VARIABLE_PATTERN = VARIABLE_PATTERN.replace(
    VARIABLE_NAME_PATTERN, "|".join(sorted(QUERY_VARIABLES))
)
_UNKNOWN_VARIABLES = (
    f"self.query.findAll(r'{VARIABLE_PATTERN}')"
    f".map(v, v.find(r'{VARIABLE_NAME_PATTERN}'))"
    f".filter(n, !(n in {cel_strings(QUERY_VARIABLES)}))"
)
_OUT_OF_UNIT = "(self.{0} < 0.0 || self.{0} > 1.0)"
_HEADS = cel_strings(HEAD_TEMPLATES)
HEAD_MESSAGE = "head is for the templates accuracy and mean-absolute-error"
_DISTRIBUTIONS = cel_strings(DISTRIBUTION_TEMPLATES)
DISTRIBUTION_FIELDS_MESSAGE = "{} is for the template latency-distribution"
DISTRIBUTION_THRESHOLDS_MESSAGE = (
    "latency-distribution compares the canary's latencies with the stable's: set confidence "
    "and minEffect, not min, max, maxMs, maxDropVsStable or maxRatioVsStable"
)
CONFIDENCE_MESSAGE = (
    "confidence must lie in [0.5, 1), e.g. 0.95: the canary fails only on a slowdown "
    "significant at this level"
)
_ABSOLUTE_DEFAULTS = cel_strings(
    t
    for t, info in TEMPLATES.items()
    if info.default_min is not None or info.default_max is not None
)
CRITICAL_MESSAGE = (
    "critical needs a min or max of the check's own: a check that only compares with the "
    "stable (or a distribution) is judged each interval; drop critical or add min or max"
)
MIN_EFFECT_MESSAGE = (
    "minEffect is P(canary slower) and must lie in [0.5, 1]: 0.5 fails on any significant "
    "slowdown, 0.56 (the default) on a small one, 0.64 on a medium one"
)


class MetricCheck(
    SpecModel,
    json_schema_extra=cel(
        cel_rule(
            "has(self.template) != has(self.query)",
            "a check sets exactly one of template or query",
        ),
        cel_rule(
            "has(self.template) || has(self.name)",
            "a query check needs a name, e.g. name: my-check",
            field_path=".name",
            reason="FieldValueRequired",
        ),
        cel_rule(
            f"!has(self.query) || size(self.query.findAll(r'{VARIABLE_PATTERN}'))"
            f" == size(self.query.findAll(r'{_KNOWN_VARIABLE_PATTERN}'))",
            f"query uses unknown variables; known: {', '.join(sorted(QUERY_VARIABLES))}",
            message_expression=f'"query uses unknown variables [\'" + {_UNKNOWN_VARIABLES}[0]'
            f' + (size({_UNKNOWN_VARIABLES}) > 1 ? "\', ...]" : "\']")'
            f" + '; known: {', '.join(sorted(QUERY_VARIABLES))}'",
            field_path=".query",
        ),
        cel_rule(
            f"!has(self.maxMs) || (has(self.template) && self.template in {_LATENCY})",
            "maxMs is for latency templates; use max for this check",
            field_path=".maxMs",
        ),
        cel_rule("!(has(self.max) && has(self.maxMs))", "set max or maxMs, not both"),
        cel_rule(
            f"!has(self.template) || !(self.template in {_FRACTIONS})"
            f" || !((has(self.min) && {_OUT_OF_UNIT.format('min')})"
            f" || (has(self.max) && {_OUT_OF_UNIT.format('max')}))",
            "min and max of this template are fractions in [0, 1]",
            message_expression=f"(has(self.min) && {_OUT_OF_UNIT.format('min')} ? 'min' : 'max')"
            " + ' of ' + self.template + ' is a fraction in [0, 1]'",
        ),
        cel_rule(
            "!has(self.min) || ((!has(self.max) || self.min <= self.max)"
            " && (!has(self.maxMs) || self.min <= self.maxMs))",
            "min exceeds max (or maxMs): no value could pass this check",
        ),
        cel_rule(
            "!has(self.query) || has(self.min) || has(self.max) || has(self.maxMs)"
            " || has(self.maxDropVsStable) || has(self.maxRatioVsStable)",
            "a query check needs a threshold: min, max, maxDropVsStable or maxRatioVsStable",
        ),
        cel_rule(
            f"!has(self.head) || (has(self.template) && self.template in {_HEADS})",
            HEAD_MESSAGE,
            field_path=".head",
        ),
        *(
            cel_rule(
                f"!has(self.{field}) || (has(self.template) && self.template in {_DISTRIBUTIONS})",
                DISTRIBUTION_FIELDS_MESSAGE.format(field),
                field_path=f".{field}",
            )
            for field in ("confidence", "minEffect")
        ),
        cel_rule(
            f"!has(self.template) || !(self.template in {_DISTRIBUTIONS})"
            " || !(has(self.min) || has(self.max) || has(self.maxMs)"
            " || has(self.maxDropVsStable) || has(self.maxRatioVsStable))",
            DISTRIBUTION_THRESHOLDS_MESSAGE,
        ),
        cel_rule(
            "!has(self.critical) || !self.critical || has(self.min) || has(self.max)"
            " || has(self.maxMs) || (has(self.template) && self.template in "
            f"{_ABSOLUTE_DEFAULTS} && !has(self.maxDropVsStable) && !has(self.maxRatioVsStable))",
            CRITICAL_MESSAGE,
            field_path=".critical",
        ),
    ),
):
    """One analysis check: a built-in template or a PromQL query, with thresholds."""

    name: str | None = Field(default=None, pattern=CHECK_NAME_PATTERN, max_length=63)
    """Defaults to the template's name; required for a query."""
    # maxLength bounds the cost the API server estimates for the CEL rules on names.
    template: Template | None = Field(default=None, json_schema_extra={"maxLength": 32})
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    """PromQL returning one series; may use {{ namespace }} {{ name }} {{ revision }}
    {{ version }} {{ interval }}."""
    min: float | None = None
    """The canary fails below this (in the check's unit)."""
    max: float | None = None
    """The canary fails above this (in the check's unit; milliseconds for latency)."""
    max_ms: float | None = Field(default=None, gt=0)
    """Spelling of max for latency templates, in milliseconds."""
    max_drop_vs_stable: float | None = Field(default=None, ge=0)
    """The canary fails when it is lower than stable by more than this."""
    max_ratio_vs_stable: float | None = Field(default=None, ge=1)
    """The canary fails when it exceeds stable times this."""
    min_samples: int | None = Field(default=None, ge=0)
    """Overrides analysis.minSamples for this check."""
    head: str | None = Field(default=None, pattern=HEAD_PATTERN, max_length=63)
    """One head of a multi-output model (accuracy: a classification head, mean-absolute-error:
    a regression head); the default name becomes <template>-<head>."""
    confidence: float | None = Field(
        default=None,
        json_schema_extra=cel(cel_rule("self >= 0.5 && self < 1.0", CONFIDENCE_MESSAGE)),
    )
    """latency-distribution: the canary fails only when it is slower with this confidence
    (one-sided Mann-Whitney test, p < 1 - confidence). Default 0.95."""
    min_effect: float | None = Field(
        default=None,
        json_schema_extra=cel(cel_rule("self >= 0.5 && self <= 1.0", MIN_EFFECT_MESSAGE)),
    )
    """latency-distribution: ...and only when P(a canary request is slower than a stable one)
    is at least this, so a negligible slowdown on a huge sample passes. Default 0.56."""
    critical: bool | None = None
    """One Failed tick rolls back at once, without waiting for failureLimit; error-rate and
    accuracy are also watched every fastInterval between ticks. Default: true for
    error-rate, false otherwise. Needs a min or max of the check's own."""

    @field_validator("confidence")
    @classmethod
    def _confidence_in_range(cls, confidence: float | None) -> float | None:
        if confidence is not None and not 0.5 <= confidence < 1:
            raise ValueError(CONFIDENCE_MESSAGE)
        return confidence

    @field_validator("min_effect")
    @classmethod
    def _min_effect_in_range(cls, effect: float | None) -> float | None:
        if effect is not None and not 0.5 <= effect <= 1:
            raise ValueError(MIN_EFFECT_MESSAGE)
        return effect

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if (self.template is None) == (self.query is None):
            raise ValueError("set exactly one of template (a built-in check) or query (PromQL)")
        if self.head is not None and self.template not in HEAD_TEMPLATES:
            raise ValueError(HEAD_MESSAGE)
        if self.template in DISTRIBUTION_TEMPLATES:
            if self._has_threshold():
                raise ValueError(DISTRIBUTION_THRESHOLDS_MESSAGE)
        else:
            for label, value in (("confidence", self.confidence), ("minEffect", self.min_effect)):
                if value is not None:
                    raise ValueError(DISTRIBUTION_FIELDS_MESSAGE.format(label))
        if self.query is not None:
            if self.name is None:
                raise ValueError("a query check needs a name, e.g. name: my-check")
            unknown = query_variables(self.query) - QUERY_VARIABLES
            if unknown:
                known = ", ".join(sorted(QUERY_VARIABLES))
                raise ValueError(f"query uses unknown variables {sorted(unknown)}; known: {known}")
        if self.max_ms is not None:
            if self.template not in LATENCY_TEMPLATES:
                raise ValueError("maxMs is for latency templates; use max for this check")
            if self.max is not None:
                raise ValueError("set max or maxMs, not both")
        if self.template is not None and TEMPLATES[self.template].fraction:
            for label, bound in (("min", self.min), ("max", self.max)):
                if bound is not None and not 0 <= bound <= 1:
                    raise ValueError(f"{label} of {self.template} is a fraction in [0, 1]")
        upper = self.max if self.max is not None else self.max_ms
        if self.min is not None and upper is not None and self.min > upper:
            raise ValueError(f"min ({self.min:g}) exceeds max ({upper:g})")
        if self.query is not None and not self._has_threshold():
            raise ValueError(
                "a query check needs a threshold: min, max, maxDropVsStable or maxRatioVsStable"
            )
        if self.critical and self._absolute_bounds() == (None, None):
            raise FieldValueError("critical", CRITICAL_MESSAGE)
        return self

    def _absolute_bounds(self) -> tuple[float | None, float | None]:
        """The min and max the check is judged by: its own, or its template's defaults."""
        if self.template is not None and not self._has_threshold():
            info = TEMPLATES[self.template]
            return info.default_min, info.default_max
        return self.min, self.max if self.max is not None else self.max_ms

    def _has_threshold(self) -> bool:
        return any(
            v is not None
            for v in (
                self.min,
                self.max,
                self.max_ms,
                self.max_drop_vs_stable,
                self.max_ratio_vs_stable,
            )
        )

    @property
    def check_name(self) -> str:
        if self.name:
            return self.name
        return f"{self.template}-{self.head}" if self.head else str(self.template)

    def resolve(self, default_min_samples: int) -> ResolvedCheck:
        """This check with template defaults applied where the user set no threshold."""
        low, high = self._absolute_bounds()
        critical = self.template == Template.ERROR_RATE if self.critical is None else self.critical
        return ResolvedCheck(
            name=self.check_name,
            template=self.template,
            query=self.query,
            min=low,
            max=high,
            max_drop_vs_stable=self.max_drop_vs_stable,
            max_ratio_vs_stable=self.max_ratio_vs_stable,
            min_samples=default_min_samples if self.min_samples is None else self.min_samples,
            head=self.head,
            critical=critical,
            **self._distribution_settings(),
        )

    def _distribution_settings(self) -> dict[str, float]:
        if self.template not in DISTRIBUTION_TEMPLATES:
            return {}
        return {
            "confidence": DEFAULT_CONFIDENCE if self.confidence is None else self.confidence,
            "min_effect": DEFAULT_MIN_EFFECT if self.min_effect is None else self.min_effect,
        }


def _default_checks() -> list[MetricCheck]:
    return [MetricCheck(template=Template.LATENCY_P99), MetricCheck(template=Template.ERROR_RATE)]


_CHECK_NAME = (
    "(has({0}.name) ? {0}.name : has({0}.template)"
    " ? (has({0}.head) ? {0}.template + '-' + {0}.head : {0}.template) : '')"
)
# A check with neither name nor template is refused by its own rules, not as a duplicate.
_UNIQUE_NAMES = (
    "self.all(x, !(has(x.name) || has(x.template))"
    f" || self.exists_one(y, {_CHECK_NAME.format('y')} == {_CHECK_NAME.format('x')}))"
)


class AnalysisSpec(SpecModel):
    """How each canary step is judged, and what happens when it cannot be."""

    metrics: list[MetricCheck] = Field(
        default_factory=_default_checks,
        min_length=1,
        max_length=32,
        json_schema_extra=cel(
            cel_rule(_UNIQUE_NAMES, "check names must be unique; give each check a name")
        ),
    )
    """Checks run every interval; defaults to latency-p99 <= 500 ms and error-rate <= 5%."""
    min_samples: int = Field(default=50, ge=0)
    """Below this many samples a check is Inconclusive, not Failed."""
    failure_limit: int = Field(default=2, ge=1)
    """Failed ticks (in total, per canary) that roll back."""
    inconclusive_limit: int = Field(default=5, ge=1)
    """Inconclusive ticks (in total, per canary) before onInconclusive applies."""
    consecutive_error_limit: int = Field(default=4, ge=1)
    """Ticks in a row with a metrics backend error before onError applies."""
    on_inconclusive: Literal["rollback", "pause"] = "rollback"
    on_error: Literal["rollback", "pause"] = "rollback"
    catastrophic_error_rate: float = Field(default=0.5, gt=0, le=1)
    """Between ticks, a critical error-rate check at or above this (over fastInterval's
    window, with enough samples) rolls back at once. A critical accuracy check does so
    below its minimum minus 0.5."""

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, checks: list[MetricCheck]) -> list[MetricCheck]:
        names = [c.check_name for c in checks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"check names must be unique; give each a name: {duplicates}")
        return checks

    def resolved_checks(self) -> list[ResolvedCheck]:
        return [c.resolve(self.min_samples) for c in self.metrics]


PVC_EVALUATION = (
    "datasetUri: the operator reads the evaluation data itself and cannot mount a claim of "
    "your namespace; use s3:// or https:// (file:// works in a rehearsal)"
)


class EvaluationSpec(
    SpecModel,
    json_schema_extra=cel(
        cel_rule("!self.datasetUri.startsWith('pvc://')", PVC_EVALUATION, field_path=".datasetUri")
    ),
):
    """Labeled traffic sent to both revisions each tick, so accuracy can be measured."""

    dataset_uri: str = Field(pattern=SOURCE_URI_PATTERN, max_length=2048)
    """JSON lines, one request body with a `label` per line: https://, s3:// or file://.
    The operator reads it with its own credentials (the chart's evaluation settings)."""
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    """Hex sha256 of the dataset file; a dataset that differs is not used."""
    samples_per_tick: int = Field(default=100, ge=1, le=100_000)

    @model_validator(mode="after")
    def _reachable_by_the_operator(self) -> Self:
        if self.dataset_uri.startswith("pvc://"):
            raise ValueError(PVC_EVALUATION)
        return self


def _default_steps() -> list[int]:
    return [1, 10, 25, 50]


_DURATION = f"r'{DURATION_PATTERN}'"
DEFAULT_FAST_INTERVAL_SECONDS = 2.0


class CanarySpec(
    SpecModel,
    json_schema_extra=cel(
        cel_rule(
            f"!has(self.fastInterval) || !self.fastInterval.matches({_DURATION})"
            " || (duration(self.fastInterval) >= duration('1s')"
            f" && (!has(self.interval) || !self.interval.matches({_DURATION})"
            " || duration(self.fastInterval) <= duration(self.interval)))",
            "fastInterval must lie between 1s and interval; set it to at least Prometheus' "
            "scrape interval",
            field_path=".fastInterval",
        )
    ),
):
    """The rollout policy for a new revision."""

    steps: list[Annotated[int, Field(gt=0, lt=100)]] = Field(
        default_factory=_default_steps,
        min_length=1,
        max_length=20,
        json_schema_extra=cel(
            cel_rule(
                "self.isSorted() && self.all(x, self.indexOf(x) == self.lastIndexOf(x))",
                "steps must increase strictly",
            )
        ),
    )
    """Percent of traffic for the canary at each step, strictly increasing in (0, 100)."""
    interval: str = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        json_schema_extra=cel(
            cel_rule(
                f"!self.matches(r'{DURATION_PATTERN}')"
                " || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))",
                "interval must lie between 1s and 24h",
                message_expression="'interval ' + self + ' must lie between 1s and 24h'",
            )
        ),
    )
    """One analysis tick, e.g. 30s or 2m."""
    fast_interval: str | None = Field(default=None, pattern=DURATION_PATTERN)
    """How often critical checks are watched between ticks while the canary has traffic,
    over a window of twice this; between 1s (at least Prometheus' scrape interval) and
    interval. Default 2s, or interval when that is shorter."""
    progress_deadline_seconds: int = Field(default=300, ge=1)
    """The canary must be Ready within this, or it is rolled back."""
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    evaluation: EvaluationSpec | None = None
    match: list[RequestMatch] = Field(default_factory=list, max_length=8)
    """A/B by request: requests matching any entry go to the canary whatever its weight
    (routers gateway-api, istio, nginx); analysis is unchanged."""
    mirror: MirrorSpec | None = None
    """Shadow: the router copies percent of traffic to the canary and discards its answers;
    the canary answers no user until it is promoted (routers gateway-api, istio)."""
    rollback_window: int = Field(default=3, ge=0, le=20)
    """Previously promoted versions that a revert switches back to without analysis."""
    scale_down_delay_seconds: int = Field(default=30, ge=0, le=86_400)
    """Seconds the previous stable keeps its replicas after a promotion (no traffic reaches
    it), so that a revert moves traffic back in one reconcile; then it is scaled to zero and
    a revert waits for its pods. 0 scales it down at once. A new canary ends it early."""

    @field_validator("steps")
    @classmethod
    def _strictly_increasing(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must increase strictly, e.g. [1, 10, 25, 50]; got {steps}")
        return steps

    @field_validator("interval")
    @classmethod
    def _sane_interval(cls, interval: str) -> str:
        if not 1 <= parse_duration(interval) <= 86_400:
            raise ValueError(f"interval {interval} must lie between 1s and 24h")
        return interval

    @field_validator("fast_interval")
    @classmethod
    def _fast_interval_at_least_a_second(cls, fast: str | None) -> str | None:
        if fast is not None and parse_duration(fast) < 1:
            raise ValueError(
                f"fastInterval {fast} must lie between 1s and interval; set it to at least "
                "Prometheus' scrape interval"
            )
        return fast

    @model_validator(mode="after")
    def _fast_interval_within_interval(self) -> Self:
        if self.fast_interval is None:
            return self
        if parse_duration(self.fast_interval) > self.interval_seconds:
            raise FieldValueError(
                "fastInterval",
                f"fastInterval {self.fast_interval} must lie between 1s and interval "
                f"({self.interval}); set it to at least Prometheus' scrape interval",
            )
        return self

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    @property
    def fast_interval_seconds(self) -> float:
        if self.fast_interval is None:
            return min(DEFAULT_FAST_INTERVAL_SECONDS, self.interval_seconds)
        return parse_duration(self.fast_interval)


STORE_URI_PATTERN = r"^(s3|pvc)://[^/\s]+(/\S*)?$"


class ArchiveSpec(SpecModel):
    """Where the archive of each revision is kept once built."""

    store: str | None = Field(default=None, pattern=STORE_URI_PATTERN, max_length=1024)
    """s3://bucket/prefix or pvc://claim/path: one build Job per revision writes the archive
    and its sha256 there, and model pods only fetch and verify it. Without a store (and no
    operator-wide default), each pod builds the archive in its init container."""

    @field_validator("store")
    @classmethod
    def _mountable_claim(cls, store: str | None) -> str | None:
        problem = pvc_claim_problem(store) if store is not None else None
        if problem:
            raise ValueError(problem)
        return store


class ModelDeploymentSpec(SpecModel, json_schema_extra=cel(*ROUTING_RULES)):
    """A PyTorch model served by TorchServe, and the policy that rolls out new versions."""

    model: ModelSpec
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    archive: ArchiveSpec = Field(default_factory=ArchiveSpec)
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    canary: CanarySpec = Field(default_factory=CanarySpec)
    autoscaling: AutoscalingSpec | None = None
    notifications: list[NotificationTarget] = Field(default_factory=list, max_length=8)
    paused: bool = False
    """Hold the rollout where it is: no analysis, no step, no promotion."""

    @model_validator(mode="after")
    def _routing_the_router_can_do(self) -> Self:
        problem = routing_problem(self.traffic.router, self.canary.match, self.canary.mirror)
        if problem is not None:
            raise problem
        return self

    @model_validator(mode="after")
    def _checks_name_heads_the_model_has(self) -> Self:
        # Not in the CRD: CEL cannot read the free-form model.config.
        heads = ModelHeads.of_config(self.model.config)
        for k, check in enumerate(self.canary.analysis.metrics):
            problem = heads and check.head and heads.problem(check.template, check.head)
            if problem:
                raise ValueError(f"canary.analysis.metrics[{k}].head: {problem}")
        return self
