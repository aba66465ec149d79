"""What each built-in metric template means: its unit, direction and default thresholds.

The PromQL behind a template lives in `torchrollout.metrics.templates`; this module holds
only what the spec and the engine need to judge a value, so that neither depends on how
it is queried. `ResolvedCheck` is a check with every default filled in. `ModelHeads` is what
a handler config says about the heads of a multi-output model, which checks may name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Template(StrEnum):
    """Built-in checks, named as users write them in `template:`."""

    ACCURACY = "accuracy"
    LATENCY_P99 = "latency-p99"
    LATENCY_MEAN = "latency-mean"
    ERROR_RATE = "error-rate"
    MEAN_ABSOLUTE_ERROR = "mean-absolute-error"
    LATENCY_DISTRIBUTION = "latency-distribution"


@dataclass(frozen=True)
class TemplateInfo:
    unit: str
    fraction: bool  # values lie in [0, 1]
    default_min: float | None = None
    default_max: float | None = None


TEMPLATES: dict[Template, TemplateInfo] = {
    # Defaults are the monitoring thresholds of the platforms torchrollout serves:
    # accuracy >= 0.85, latency <= 500 ms, error rate <= 5%.
    Template.ACCURACY: TemplateInfo(unit="ratio", fraction=True, default_min=0.85),
    Template.LATENCY_P99: TemplateInfo(unit="ms", fraction=False, default_max=500.0),
    Template.LATENCY_MEAN: TemplateInfo(unit="ms", fraction=False, default_max=500.0),
    Template.ERROR_RATE: TemplateInfo(unit="ratio", fraction=True, default_max=0.05),
    Template.MEAN_ABSOLUTE_ERROR: TemplateInfo(unit="label units", fraction=False),
    # Judged on the whole distribution (see DISTRIBUTION_TEMPLATES); the values shown are
    # the two revisions' median latencies.
    Template.LATENCY_DISTRIBUTION: TemplateInfo(unit="ms", fraction=False),
}

LATENCY_TEMPLATES = frozenset({Template.LATENCY_P99, Template.LATENCY_MEAN})
# Templates that compare the canary's distribution with the stable's (a one-sided
# Mann-Whitney test with an effect-size floor) instead of a value with thresholds.
DISTRIBUTION_TEMPLATES = frozenset({Template.LATENCY_DISTRIBUTION})
# Fails only when the slowdown is significant at this confidence...
DEFAULT_CONFIDENCE = 0.95
# ...and P(a canary request is slower than a stable one) reaches this: Vargha and
# Delaney's "small" effect (0.5 is no difference, 0.64 medium, 0.71 large).
DEFAULT_MIN_EFFECT = 0.56
# Templates measured per head of a multi-output model as well as on the whole model.
HEAD_TEMPLATES = frozenset({Template.ACCURACY, Template.MEAN_ABSOLUTE_ERROR})
# A head name is a value of the handlers' `Head` metric dimension, written into a log line
# TorchServe parses and into a PromQL string: an identifier. The handlers accept the same
# names (model-handlers/torchrollout_models.py, HEAD_PATTERN). RE2-compatible.
HEAD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
QUERY_VARIABLES = frozenset({"namespace", "name", "revision", "version", "interval"})
# RE2-compatible, so the CRD's CEL rules use the same patterns.
VARIABLE_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
VARIABLE_PATTERN = r"\{\{\s*(" + VARIABLE_NAME_PATTERN + r")\s*\}\}"
_VARIABLE = re.compile(VARIABLE_PATTERN)


def query_variables(query: str) -> set[str]:
    """The `{{ variable }}` names used in a custom PromQL query."""
    return set(_VARIABLE.findall(query))


def render_query(query: str, values: dict[str, str]) -> str:
    """`query` with each `{{ variable }}` replaced; unknown names are left for the caller."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), query)


@dataclass(frozen=True)
class ResolvedCheck:
    """A check with its name, thresholds and sample floor decided."""

    name: str
    template: Template | None
    query: str | None
    min: float | None
    max: float | None
    max_drop_vs_stable: float | None
    max_ratio_vs_stable: float | None
    min_samples: int
    head: str | None = None  # one head of a multi-output model; None: the whole model
    # Distribution templates only: the confidence a slowdown must reach, and the smallest
    # P(canary slower) that fails the canary.
    confidence: float | None = None
    min_effect: float | None = None
    # One Failed tick rolls back at once; watched between ticks (engine.fast).
    critical: bool = False

    @property
    def compares_distributions(self) -> bool:
        return self.template in DISTRIBUTION_TEMPLATES

    @property
    def compares_with_stable(self) -> bool:
        return (
            self.max_drop_vs_stable is not None
            or self.max_ratio_vs_stable is not None
            or self.compares_distributions
        )

    @property
    def unit(self) -> str:
        return TEMPLATES[self.template].unit if self.template else ""

    def describe_threshold(self) -> str:
        """The thresholds as one line, e.g. `>= 0.85, >= stable - 0.02`: what passes."""
        if self.compares_distributions:
            confidence = DEFAULT_CONFIDENCE if self.confidence is None else self.confidence
            effect = DEFAULT_MIN_EFFECT if self.min_effect is None else self.min_effect
            return f"P(canary slower) < {effect:g} or p >= {1 - confidence:.2g}"
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.max_drop_vs_stable is not None:
            parts.append(f">= stable - {self.max_drop_vs_stable:g}")
        if self.max_ratio_vs_stable is not None:
            parts.append(f"<= stable x {self.max_ratio_vs_stable:g}")
        return ", ".join(parts)


def _names(config: Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key)
    return [str(name) for name in value] if isinstance(value, Mapping | list) else []


@dataclass(frozen=True)
class ModelHeads:
    """The heads a multi-output model's handler config declares, by kind."""

    classification: tuple[str, ...]
    regression: tuple[str, ...]

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> ModelHeads | None:
        """From `architecture.heads` / `architecture.regression_heads` (or `targets`, the
        classification heads of TorchScript / export weights); None when none are declared."""
        arch = config.get("architecture")
        arch = arch if isinstance(arch, Mapping) else {}
        regression = _names(arch, "regression_heads")
        declared = _names(arch, "heads") or _names(config, "targets")
        classification = [h for h in declared if h not in regression]
        if not classification and not regression:
            return None
        return cls(tuple(classification), tuple(regression))

    def describe(self) -> str:
        kinds = {"classification": self.classification, "regression": self.regression}
        return "; ".join(f"{', '.join(names)} ({kind})" for kind, names in kinds.items() if names)

    def problem(self, template: Template | None, head: str) -> str | None:
        """Why a check of `template` cannot judge `head` of this model; None when it can."""
        if head not in self.classification and head not in self.regression:
            return f"the model has no head {head!r}; its heads: {self.describe()}"
        if template == Template.ACCURACY and head in self.regression:
            return (
                f"{head!r} is a regression head: accuracy judges a classification head "
                f"({', '.join(self.classification) or 'the model has none'}); "
                "use mean-absolute-error"
            )
        if template == Template.MEAN_ABSOLUTE_ERROR and head in self.classification:
            return (
                f"{head!r} is a classification head: mean-absolute-error judges a regression "
                f"head ({', '.join(self.regression) or 'the model has none'}); use accuracy"
            )
        return None
