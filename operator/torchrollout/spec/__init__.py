"""The ModelDeployment resource: spec and status models, loading, revisions, the CRD.

This is the bottom layer of torchrollout: pure data and validation, importing nothing
from Kubernetes, HTTP or the clock.
"""

from __future__ import annotations

from torchrollout.spec.checks import ResolvedCheck, Template
from torchrollout.spec.document import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ModelDeployment,
    ObjectMeta,
    compute_revision,
    load_model_deployment,
    parse_model_deployment,
)
from torchrollout.spec.durations import format_duration, parse_duration
from torchrollout.spec.resource import BUILTIN_HANDLERS, MetricCheck, ModelDeploymentSpec
from torchrollout.spec.status import (
    AnalysisStatus,
    CheckStatus,
    Condition,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    Verdict,
)

__all__ = [
    "API_VERSION",
    "BUILTIN_HANDLERS",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "AnalysisStatus",
    "CheckStatus",
    "Condition",
    "HistoryEntry",
    "MetricCheck",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ObjectMeta",
    "Phase",
    "ResolvedCheck",
    "Template",
    "Verdict",
    "compute_revision",
    "format_duration",
    "load_model_deployment",
    "parse_duration",
    "parse_model_deployment",
]
