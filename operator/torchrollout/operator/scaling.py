"""Replicas per revision: what each has, what it should have, and (engine prometheus) the
operator's own scaling on a load signal.

Every reconciliation reports the stable and the canary revision in `status.scaling`. With
`autoscaling.engine: prometheus` each revision's signal is read once per
`autoscaling.interval` and `torchrollout.engine.scaling.scale` decides its replicas; the
stable revision gets them, and the canary gets at least its share of the stable's (while it
has traffic, it also follows its own signal). A signal that cannot be read holds the replicas
and says why (`AutoscalerReady=False`, reason SignalUnavailable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from torchrollout.engine import Event
from torchrollout.engine.scaling import scale
from torchrollout.metrics import MetricProvider, Target
from torchrollout.operator.routers import Workload
from torchrollout.render import canary_replicas
from torchrollout.render.scaling import signal_query
from torchrollout.spec.checks import ResolvedCheck
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.status import Condition, RevisionScaling

SIGNAL = "autoscaling-signal"  # the name the signal is measured under


@dataclass
class ScalingStep:
    """What one reconciliation's autoscaling did: the records, and what to tell."""

    records: list[RevisionScaling]
    events: list[Event] = field(default_factory=list)
    condition: Condition | None = None


def _roles(md: ModelDeployment) -> list[tuple[str, str]]:
    status = md.status
    roles = [("stable", status.stable_revision)] if status.stable_revision else []
    if status.canary_active and status.canary_revision:
        roles.append(("canary", status.canary_revision))
    return [(role, revision) for role, revision in roles if revision]


def read_signal(
    md: ModelDeployment, provider: MetricProvider, revision: str, version: str, ready: int
) -> tuple[float | None, str]:
    """The revision's signal value (per replica for requests-per-replica), or why none."""
    scaling = md.spec.autoscaling
    assert scaling is not None
    interval = f"{max(60, round(scaling.interval_seconds))}s"
    meta = md.metadata
    query = signal_query(
        scaling,
        namespace=meta.namespace,
        name=meta.name,
        revision=revision,
        version=version,
        interval=interval,
    )
    check = ResolvedCheck(
        name=SIGNAL,
        template=None,
        query=query,
        min=None,
        max=None,
        max_drop_vs_stable=None,
        max_ratio_vs_stable=None,
        min_samples=0,
    )
    measured = provider.measure(
        check, Target(meta.namespace, meta.name, revision, version, interval)
    )
    if measured.value is None:
        return None, measured.message or "the query returned nothing"
    if scaling.signal != "requests-per-replica":
        return measured.value, ""
    if ready <= 0:
        return None, "no ready replica to spread the requests over"
    return measured.value / ready, ""


def autoscale(
    md: ModelDeployment,
    workloads: dict[str, Workload],
    provider: MetricProvider,
    now: datetime,
) -> ScalingStep:
    """The scaling records of the stable and canary revisions, after reading the signals
    that are due (engine prometheus only; other engines only report replicas)."""
    scaling = md.spec.autoscaling
    step = ScalingStep(records=[])
    problems = []
    read = False
    for role, revision in _roles(md):
        old = md.status.scaling_of(revision)
        live = workloads.get(revision)
        record = (old or RevisionScaling(revision=revision, role="stable")).model_copy(
            update={
                "role": role,
                "replicas": live.replicas if live is not None else 0,
                "ready": live.ready if live is not None else 0,
            }
        )
        if scaling is None or scaling.engine != "prometheus":
            step.records.append(record)
            continue
        last = record.last_read
        if last is not None and (now - last).total_seconds() < scaling.interval_seconds * 0.95:
            step.records.append(record)
            continue
        version = (md.status.stable_version if role == "stable" else md.status.canary_version) or ""
        value, why = read_signal(md, provider, revision, version, record.ready)
        read = True
        current = record.desired or max(record.replicas, scaling.min_replicas)
        decision = scale(
            scaling,
            current=current,
            value=value,
            recommendations=record.recommendations,
            last_scale_time=record.last_scale_time or now,
            now=now,
            why_no_value=why,
        )
        changed = decision.desired != current
        record = record.model_copy(
            update={
                "desired": decision.desired,
                "signal": scaling.signal,
                "value": value,
                "target": scaling.signal_target,
                "reason": decision.reason,
                "last_read": now,
                "last_scale_time": now if changed else (record.last_scale_time or now),
                "recommendations": list(decision.recommendations),
            }
        )
        step.records.append(record)
        if changed:
            direction = "ScaledUp" if decision.desired > current else "ScaledDown"
            step.events.append(
                Event(
                    "Normal",
                    direction,
                    f"{role} revision {revision}: {current} -> {decision.desired} "
                    f"replica{'' if decision.desired == 1 else 's'} ({decision.reason})",
                )
            )
        if value is None:
            problems.append(f"{role} revision {revision}: {why}")
    if read:  # between reads, the condition of the last read stands
        step.condition = _signal_condition(md, problems)
    return step


def _signal_condition(md: ModelDeployment, problems: list[str]) -> Condition:
    scaling = md.spec.autoscaling
    assert scaling is not None
    if problems:
        return Condition(
            type="AutoscalerReady",
            status="False",
            reason="SignalUnavailable",
            message=f"signal {scaling.signal} could not be read ({'; '.join(problems)}); "
            "replicas stay where they are. Check spec.autoscaling.query (or the model's "
            "metrics) and the operator's Prometheus",
        )
    return Condition(
        type="AutoscalerReady",
        status="True",
        reason="SignalRead",
        message=f"scaling on {scaling.signal}, target {scaling.signal_target:g} "
        f"{scaling.signal_unit}".rstrip(),
    )


def stable_desired(md: ModelDeployment, live: int | None) -> int | None:
    """The stable's replicas the prometheus engine decided, when it has."""
    scaling = md.spec.autoscaling
    if scaling is None or scaling.engine != "prometheus":
        return None
    record = md.status.scaling_of(md.status.stable_revision)
    if record is None or not record.desired:
        return None if live is None else max(scaling.min_replicas, min(scaling.max_replicas, live))
    return record.desired


def reported(
    md: ModelDeployment, workloads: dict[str, Workload], stable_replicas: int
) -> list[RevisionScaling]:
    """The records as the reconciliation leaves them: roles after any promotion, replicas
    and readiness as the cluster has them, and what each revision is asked to have."""
    records = []
    for role, revision in _roles(md):
        old = md.status.scaling_of(revision) or RevisionScaling(revision=revision, role="stable")
        live = workloads.get(revision)
        planned = (
            stable_replicas
            if role == "stable"
            else canary_replicas(md, stable_replicas=stable_replicas)
        )
        records.append(
            old.model_copy(
                update={
                    "role": role,
                    "replicas": live.replicas if live is not None else 0,
                    "ready": live.ready if live is not None else 0,
                    "desired": planned,
                }
            )
        )
    return records
