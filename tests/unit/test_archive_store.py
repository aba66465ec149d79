"""One archive per revision: the build Job, its digest in status and history, its failures.

The reconciler against the in-memory cluster; `FakeCluster.finish_job` plays the Job's pod to
its end with the termination message the real build writes (its digest, or its log's tail).
"""

from __future__ import annotations

from typing import Any

from tests.unit.builders import event_recorder
from tests.unit.test_reconcile import NAME, NS, World
from torchrollout.operator.cluster import ClusterError, FakeCluster
from torchrollout.operator.reconcile import Reconciler

STORE = "s3://archives/models"
DIGEST = "ab" * 32
TAIL = "archive build failed at smoke: sample input gave 'size mismatch for fc.weight'"


def store_world(**spec: Any) -> World:
    return World(spec={"archive": {"store": STORE}, **spec})


def jobs(world: World) -> list[dict[str, Any]]:
    return [o for (kind, _, _), o in world.cluster.objects.items() if kind == "Job"]


def condition(world: World, kind: str) -> dict[str, Any]:
    return next(c for c in world.status()["conditions"] if c["type"] == kind)


def init_args(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["initContainers"][0]["args"]
    return args


def built(world: World, digest: str = DIGEST) -> str:
    """Reconcile until the spec's revision is built and its Deployment exists."""
    revision = world.revision()
    world.reconcile()
    world.cluster.finish_job(f"{NAME}-{revision}", NS, message=digest + "\n", succeeded=True)
    world.reconcile(after=1)
    return revision


def test_the_build_job_runs_once_and_pods_fetch_the_digest_it_reported() -> None:
    world = store_world(runtime={"replicas": 5})
    revision = world.revision()
    world.reconcile()
    world.reconcile(after=1)
    (job,) = jobs(world)
    assert job["metadata"]["name"] == f"{NAME}-{revision}"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["archive", "build"]
    assert args[args.index("--store") + 1] == STORE
    assert args[args.index("--revision") + 1] == revision
    assert world.deployment(revision) is None  # no pod before its archive exists
    assert condition(world, "ArchiveReady")["reason"] == "Building"
    assert [w for w in world.cluster.writes if w[:2] == ("create", "Job")] == [
        ("create", "Job", job["metadata"]["name"])
    ]

    world.cluster.finish_job(job["metadata"]["name"], NS, message=DIGEST + "\n", succeeded=True)
    world.reconcile(after=1)
    deployment = world.deployment(revision)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 5
    fetch = init_args(deployment)
    assert fetch[:2] == ["archive", "fetch"]
    assert fetch[fetch.index("--sha256") + 1] == DIGEST
    assert world.status()["archives"] == [{"revision": revision, "sha256": DIGEST, "store": STORE}]
    assert jobs(world) == []  # its result is kept in status
    assert any(e.reason == "ArchiveBuilt" and DIGEST in e.message for e in world.events)

    world.ready(revision)
    world.reconcile(after=1)
    assert world.status()["phase"] == "Succeeded"
    assert world.status()["history"][-1]["archiveDigest"] == DIGEST
    assert condition(world, "ArchiveReady")["status"] == "True"


def test_a_restarted_operator_and_a_replica_change_build_nothing() -> None:
    world = store_world()
    revision = built(world)
    world.ready(revision)
    world.reconcile(after=1)
    world.reconciler = Reconciler(
        world.cluster,
        world.provider,
        post_event=event_recorder(world.events, world.cluster),
        clock=lambda: world.now,
    )
    world.set_spec(runtime={"replicas": 3})
    world.reconcile(after=1)
    world.reconcile(after=1)
    assert [w for w in world.cluster.writes if w[1] == "Job"] == [
        ("create", "Job", f"{NAME}-{revision}"),
        ("delete", "Job", f"{NAME}-{revision}"),
    ]
    deployment = world.deployment(revision)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 3
    assert world.status()["phase"] == "Succeeded"


def failed_canary_build(message: str) -> tuple[World, str, str]:
    """A stable revision built and serving, then a canary whose build Job failed with `message`."""
    world = store_world()
    stable = built(world)
    world.ready(stable)
    world.reconcile(after=1)
    world.set_spec(model={"version": "9.0.0"})
    canary = world.revision()
    world.reconcile(after=1)
    world.cluster.finish_job(f"{NAME}-{canary}", NS, message=message, succeeded=False)
    world.reconcile(after=1)
    world.reconcile(after=1)
    return world, stable, canary


def test_a_failed_build_rolls_the_canary_back_at_once_with_the_log_tail() -> None:
    world, stable, canary = failed_canary_build(f"fetched model.pt\n{TAIL}\n")
    status = world.status()
    assert status["phase"] == "RolledBack"
    assert TAIL in status["rollbackReason"]
    failed = condition(world, "ArchiveReady")
    assert (failed["status"], failed["reason"]) == ("False", "BuildFailed")
    assert TAIL in failed["message"]
    assert any(e.type == "Warning" and TAIL in e.message for e in world.events)
    stable_deployment = world.deployment(stable)
    assert stable_deployment is not None
    assert stable_deployment["spec"]["replicas"] == 1  # the stable keeps serving
    assert world.deployment(canary) is None


def test_a_failed_first_build_fails_the_deploy_without_waiting_for_the_deadline() -> None:
    world = store_world()
    revision = world.revision()
    world.reconcile()
    world.cluster.finish_job(f"{NAME}-{revision}", NS, message=TAIL, succeeded=False)
    world.reconcile(after=1)
    status = world.status()
    assert status["phase"] == "Failed"
    assert TAIL in status["message"]


def test_a_job_whose_pod_is_gone_is_made_again() -> None:
    world = store_world()
    revision = world.revision()
    world.reconcile()
    world.cluster.finish_job(f"{NAME}-{revision}", NS, message=DIGEST, succeeded=True)
    world.cluster.objects.pop(("Pod", NS, f"{NAME}-{revision}-x1"))
    world.reconcile(after=1)
    world.reconcile(after=1)
    creates = [w for w in world.cluster.writes if w[:2] == ("create", "Job")]
    assert len(creates) == 2
    assert world.deployment(revision) is None


def test_pods_the_scheduler_cannot_place_are_named_when_the_deadline_passes() -> None:
    world = World(spec={"runtime": {"gpus": 1}, "canary": {"progressDeadlineSeconds": 60}})
    revision = world.revision()
    world.reconcile()
    world.cluster.objects[("Pod", NS, "pending")] = {
        "metadata": {
            "name": "pending",
            "labels": {"torchrollout.io/deployment": NAME, "torchrollout.io/revision": revision},
        },
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        },
    }
    world.reconcile(after=1)
    waiting = condition(world, "PodsReady")
    assert (waiting["status"], waiting["reason"]) == ("False", "Unschedulable")
    assert "spec.runtime.gpus" in waiting["message"]  # what to fix, before the deadline
    world.reconcile(after=61)
    status = world.status()
    assert status["phase"] == "Failed"
    assert "Insufficient nvidia.com/gpu" in status["message"]


