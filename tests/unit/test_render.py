"""The renderers: what the operator would create, checked against Kubernetes' schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.unit.builders import GOOD, resource, status_after, tick
from torchrollout.render import (
    canary_replicas_for,
    plan,
    replica_router_canary,
    replica_share,
    replica_weight,
    replicas_for_share,
    route_weight,
)
from torchrollout.spec import compute_revision, load_model_deployment
from torchrollout.spec.status import ArchiveRecord

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
    assert deployment["spec"]["replicas"] == 4  # replicas router: 4 beside 4 stable is 50%
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


POD_SETTINGS = {
    "env": [
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"},
        {"name": "AWS_REGION", "valueFrom": {"configMapKeyRef": {"name": "s3", "key": "region"}}},
    ],
    "envFrom": [{"secretRef": {"name": "s3-credentials"}}],
    "serviceAccountName": "model-reader",
    "imagePullSecrets": [{"name": "registry"}],
    "nodeSelector": {"pool": "inference"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
                ]
            }
        }
    },
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
    ],
    "priorityClassName": "inference",
    "podLabels": {"team": "risk"},
    "podAnnotations": {"cost-center": "42"},
    "gpus": 2,
}


def _pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = obj["spec"]["template"]
    return pod


@pytest.mark.parametrize("with_store", [False, True], ids=["pods-build", "build-job"])
def test_pod_settings_reach_every_pod_as_written(with_store: bool) -> None:
    spec: dict[str, Any] = {
        "runtime": POD_SETTINGS,
        "model": {
            "source": {
                "uri": "https://models.example.com/fraud.pt",
                "tokenSecretRef": {"name": "model-token", "key": "token"},
            }
        },
    }
    if with_store:
        spec["archive"] = {"store": "pvc://archives/models"}
    md = resource(spec=spec, metadata={"uid": "0000-1111"}, status=None)
    planned = plan(md, stable_replicas=2, store=md.spec.archive.store)
    kinds = by_kind(planned.objects)
    workload = kinds["Job"][0] if with_store else kinds["Deployment"][0]
    assert ("Deployment" in kinds) is not with_store  # pods wait for the archive
    kubernetes_validate.validate(workload, K8S_VERSION, strict=True)
    template = _pod_of(workload)
    pod = template["spec"]
    assert template["metadata"]["labels"]["team"] == "risk"
    assert template["metadata"]["annotations"] == {"cost-center": "42"}
    assert pod["serviceAccountName"] == "model-reader"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["nodeSelector"] == {"pool": "inference"}
    assert pod["tolerations"] == POD_SETTINGS["tolerations"]
    assert pod["affinity"] == POD_SETTINGS["affinity"]
    assert pod["priorityClassName"] == "inference"
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == {
        "torchrollout.io/deployment": "fraud",
        "torchrollout.io/revision": compute_revision(md.spec),
    }
    builder = pod["containers"][0] if with_store else pod["initContainers"][0]
    env = {e["name"]: e for e in builder["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage:9000"
    assert env["TORCHROLLOUT_HTTPS_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "model-token", "key": "token"}
    }
    assert builder["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "nvidia.com/gpu" not in builder["resources"]["limits"]  # building needs no GPU
    if with_store:
        claims = {
            v["persistentVolumeClaim"]["claimName"]: v
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims["archives"]["persistentVolumeClaim"]["readOnly"] is False
        assert builder["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert "torchrollout.io/deployment" not in template["metadata"]["labels"]  # no traffic
    else:
        serving = pod["containers"][0]
        assert serving["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert "TORCHROLLOUT_HTTPS_TOKEN" not in {e["name"] for e in serving["env"]}
        properties = kinds["ConfigMap"][0]["data"]["config.properties"]
        assert "number_of_gpu=2" in properties


def test_pods_of_a_built_revision_fetch_and_verify_the_stored_archive() -> None:
    md = resource(
        spec={"archive": {"store": "pvc://archives/models"}}, metadata={"uid": "u"}, status=None
    )
    revision = compute_revision(md.spec)
    record = ArchiveRecord(revision=revision, sha256="cd" * 32, store="pvc://archives/models")
    md = md.model_copy(update={"status": md.status.with_archive(record)})
    kinds = by_kind(plan(md, stable_replicas=1, store="pvc://archives/models").objects)
    assert "Job" not in kinds
    (deployment,) = kinds["Deployment"]
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    pod = deployment["spec"]["template"]["spec"]
    args = pod["initContainers"][0]["args"]
    assert args == [
        "archive",
        "fetch",
        "--store",
        "pvc://archives/models",
        "--name",
        md.model_name,
        "--revision",
        revision,
        "--sha256",
        "cd" * 32,
        "--output",
        "/models",
    ]
    (claim,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claim["persistentVolumeClaim"] == {"claimName": "archives", "readOnly": True}


@pytest.mark.parametrize(
    ("stable", "step", "canary", "share", "honest"),
    [
        (1, 1, 1, 50, False),  # one pod beside one: half the traffic, whatever the step
        (4, 10, 1, 20, False),
        (4, 50, 4, 50, True),
        (9, 10, 1, 10, True),
        (20, 5, 1, 5, True),
        (10, 25, 3, 23, True),
        (2, 60, 3, 60, True),
    ],
)
def test_the_replica_router_sizes_the_canary_for_its_share_of_pods_and_says_when_it_cannot(
    stable: int, step: int, canary: int, share: int, honest: bool
) -> None:
    assert replica_router_canary(stable, step) == canary
    realised = replica_share(stable, step)
    assert (realised.share, realised.honest) == (share, honest)
    assert f"gives {share}%" in realised.describe()


@pytest.mark.parametrize(("step", "replicas"), [(1, 15), (5, 9), (10, 6), (25, 3), (50, 1)])
def test_the_fewest_replicas_that_realise_a_step(step: int, replicas: int) -> None:
    assert replicas_for_share(step) == replicas
    assert replica_share(replicas, step).honest
    assert not replica_share(replicas - 1, step).honest or replicas == 1
