"""Pod settings of `spec.runtime`, named and shaped as in a Kubernetes pod spec.

The renderer copies them into every model pod (and the archive build Job's pod, which needs
the same credentials and placement). Fields whose shape Kubernetes defines in depth
(`affinity`, `valueFrom`, spread constraints' selectors) are kept as written and checked by
the API server when the Deployment is applied; the operator reports its answer in a
condition that names the `spec.runtime` field.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from torchrollout.spec.base import SpecModel, cel, cel_rule

# Kubernetes' own patterns: environment variable names, DNS subdomains, label keys.
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
# Labels the operator selects pods by: a pod label may not replace them.
RESERVED_LABEL_PREFIX = "torchrollout.io/"


class LocalObjectReference(SpecModel):
    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)


class SecretKeySelector(SpecModel):
    """One key of a Secret in the ModelDeployment's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    key: str = Field(min_length=1, max_length=253)


def _cel(rule: str, message: str) -> dict[str, Any]:
    return cel(cel_rule(rule, message))


class EnvVar(
    SpecModel,
    json_schema_extra=_cel(
        "!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both"
    ),
):
    """An environment variable: a value, or `valueFrom` as in a pod spec."""

    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256)
    value: str | None = None
    value_from: dict[str, Any] | None = None
    """secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef, as in a pod spec."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: set value or valueFrom, not both")
        return self


class EnvFromRef(SpecModel):
    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    optional: bool | None = None


class EnvFromSource(
    SpecModel,
    json_schema_extra=_cel(
        "has(self.configMapRef) != has(self.secretRef)",
        "an envFrom entry sets exactly one of configMapRef or secretRef",
    ),
):
    """All keys of a ConfigMap or a Secret as environment variables."""

    config_map_ref: EnvFromRef | None = None
    secret_ref: EnvFromRef | None = None
    prefix: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("an envFrom entry sets exactly one of configMapRef or secretRef")
        return self


class Toleration(
    SpecModel,
    json_schema_extra=_cel(
        "(has(self.key) || (has(self.operator) && self.operator == 'Exists'))"
        " && !(has(self.operator) && self.operator == 'Exists'"
        " && has(self.value) && self.value != '')",
        "a toleration without key needs operator: Exists, which takes no value",
    ),
):
    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without key needs operator: Exists")
        return self


class TopologySpreadConstraint(SpecModel):
    """As in a pod spec; without `labelSelector`, the revision's own pods are spread."""

    max_skew: int = Field(ge=1)
    topology_key: str = Field(min_length=1, max_length=316)
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: dict[str, Any] | None = None
    min_domains: int | None = Field(default=None, ge=1)


class PodSettings(SpecModel):
    """What a pod spec lets a platform team set: credentials, identity, placement, labels."""

    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    """Environment of the model pods and the archive build (e.g. AWS_ENDPOINT_URL)."""
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=32)
    """ConfigMaps and Secrets whose keys become environment variables."""
    service_account_name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253
    )
    """The pods' identity, e.g. bound to a cloud role for s3:// sources (workload identity)."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    affinity: dict[str, Any] | None = None
    """nodeAffinity, podAffinity, podAntiAffinity, as in a pod spec."""
    topology_spread_constraints: list[TopologySpreadConstraint] = Field(
        default_factory=list, max_length=8
    )
    priority_class_name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra=_cel(
            f"self.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}'))",
            f"podLabels: keys under {RESERVED_LABEL_PREFIX} are set by the operator",
        ),
    )
    """Extra labels of the model pods (not torchrollout.io/ ones: the operator selects by them)."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)

    # Checked here, not in the CRD's schema: the pods' labels, node selector and
    # annotations must be what the API server accepts in a Deployment's pod template, or
    # the operator could only report the refusal after the rollout has begun.
    @field_validator("pod_labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(
                    f"{key} is set by the operator; use a key outside {RESERVED_LABEL_PREFIX}"
                )
        return _valid_labels(labels)

    @field_validator("node_selector")
    @classmethod
    def _node_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _valid_labels(labels)

    @field_validator("pod_annotations")
    @classmethod
    def _annotation_keys(cls, annotations: dict[str, str]) -> dict[str, str]:
        for key in annotations:
            if not _is_label_key(key):
                raise ValueError(f"{key!r} is not a valid annotation key: {QUALIFIED_NAME}")
        return annotations


QUALIFIED_NAME = (
    "an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', "
    "alphanumeric at both ends, e.g. example.com/team"
)


def _is_label_key(key: str) -> bool:
    prefix, _, _ = key.rpartition("/")
    return len(prefix) <= 253 and re.fullmatch(LABEL_KEY_PATTERN, key) is not None


def _valid_labels(labels: dict[str, str]) -> dict[str, str]:
    """`labels`, when every key and value is one Kubernetes accepts; else ValueError."""
    for key, value in labels.items():
        if not _is_label_key(key):
            raise ValueError(f"{key!r} is not a valid label key: {QUALIFIED_NAME}")
        if not re.fullmatch(LABEL_VALUE_PATTERN, value):
            raise ValueError(
                f"{value!r} (of {key}) is not a valid label value: at most 63 letters, "
                "digits, '-', '_' or '.', alphanumeric at both ends"
            )
    return labels
