"""The autoscaler objects of the hpa and keda engines: the HPA (its behavior passed through),
KEDA's ScaledObject per signal, AutoscalerReady, KEDA not installed, the hand-over at a
promotion, and the previous engine's object deleted when the engine changes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.unit.builders import resource
from tests.unit.test_reconcile import NAME, NS, World, canary_world, deployed
from torchrollout.render import plan, signal_query
from torchrollout.render.scaling import HPA_API, KEDA_API
from torchrollout.spec.scaling import AutoscalingSpec

K8S_VERSION = "1.37.0"
SELECTOR = f'{{namespace="{NS}",revision="REV"}}'
BEHAVIOR = {
    "scaleDown": {
        "stabilizationWindowSeconds": 600,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    },
    "scaleUp": {"selectPolicy": "Max"},
}
KEDA: dict[str, Any] = {"engine": "keda", "minReplicas": 2, "maxReplicas": 8}


def objects_of(md: Any, kind: str, **options: Any) -> list[dict[str, Any]]:
    return [o for o in plan(md, stable_replicas=2, **options).objects if o["kind"] == kind]


def hpa(world: World) -> dict[str, Any] | None:
    return world.cluster.get(HPA_API, "HorizontalPodAutoscaler", NS, NAME)


def scaled_object(world: World) -> dict[str, Any] | None:
    return world.cluster.get(KEDA_API, "ScaledObject", NS, NAME)


def autoscaler_ready(world: World) -> dict[str, Any]:
    return next(c for c in world.status()["conditions"] if c["type"] == "AutoscalerReady")


def test_the_hpa_carries_the_behavior_as_it_is_given() -> None:
    md = resource(spec={"autoscaling": {"engine": "hpa", "behavior": BEHAVIOR}})
    (found,) = objects_of(md, "HorizontalPodAutoscaler")
    kubernetes_validate.validate(found, K8S_VERSION, strict=True)
    assert found["spec"]["behavior"] == BEHAVIOR
    assert found["spec"]["scaleTargetRef"]["name"] == f"{NAME}-{md.status.stable_revision}"


@pytest.mark.parametrize(
    ("autoscaling", "kinds"),
    [
        ({"engine": "hpa"}, ["HorizontalPodAutoscaler"]),
        ({"engine": "hpa", "targetCPUUtilization": None}, []),  # nothing to scale on
        ({"engine": "prometheus"}, []),  # the operator scales the revisions itself
        (KEDA, ["ScaledObject"]),
    ],
    ids=["hpa", "hpa-without-targets", "prometheus", "keda"],
)
def test_one_engine_one_object(autoscaling: dict[str, Any], kinds: list[str]) -> None:
    rendered = plan(resource(spec={"autoscaling": autoscaling}), stable_replicas=2).objects
    found = [
        o["kind"] for o in rendered if o["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}
    ]
    assert found == kinds


RATE = f"sum(rate(torchrollout_inference_latency_seconds_count{SELECTOR}[1m]))"
QUEUE = (
    f"sum(rate(ts_queue_latency_microseconds{SELECTOR}[1m])) / "
    f"clamp_min(sum(rate(ts_inference_requests_total{SELECTOR}[1m])), 1e-9) / 1000"
)
USER_QUERY = (
    'max(my_backlog{namespace="{{ namespace }}",app="{{ name }}",rev="{{revision}}",'
    'v="{{ version }}"}[{{ interval }}])'
)


@pytest.mark.parametrize(
    ("signal", "metric_type", "query", "threshold"),
    [
        ({}, "AverageValue", RATE, "10"),
        ({"signal": "requests-per-replica", "target": 2.5}, "AverageValue", RATE, "2.5"),
        ({"signal": "queue-latency"}, "Value", QUEUE, "50"),
        (
            {"signal": "query", "query": USER_QUERY, "target": 7, "interval": "30s"},
            "Value",
            f'max(my_backlog{{namespace="{NS}",app="{NAME}",rev="REV",v="1.0.0"}}[30s])',
            "7",
        ),
    ],
    ids=["requests-per-replica", "its-target", "queue-latency", "query"],
)
def test_the_scaled_object_scales_the_stable_on_the_signal_from_the_operators_prometheus(
    signal: dict[str, Any], metric_type: str, query: str, threshold: str
) -> None:
    md = resource(spec={"autoscaling": {**KEDA, **signal}})
    stable = md.status.stable_revision
    assert stable is not None
    (found,) = objects_of(md, "ScaledObject", prometheus="http://prom.monitoring:9090")
    spec = found["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{NAME}-{stable}",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 8)
    (trigger,) = spec["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", metric_type)
    assert trigger["metadata"] == {
        "serverAddress": "http://prom.monitoring:9090",
        "query": query.replace('"REV"', f'"{stable}"'),
        "threshold": threshold,
    }
    assert found["metadata"]["name"] == NAME


def test_the_signal_query_of_requests_per_replica_is_the_revisions_total_rate() -> None:
    query = signal_query(
        AutoscalingSpec.model_validate({"engine": "prometheus"}),
        namespace=NS,
        name=NAME,
        revision="REV",
        version="1.0.0",
        interval="60s",
    )
    assert query == RATE  # not divided by replicas: the caller does that


@pytest.mark.parametrize(
    ("autoscaling", "reason", "kind"),
    [
        ({"engine": "hpa", "behavior": BEHAVIOR}, "HPAApplied", "HorizontalPodAutoscaler"),
        (KEDA, "ScaledObjectApplied", "ScaledObject"),
    ],
)
def test_the_autoscaler_follows_the_stable_through_promotion_and_rollback(
    autoscaling: dict[str, Any], reason: str, kind: str
) -> None:
    world, stable, canary = canary_world(autoscaling=autoscaling)

    def target() -> str:
        found = world.cluster.get(HPA_API if kind != "ScaledObject" else KEDA_API, kind, NS, NAME)
        assert found is not None
        name: str = found["spec"]["scaleTargetRef"]["name"]
        return name

    assert target() == f"{NAME}-{stable}"
    assert (autoscaler_ready(world)["status"], autoscaler_ready(world)["reason"]) == (
        "True",
        reason,
    )
    world.metrics(canary, 0.93)
    world.reconcile(1)
    world.reconcile(30)
    world.ready(canary)
    world.reconcile(30)
    assert world.status()["phase"] == "Succeeded"
    assert target() == f"{NAME}-{canary}"  # promoted: the new stable is scaled

    world.set_spec(model={"version": "4.0.0"})
    world.reconcile(1)
    bad = world.revision()
    world.ready(bad)
    world.metrics(canary, 0.92)
    world.metrics(bad, 0.5)
    for after in (1, 30, 30):
        world.reconcile(after)
    assert world.status()["phase"] == "RolledBack"
    assert target() == f"{NAME}-{canary}"  # rolled back: still the stable


def test_keda_not_installed_is_a_condition_and_the_stable_keeps_its_replicas() -> None:
    world = World(spec={"autoscaling": KEDA})
    world.cluster.missing_kinds.add("ScaledObject")
    world.reconcile()
    stable = world.revision()
    world.ready(stable)
    world.reconcile(1)
    world.cluster.objects[("Deployment", NS, f"{NAME}-{stable}")]["spec"]["replicas"] = 5
    world.ready(stable)
    world.reconcile(1)
    assert world.status()["phase"] == "Succeeded"
    ready = autoscaler_ready(world)
    assert (ready["status"], ready["reason"]) == ("False", "KEDANotInstalled")
    assert "scaledobjects.keda.sh" in ready["message"]
    assert "engine hpa or prometheus" in ready["message"]
    deployment = world.deployment(stable)
    assert deployment is not None and deployment["spec"]["replicas"] == 5


@pytest.mark.parametrize(
    ("before", "after", "gone", "kept"),
    [
        ({"engine": "hpa"}, KEDA, "HorizontalPodAutoscaler", "ScaledObject"),
        (KEDA, {"engine": "hpa"}, "ScaledObject", "HorizontalPodAutoscaler"),
        ({"engine": "hpa"}, {"engine": "prometheus"}, "HorizontalPodAutoscaler", None),
        (KEDA, {"engine": "prometheus"}, "ScaledObject", None),
        ({"engine": "hpa"}, None, "HorizontalPodAutoscaler", None),
    ],
    ids=["hpa-to-keda", "keda-to-hpa", "hpa-to-prometheus", "keda-to-prometheus", "hpa-removed"],
)
def test_a_changed_engine_deletes_the_previous_engines_object(
    before: dict[str, Any], after: dict[str, Any] | None, gone: str, kept: str | None
) -> None:
    world = deployed(autoscaling=before)
    kinds = {"HorizontalPodAutoscaler": hpa, "ScaledObject": scaled_object}
    assert kinds[gone](world) is not None
    world.set_spec(autoscaling=None)
    if after is not None:
        world.set_spec(autoscaling=after)
    world.cluster.writes.clear()
    world.reconcile(1)
    assert kinds[gone](world) is None
    if kept is not None:
        assert kinds[kept](world) is not None
        # The old owner goes first: KEDA refuses a ScaledObject on a Deployment an HPA scales.
        writes = world.cluster.writes
        assert writes.index(("delete", gone, NAME)) < writes.index(("create", kept, NAME))
    assert world.status().get("autoscaler") == (after or {}).get("engine")
    world.cluster.writes.clear()
    world.reconcile(30)
    assert ("delete", gone, NAME) not in world.cluster.writes  # once, not every pass


def test_leaving_keda_when_it_was_never_installed_deletes_nothing_and_raises_nothing() -> None:
    world = World(spec={"autoscaling": KEDA})
    world.cluster.missing_kinds.add("ScaledObject")
    world.reconcile()
    world.ready(world.revision())
    world.reconcile(1)
    world.set_spec(autoscaling={"engine": "hpa"})
    world.reconcile(1)
    assert hpa(world) is not None
    assert autoscaler_ready(world)["reason"] == "HPAApplied"
    world.set_spec(autoscaling=None)
    world.reconcile(1)
    assert hpa(world) is None
    assert autoscaler_ready(world)["reason"] == "NoAutoscaling"  # nothing stale is blamed


def test_the_operators_prometheus_reaches_the_scaled_object() -> None:
    world = World(spec={"autoscaling": KEDA})
    world.reconciler.prometheus_url = "http://prometheus.example:9090"
    world.reconcile()
    found = scaled_object(world)
    assert found is not None
    assert found["spec"]["triggers"][0]["metadata"]["serverAddress"] == (
        "http://prometheus.example:9090"
    )
