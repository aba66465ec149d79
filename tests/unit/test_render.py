"""The renderers: what the operator would create, checked against Kubernetes' schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.unit.builders import GOOD, resource, status_after, tick
from torchrollout.render import canary_replicas_for, plan, replica_weight, route_weight
from torchrollout.spec import compute_revision, load_model_deployment

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "deployments").glob("*.yaml"))
K8S_VERSION = "1.37.0"


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj)
    return kinds


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_renders_objects_valid_for_kubernetes(path: Path) -> None:
    md = load_model_deployment(path)
    md = md.model_copy(update={"metadata": md.metadata.model_copy(update={"uid": "0000-1111"})})
    objects = plan(md, stable_replicas=2).objects
    for obj in objects:
        if obj["kind"] == "HTTPRoute":
            continue  # a CRD kind: checked below against its own rules
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "0000-1111"
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= {
        o["kind"] for o in objects
    }


def test_examples_cover_every_handler_and_router() -> None:
    from torchrollout.spec import BUILTIN_HANDLERS

    mds = [load_model_deployment(p) for p in EXAMPLES]
    assert {m.spec.model.handler for m in mds} == set(BUILTIN_HANDLERS)
    assert {m.spec.traffic.router for m in mds} == {"replicas", "gateway-api"}


def test_torchserve_exposes_inference_and_metrics_only() -> None:
    md = load_model_deployment(EXAMPLES[0])
    kinds = by_kind(plan(md, stable_replicas=1).objects)
    properties = kinds["ConfigMap"][0]["data"]["config.properties"]
    assert "management_address=http://127.0.0.1:8081" in properties
    assert "enable_model_api=false" in properties
    assert "metrics_mode=prometheus" in properties
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"] + pod["initContainers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["command"][0] in {"torchserve", "torchrollout"}  # never a shell
    ports = {p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert ports == {8080, 8082}


def test_the_init_container_builds_and_checks_the_archive() -> None:
    md = load_model_deployment(EXAMPLES[2])  # fraud-lstm: sha256 and a sample input
    deployment = by_kind(plan(md, stable_replicas=1).objects)["Deployment"][0]
    args = deployment["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[:2] == ["archive", "build"]
    assert args[args.index("--sha256") + 1] == md.spec.model.source.sha256
    assert args[args.index("--sample-input") + 1] == "/config/sample-input.json"
    assert args[args.index("--version") + 1] == "2.0.0"


def test_during_a_canary_services_split_and_deployments_scale() -> None:
    running = resource(
        spec={"runtime": {"replicas": 4}},
        status=status_after(resource(spec={"runtime": {"replicas": 4}}), [tick(0), tick(30, GOOD)]),
    )
    planned = plan(running, stable_replicas=4)
    stable, canary = planned.stable, planned.canary
    assert canary == compute_revision(running.spec)
    assert planned.weight == 50
    kinds = by_kind(planned.objects)
    selectors = {s["metadata"]["name"]: s["spec"]["selector"] for s in kinds["Service"]}
    assert selectors["fraud"] == {"torchrollout.io/deployment": "fraud"}
    assert selectors["fraud-stable"]["torchrollout.io/revision"] == stable
    assert selectors["fraud-canary"]["torchrollout.io/revision"] == canary
    (deployment,) = kinds["Deployment"]  # only the spec's revision is rendered
    assert deployment["metadata"]["name"] == f"fraud-{canary}"
    assert deployment["spec"]["replicas"] == 2  # ceil(4 x 50%)
    assert planned.scale == {f"fraud-{stable}": 4}


def test_gateway_route_carries_the_weight_and_reads_back() -> None:
    md = resource(
        spec={"traffic": {"router": "gateway-api", "gatewayRef": {"name": "gw"}}},
        status=status_after(
            resource(spec={"traffic": {"router": "gateway-api", "gatewayRef": {"name": "gw"}}}),
            [tick(0)],
        ),
    )
    (route,) = by_kind(plan(md, stable_replicas=2).objects)["HTTPRoute"]
    weights = [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]
    assert route_weight(route, md) == 10


@pytest.mark.parametrize(
    ("stable", "weight", "canary"),
    [(1, 1, 1), (4, 10, 1), (4, 50, 2), (10, 25, 3), (3, 0, 0)],
)
def test_canary_replicas_follow_the_weight(stable: int, weight: int, canary: int) -> None:
    assert canary_replicas_for(stable, weight) == canary


def test_replica_router_reports_what_it_achieves() -> None:
    assert replica_weight(stable_ready=4, canary_ready=1) == 20
    assert replica_weight(stable_ready=0, canary_ready=0) == 0


def test_rollback_window_revisions_are_kept_at_zero() -> None:
    history = [{"version": "0.9.0", "promotedAt": "2025-12-01T00:00:00Z"}]
    md = resource(status={"history": history, "stableVersion": "2.0.0"})
    planned = plan(md, stable_replicas=3)
    old = f"fraud-{next(e.revision for e in md.status.history)}"
    assert planned.scale[old] == 0
    assert len(planned.keep) == 2


def test_hpa_targets_the_stable_revision() -> None:
    md = resource(spec={"autoscaling": {"minReplicas": 2, "maxReplicas": 6}})
    (hpa,) = by_kind(plan(md, stable_replicas=2).objects)["HorizontalPodAutoscaler"]
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"fraud-{md.status.stable_revision}"
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70


def test_a_gateway_rollback_moves_the_weight_before_the_canary_shrinks() -> None:
    gateway = {"traffic": {"router": "gateway-api", "gatewayRef": {"name": "gw"}}}
    running = status_after(resource(spec=gateway), [tick(0), tick(30, GOOD)])
    rolling = resource(spec=gateway, status={**running, "phase": "RollingBack"})
    planned = plan(rolling, stable_replicas=4)
    kinds = [o["kind"] for o in planned.objects]
    assert kinds.index("HTTPRoute") < kinds.index("Deployment")
    (route,) = by_kind(planned.objects)["HTTPRoute"]
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]
    (deployment,) = by_kind(planned.objects)["Deployment"]
    assert deployment["spec"]["replicas"] == 2  # still the 50% step's size
    replicas_router = resource(
        status={**status_after(resource(), [tick(0), tick(30, GOOD)]), "phase": "RollingBack"}
    )
    (deployment,) = by_kind(plan(replicas_router, stable_replicas=4).objects)["Deployment"]
    assert deployment["spec"]["replicas"] == 0  # with replicas, shrinking is the weight going to 0
