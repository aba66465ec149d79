"""The operator's own Prometheus metrics (prometheus-client), on a registry of its own.

torchrollout_rollouts_total{outcome}              promoted / rolled_back /
                                                  instant_rollback_warm / instant_rollback_cold
torchrollout_canary_weight{namespace, name}       the weight the router achieved
torchrollout_check_verdicts_total{check, verdict} every check of every tick
torchrollout_tick_duration_seconds                measuring one analysis tick
torchrollout_reconcile_errors_total{kind}         failed reconciliations, by cause
torchrollout_replicas{namespace, name, role, state} each revision's replicas: desired, ready
torchrollout_scaling_actions_total{direction}     the autoscaler's changes: up / down
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from torchrollout.engine import Decision, Event
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.status import Phase


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rollouts = Counter(
            "torchrollout_rollouts",
            "Rollouts finished, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.canary_weight = Gauge(
            "torchrollout_canary_weight",
            "Percent of traffic the canary receives, as the router achieved it.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.check_verdicts = Counter(
            "torchrollout_check_verdicts",
            "Analysis check results.",
            ["check", "verdict"],
            registry=self.registry,
        )
        self.tick_duration = Histogram(
            "torchrollout_tick_duration_seconds",
            "Time to measure one analysis tick.",
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "torchrollout_reconcile_errors",
            "Failed reconciliations.",
            ["kind"],
            registry=self.registry,
        )
        self.replicas = Gauge(
            "torchrollout_replicas",
            "Replicas of the stable and canary revisions, desired and ready.",
            ["namespace", "name", "role", "state"],
            registry=self.registry,
        )
        self.scaling_actions = Counter(
            "torchrollout_scaling_actions",
            "Replica changes the operator's autoscaler made.",
            ["direction"],
            registry=self.registry,
        )

    def record(self, decision: Decision) -> None:
        """Count what a decision concluded."""
        for check in decision.checks:
            self.check_verdicts.labels(check.name, str(check.verdict)).inc()
        reasons = {e.reason for e in decision.events}
        if Phase.ROLLED_BACK in decision.transitions:
            self.rollouts.labels("rolled_back").inc()
        if "Promoted" in reasons:
            # A revert inside rollbackWindow is warm when the previous stable still had its
            # replicas (traffic moved in that decision), cold when its pods had to start.
            how = decision.status.history[-1].instant_rollback
            self.rollouts.labels(f"instant_rollback_{how}" if how else "promoted").inc()

    def record_scaling(self, md: ModelDeployment, events: list[Event]) -> None:
        """Each revision's desired and ready replicas, and the scaling actions taken."""
        meta = md.metadata
        for role in ("stable", "canary"):
            record = next((r for r in md.status.scaling if r.role == role), None)
            for state in ("desired", "ready"):
                value = getattr(record, state) if record is not None else 0
                self.replicas.labels(meta.namespace, meta.name, role, state).set(value)
        for event in events:
            if event.reason in {"ScaledUp", "ScaledDown"}:
                self.scaling_actions.labels(event.reason.removeprefix("Scaled").lower()).inc()