def test_a_retry_builds_a_failed_revision_again_and_a_new_version_drops_its_job() -> None:
    world, _, _ = failed_canary_build(TAIL)
    assert world.status()["phase"] == "RolledBack"
    assert len(jobs(world)) == 1  # the failed build stays, for kubectl logs

    world.annotate(**{"torchrollout.io/retry": "1"})
    world.reconcile(after=1)
    (job,) = jobs(world)
    assert "status" not in job  # a new build, not the failed one
    assert world.status()["phase"] == "Progressing"

    world.set_spec(model={"version": "9.1.0"})
    world.reconcile(after=1)
    assert [j["metadata"]["name"] for j in jobs(world)] == [f"{NAME}-{world.revision()}"]


class RefusingCluster(FakeCluster):
    """Refuses Deployments as the API server does a pod spec it finds invalid."""

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Deployment":
            raise ClusterError(
                'Deployment.apps "fraud-x" is invalid: spec.template.spec.affinity.nodeAffinity'
                ".requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: "
                "Required value: must have at least one node selector term",
                status=422,
                transient=False,
            )
        return super().create(obj)


def test_pod_settings_the_api_server_refuses_are_named_in_a_condition() -> None:
    world = World()
    refusing = RefusingCluster()
    refusing.objects = world.cluster.objects
    world.cluster = refusing
    world.reconciler.cluster = refusing
    world.reconcile()
    refused = condition(world, "PodSettingsValid")
    assert (refused["status"], refused["reason"]) == ("False", "Refused")
    assert "spec.runtime.affinity.nodeAffinity" in refused["message"]
    assert world.status()["phase"] == "Building"  # nothing else broke: the rest was applied
    world.cluster = world.reconciler.cluster = FakeCluster()
    world.cluster.objects = refusing.objects
    world.reconcile(after=1)
    assert condition(world, "PodSettingsValid")["status"] == "True"
