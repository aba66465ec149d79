"""The prometheus autoscaling engine through the reconciler: a signal in, replicas out."""

from __future__ import annotations

from typing import Any

from tests.unit.test_reconcile import World, canary_world, deployed
from torchrollout.engine import Measurement
from torchrollout.operator.scaling import SIGNAL

SCALING: dict[str, Any] = {
    "engine": "prometheus",
    "minReplicas": 1,
    "maxReplicas": 6,
    "target": 10,
    "interval": "15s",
    "scaleDownStabilizationSeconds": 60,
}


def signal(world: World, revision: str, total: float | None) -> None:
    """The revision's requests per second in all, as Prometheus would answer."""
    table = dict(world.provider.table)
    table[(SIGNAL, revision)] = (
        Measurement(value=total) if total is not None else Measurement.error("connection refused")
    )
    world.provider.table = table


def replicas(world: World, revision: str) -> int:
    deployment = world.deployment(revision)
    assert deployment is not None
    count: int = deployment["spec"]["replicas"]
    return count


def record(world: World, role: str) -> dict[str, Any]:
    return next(r for r in world.status()["scaling"] if r["role"] == role)


def condition(world: World) -> dict[str, Any]:
    return next(c for c in world.status()["conditions"] if c["type"] == "AutoscalerReady")


def test_load_scales_the_stable_up_at_once_and_down_after_the_window() -> None:
    world = deployed(autoscaling=SCALING)
    stable = world.revision()
    signal(world, stable, 40.0)  # 40 req/s on 1 replica, target 10 each
    world.reconcile(15)
    assert replicas(world, stable) == 4
    assert [e.reason for e in world.events][-1] == "ScaledUp"
    shown = record(world, "stable")
    assert (shown["desired"], shown["value"], shown["target"]) == (4, 40.0, 10.0)
    assert "4 recommended" in shown["reason"]
    assert condition(world)["status"] == "True"

    world.ready(stable)
    signal(world, stable, 8.0)  # 2 req/s per replica: 1 would do
    world.reconcile(15)
    assert replicas(world, stable) == 4  # the down window still holds 4
    for _ in range(4):
        world.reconcile(15)
    assert replicas(world, stable) == 1
    assert [e.reason for e in world.events][-1] == "ScaledDown"


def test_the_signal_is_read_once_per_interval() -> None:
    world = deployed(autoscaling=SCALING)
    stable = world.revision()
    signal(world, stable, 40.0)
    world.reconcile(15)
    reads = world.provider.calls.count((SIGNAL, stable))
    world.reconcile(1)
    world.reconcile(1)
    assert world.provider.calls.count((SIGNAL, stable)) == reads
    world.reconcile(15)
    assert world.provider.calls.count((SIGNAL, stable)) == reads + 1


def test_a_missing_signal_holds_the_replicas_and_says_why() -> None:
    world = deployed(autoscaling=SCALING)
    stable = world.revision()
    signal(world, stable, 40.0)
    world.reconcile(15)
    assert replicas(world, stable) == 4
    signal(world, stable, None)
    world.reconcile(15)
    assert replicas(world, stable) == 4
    shown = condition(world)
    assert (shown["status"], shown["reason"]) == ("False", "SignalUnavailable")
    assert "connection refused" in shown["message"]
    world.reconcile(1)  # no read between intervals: the last read's condition stands
    assert condition(world)["reason"] == "SignalUnavailable"


def test_replicas_never_leave_the_bounds() -> None:
    world = deployed(autoscaling={**SCALING, "minReplicas": 2})
    stable = world.revision()
    world.ready(stable)
    for total in (1000.0, 1000.0, 1000.0):
        signal(world, stable, total)
        world.reconcile(15)
        world.ready(stable)
        assert 2 <= replicas(world, stable) <= 6
    assert replicas(world, stable) == 6


def test_the_canary_follows_its_own_load_and_hands_over_at_promotion() -> None:
    world, stable, canary = canary_world(
        autoscaling=SCALING, traffic={"router": "gateway-api", "gatewayRef": {"name": "gw"}}
    )
    world.metrics(canary, 0.93)
    signal(world, stable, 40.0)
    world.reconcile(15)  # ready: first step (10%), stable scaled to 4
    world.ready(stable)
    world.ready(canary)
    assert replicas(world, stable) == 4
    signal(world, canary, 30.0)  # more load than a 10% share would bring
    world.reconcile(15)
    assert replicas(world, canary) == 3
    assert record(world, "canary")["desired"] == 3
    world.ready(canary)
    world.reconcile(30)  # 50% step
    world.ready(canary)
    world.reconcile(30)  # promoting: the canary reaches the stable's 4, then takes over
    world.ready(canary)
    world.reconcile(1)
    status = world.status()
    assert status["phase"] == "Succeeded" and status["stableRevision"] == canary
    assert replicas(world, canary) == 4
    assert [r["role"] for r in status["scaling"]] == ["stable"]
    assert record(world, "stable")["revision"] == canary


def test_after_a_rollback_the_stable_keeps_its_replicas() -> None:
    world, stable, canary = canary_world(autoscaling=SCALING)
    world.metrics(canary, 0.5)  # accuracy far below the floor
    signal(world, stable, 50.0)
    world.reconcile(15)
    world.ready(stable)
    assert replicas(world, stable) == 5
    for _ in range(3):
        world.reconcile(30)
    assert world.status()["phase"] == "RolledBack"
    assert replicas(world, stable) == 5
    assert replicas(world, canary) == 0
    assert [r["role"] for r in world.status()["scaling"]] == ["stable"]


def test_scaling_actions_and_replicas_are_operator_metrics() -> None:
    world = deployed(autoscaling=SCALING)
    stable = world.revision()
    signal(world, stable, 40.0)
    world.reconcile(15)
    registry = world.reconciler.metrics.registry
    assert registry.get_sample_value("torchrollout_scaling_actions_total", {"direction": "up"}) == 1
    desired = registry.get_sample_value(
        "torchrollout_replicas",
        {"namespace": "risk", "name": "fraud", "role": "stable", "state": "desired"},
    )
    assert desired == 4
