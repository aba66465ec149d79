"""The reconciler against an in-memory cluster: what it creates, scales, deletes and writes.

The end-to-end tests run the same code against the API emulator with kopf and kubectl;
these pin the reconciler's own decisions quickly, with a clock the test moves.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.builders import BASE, event_recorder, merged
from torchrollout.engine import Event, Measurement
from torchrollout.metrics import StaticProvider
from torchrollout.operator.cluster import FakeCluster
from torchrollout.operator.evaluation import EvaluationSender
from torchrollout.operator.reconcile import Reconciler
from torchrollout.spec import API_VERSION, KIND, compute_revision, parse_model_deployment

NS, NAME = "risk", "fraud"


class World:
    """A fake cluster holding one ModelDeployment, a provider table and a clock."""

    def __init__(self, **override: Any) -> None:
        body = merged(BASE, {"status": None, "metadata": {"uid": "uid-1"}, **override})
        self.cluster = FakeCluster()
        self.cluster.create(body)
        self.provider = StaticProvider(table={})
        self.events: list[Event] = []
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.reconciler = Reconciler(
            self.cluster,
            self.provider,
            post_event=event_recorder(self.events, self.cluster),
            clock=lambda: self.now,
        )

    def body(self) -> dict[str, Any]:
        found = self.cluster.get(API_VERSION, KIND, NS, NAME)
        assert found is not None
        return found

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.body().get("status", {})
        return status

    def revision(self) -> str:
        return compute_revision(parse_model_deployment(self.body()).spec)

    def set_spec(self, **spec: Any) -> None:
        body = self.body()
        body["spec"] = merged(body["spec"], spec)
        self.cluster.objects[(KIND, NS, NAME)] = body

    def annotate(self, **annotations: str) -> None:
        body = self.body()
        body["metadata"].setdefault("annotations", {}).update(annotations)
        self.cluster.objects[(KIND, NS, NAME)] = body

    def deployment(self, revision: str) -> dict[str, Any] | None:
        return self.cluster.get("apps/v1", "Deployment", NS, f"{NAME}-{revision}")

    def ready(self, revision: str) -> None:
        self.cluster.set_ready(f"{NAME}-{revision}", NS)

    def reconcile(self, after: float = 0.0) -> Any:
        self.now += timedelta(seconds=after)
        return self.reconciler.reconcile(NS, NAME)

    def metrics(self, revision: str, accuracy: float) -> None:
        table = dict(self.provider.table)
        table[("accuracy", revision)] = Measurement(value=accuracy, samples=500)
        table[("latency-p99", revision)] = Measurement(value=40.0, samples=500)
        self.provider.table = table


def deployed(**spec: Any) -> World:
    """A world whose first version (2.0.0) is deployed and stable (`spec` merged in)."""
    world = World(spec=spec) if spec else World()
    world.reconcile()
    world.ready(world.revision())
    world.reconcile(1)
    assert world.status()["phase"] == "Succeeded"
    return world


def test_first_deploy_creates_the_revision_and_its_services() -> None:
    world = World()
    outcome = world.reconcile()
    revision = world.revision()
    assert world.status()["phase"] == "Building"
    deployment = world.deployment(revision)
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    kinds = {kind for kind, _, _ in world.cluster.objects}
    assert {"ConfigMap", "Service", "PodDisruptionBudget"} <= kinds
    assert outcome.requeue_after == 5.0
    world.ready(revision)
    world.reconcile(3)
    assert world.status()["phase"] == "Succeeded"
    assert [e.reason for e in world.events] == ["Deploying", "Deployed"]
    archive = next(c for c in world.status()["conditions"] if c["type"] == "ArchiveReady")
    assert (archive["status"], archive["reason"]) == ("True", "Built")


def test_nothing_is_written_when_nothing_changed() -> None:
    world = deployed()
    world.cluster.writes.clear()
    world.cluster.reads.clear()
    outcome = world.reconcile(30)
    assert world.cluster.writes == []
    assert outcome.status_written is False
    # What a resync costs, for every resource once a period: the Deployments listed once
    # (not again after applying, when nothing was written), one read per object owned.
    assert world.cluster.reads.count(("list", "Deployment")) == 1
    owned = [key for key in world.cluster.objects if key[0] not in {KIND, "Event"}]
    assert len(world.cluster.reads) == 2 + len(owned)


def canary_world(**spec: Any) -> tuple[World, str, str]:
    world = deployed(**spec)
    stable = world.revision()
    world.set_spec(model={"version": "3.0.0"})
    world.reconcile(1)
    canary = world.revision()
    assert world.status()["phase"] == "Progressing"
    assert world.deployment(canary) is not None
    world.ready(canary)
    world.metrics(stable, 0.92)
    return world, stable, canary


def test_a_good_canary_is_promoted_and_the_old_revision_kept_warm_then_at_zero() -> None:
    world, stable, canary = canary_world()
    world.metrics(canary, 0.93)
    world.reconcile(1)  # ready: first step
    assert (world.status()["stepIndex"], world.status()["canaryWeight"]) == (0, 50)
    world.reconcile(30)  # 10% step passes
    world.ready(canary)
    outcome = world.reconcile(30)  # 50% step passes: promoted
    status = world.status()
    assert status["phase"] == "Succeeded"
    assert status["stableVersion"] == "3.0.0"
    assert services(world)["fraud-stable"]["torchrollout.io/revision"] == canary
    assert replicas_of(world, stable) == 1  # warm for scaleDownDelaySeconds (30 s)...
    assert outcome.requeue_after == 30.0  # ...and the operator is called back when it ends
    assert status["history"][-1]["version"] == "3.0.0"
    world.reconcile(30)
    assert replicas_of(world, stable) == 0  # kept at zero for the rollback window
    assert "warmRevision" not in world.status()
    assert world.events[-1].reason == "PreviousStableScaledDown"


def test_a_promoted_revision_whose_pods_are_not_all_ready_is_looked_at_again_soon() -> None:
    """Not at the resync, minutes later: PodsReady says Ready as soon as they are."""
    world, _, canary = canary_world()
    world.metrics(canary, 0.93)
    world.reconcile(1)
    world.reconcile(30)
    world.reconcile(30)
    assert world.status()["phase"] == "Succeeded"
    world.cluster.set_ready(f"{NAME}-{canary}", NS, ready=0)  # the Deployment catching up
    outcome = world.reconcile(1)
    pods = next(c for c in world.status()["conditions"] if c["type"] == "PodsReady")
    assert (pods["status"], outcome.requeue_after) == ("Unknown", 2.0)
    world.ready(canary)
    outcome = world.reconcile(2)
    pods = next(c for c in world.status()["conditions"] if c["type"] == "PodsReady")
    assert pods["status"] == "True"
    assert outcome.requeue_after is not None and outcome.requeue_after > 2.0


def services(world: World) -> dict[str, dict[str, str]]:
    return {
        n: o["spec"]["selector"] for (k, _, n), o in world.cluster.objects.items() if k == "Service"
    }


def replicas_of(world: World, revision: str) -> int:
    deployment = world.deployment(revision)
    assert deployment is not None
    replicas: int = deployment["spec"]["replicas"]
    return replicas


def counted(world: World, outcome: str) -> float:
    """torchrollout_rollouts_total{outcome} as the operator's /metrics reports it."""
    registry = world.reconciler.metrics.registry
    return registry.get_sample_value("torchrollout_rollouts_total", {"outcome": outcome}) or 0.0


def promoted_world(**spec: Any) -> tuple[World, str, str]:
    """2.0.0 (`old`) was stable with 2 replicas; 3.0.0 (`new`) has just been promoted."""
    world, old, new = canary_world(runtime={"replicas": 2}, **spec)
    world.metrics(new, 0.93)
    world.annotate(**{"torchrollout.io/promote": "now"})
    world.reconcile(1)
    world.ready(new)
    world.reconcile(1)
    assert (world.status()["phase"], world.status()["stableVersion"]) == ("Succeeded", "3.0.0")
    world.events.clear()
    return world, old, new


def test_a_revert_inside_the_scale_down_delay_moves_all_traffic_in_one_reconcile() -> None:
    world, old, new = promoted_world()
    assert replicas_of(world, old) == 2
    # The warm pods take no traffic: the client Service selects the new stable alone.
    assert services(world)["fraud"] == {
        "torchrollout.io/deployment": NAME,
        "torchrollout.io/revision": new,
    }
    world.set_spec(model={"version": "2.0.0"})  # git revert, 10 s after the promotion
    world.reconcile(10)
    status = world.status()
    assert (status["phase"], status["stableVersion"], status["canaryWeight"]) == (
        "Succeeded",
        "2.0.0",
        0,
    )
    selected = services(world)
    assert selected["fraud"]["torchrollout.io/revision"] == old  # 100% on the old stable
    assert selected["fraud-stable"]["torchrollout.io/revision"] == old
    assert selected["fraud-canary"]["torchrollout.io/revision"] == old
    assert [e.reason for e in world.events] == ["InstantRollback", "Promoted"]
    assert status["history"][-1]["instantRollback"] == "warm"
    assert f"warm: revision {old} still had 2 ready replicas" in status["history"][-1]["reason"]
    assert "warm" in status["message"]
    assert replicas_of(world, old) == 2
    # and 3.0.0 is warm now in its turn, for a revert of the revert
    assert status["warmRevision"]["revision"] == new
    assert replicas_of(world, new) == 2
    assert counted(world, "instant_rollback_warm") == 1
    assert counted(world, "instant_rollback_cold") == 0


def test_a_revert_after_the_scale_down_delay_waits_for_the_pods() -> None:
    world, old, _ = promoted_world()
    world.reconcile(30)  # the delay is over: 2.0.0 goes to zero
    assert replicas_of(world, old) == 0
    world.cluster.set_ready(f"{NAME}-{old}", NS, ready=0)  # its pods are gone
    world.set_spec(model={"version": "2.0.0"})
    world.reconcile(5)
    status = world.status()
    assert (status["phase"], status["canaryVersion"]) == ("Promoting", "2.0.0")
    assert "cold" in status["message"]
    assert replicas_of(world, old) == 2  # scaled up, without analysis
    world.ready(old)
    world.reconcile(4)
    status = world.status()
    assert (status["phase"], status["stableVersion"]) == ("Succeeded", "2.0.0")
    assert status["history"][-1]["instantRollback"] == "cold"
    assert "after 4s" in status["history"][-1]["reason"]
    assert status["analysis"]["checks"] == []
    assert counted(world, "instant_rollback_cold") == 1
    assert counted(world, "instant_rollback_warm") == 0


def test_a_bad_canary_is_rolled_back_and_scaled_down() -> None:
    world, _, canary = canary_world()
    world.metrics(canary, 0.5)
    world.reconcile(1)
    world.reconcile(30)
    world.reconcile(30)
    status = world.status()
    assert status["phase"] == "RolledBack"
    assert status["canaryWeight"] == 0
    deployment = world.deployment(canary)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert "accuracy: 0.5 is below the minimum 0.85" in degraded["message"]
    assert [e.reason for e in world.events][-2:] == ["RollingBack", "RolledBack"]


def _nulls(value: Any, path: str = "status") -> list[str]:
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _nulls(v, f"{path}[{i}]")]
    return [path] if value is None else []


def test_the_stored_status_holds_no_nulls_for_describe_to_show() -> None:
    world, _, canary = canary_world()
    world.metrics(canary, 0.5)
    for after in (1, 30, 30):
        world.reconcile(after)
        assert _nulls(world.status()) == []
    assert world.status()["phase"] == "RolledBack"


def test_one_prometheus_outage_is_named_once_in_each_place_an_sre_reads() -> None:
    world, stable, canary = canary_world()
    down = Measurement.error("Prometheus at http://prom:9090 is unreachable")
    world.provider.table = {
        (check, revision): down
        for check in ("accuracy", "latency-p99")
        for revision in (stable, canary)
    }
    world.reconcile(1)
    for _ in range(3):  # consecutiveErrorLimit 3, onError rollback
        world.reconcile(30)
    world.reconcile(1)
    status = world.status()
    assert status["phase"] == "RolledBack"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    entry = status["history"][-1]
    texts = {
        "message": status["message"],
        "Degraded": degraded["message"],
        "history": entry.get("reason", ""),
        **{f"event {e.reason}": e.message for e in world.events if e.type == "Warning"},
    }
    assert "event AnalysisError" in texts
    for where, text in texts.items():
        if "unreachable" in text:
            assert text.count("is unreachable") == 1, f"{where}: {text}"
    assert "2 checks (accuracy, latency-p99): Prometheus at http://prom:9090" in degraded["message"]


def test_the_client_service_selects_every_revision_while_a_canary_runs() -> None:
    world = deployed()
    stable = world.revision()

    def selector() -> Any:
        return (world.cluster.get("v1", "Service", NS, NAME) or {})["spec"]["selector"]

    assert selector() == {"torchrollout.io/deployment": NAME, "torchrollout.io/revision": stable}
    world.set_spec(model={"version": "3.0.0"})
    world.reconcile(1)
    world.ready(world.revision())
    world.reconcile(1)
    assert world.status()["stepIndex"] == 0
    assert selector() == {"torchrollout.io/deployment": NAME}


def test_a_superseded_canary_revision_is_deleted() -> None:
    world, _, canary = canary_world()
    world.reconcile(1)
    world.set_spec(model={"version": "4.0.0"})
    world.reconcile(5)
    assert world.status()["canaryVersion"] == "4.0.0"
    assert world.deployment(canary) is None


def test_manual_promote_by_annotation() -> None:
    world, _, canary = canary_world()
    world.reconcile(1)
    world.annotate(**{"torchrollout.io/promote": "now"})
    world.reconcile(2)
    assert world.status()["phase"] == "Succeeded"
    assert world.status()["stableRevision"] == canary
    assert world.status()["handledRequests"] == {"promote": "now"}


def test_an_invalid_spec_is_reported_in_a_condition_and_nothing_is_created() -> None:
    world = World(spec={"canary": {"steps": [50, 10]}})
    world.reconcile()
    status = world.status()
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "spec.canary.steps: steps must increase strictly" in degraded["message"]
    assert {kind for kind, _, _ in world.cluster.objects} == {KIND, "Event"}
    writes = len(world.cluster.writes)
    world.reconcile(10)
    assert len(world.cluster.writes) == writes  # reported once


def test_missing_gateway_api_gives_a_condition_saying_what_to_install() -> None:
    world = World(spec={"traffic": {"router": "gateway-api", "gatewayRef": {"name": "gw"}}})
    world.cluster.missing_kinds.add("HTTPRoute")
    world.reconcile()
    router = next(c for c in world.status()["conditions"] if c["type"] == "RouterReady")
    assert router["status"] == "False"
    assert "install them or use router: replicas" in router["message"]


def test_gateway_api_weights_are_read_back_from_the_route() -> None:
    world = World(spec={"traffic": {"router": "gateway-api", "gatewayRef": {"name": "gw"}}})
    world.reconcile()
    world.ready(world.revision())
    world.reconcile(1)
    world.set_spec(model={"version": "3.0.0"})
    world.reconcile(1)
    world.ready(world.revision())
    world.reconcile(1)
    route = world.cluster.get("gateway.networking.k8s.io/v1", "HTTPRoute", NS, NAME)
    assert route is not None
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    assert world.status()["canaryWeight"] == 10


@pytest.mark.parametrize("restart_after", [1, 2, 3])
def test_a_restarted_operator_resumes_without_a_double_transition(restart_after: int) -> None:
    world, _, canary = canary_world()
    world.metrics(canary, 0.5)
    steps = [1, 30, 30]
    for after in steps[:restart_after]:
        world.reconcile(after)
    snapshot = copy.deepcopy(world.status())
    # a new operator process: new reconciler, same cluster
    world.reconciler = Reconciler(
        world.cluster,
        world.provider,
        post_event=event_recorder(world.events, world.cluster),
        clock=lambda: world.now,
    )
    world.reconcile(0)
    assert world.status() == snapshot
    for after in steps[restart_after:]:
        world.reconcile(after)
    assert world.status()["phase"] == "RolledBack"
    assert [e.reason for e in world.events].count("RolledBack") == 1


def test_each_tick_sends_the_same_labeled_samples_to_canary_and_stable(tmp_path: Path) -> None:
    dataset = tmp_path / "eval.jsonl"
    dataset.write_text(
        "".join(json.dumps({"input": [[n]], "label": n % 2}) + "\n" for n in range(5))
    )
    posted: list[tuple[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200, json={"prediction": 0})

    sender = EvaluationSender(
        httpx.Client(transport=httpx.MockTransport(answer)),
        service_url="http://{service}.{namespace}",
    )
    evaluation = {"datasetUri": f"file://{dataset}", "samplesPerTick": 3}
    world, _, canary = canary_world_with(sender, evaluation)
    world.metrics(canary, 0.93)
    world.reconcile(1)  # first step: samples go out at once
    world.reconcile(30)  # a tick: the next samples
    sender.close()
    urls = {url for url, _ in posted}
    assert urls == {
        "http://fraud-canary.risk/predictions/fraud",
        "http://fraud-stable.risk/predictions/fraud",
    }
    to_canary = [body["input"][0][0] for url, body in posted if "canary" in url]
    to_stable = [body["input"][0][0] for url, body in posted if "stable" in url]
    assert to_canary == to_stable == [0, 1, 2, 3, 4, 0]


def canary_world_with(
    sender: EvaluationSender, evaluation: dict[str, Any]
) -> tuple[World, str, str]:
    world, stable, canary = canary_world()
    world.reconciler.evaluation = sender
    world.set_spec(canary={"evaluation": evaluation})
    return world, stable, canary


def test_unreachable_evaluation_data_is_an_error_of_its_own_not_a_model_failure(
    tmp_path: Path,
) -> None:
    sender = EvaluationSender(
        httpx.Client(transport=httpx.MockTransport(lambda _r: httpx.Response(200, json={}))),
        service_url="http://{service}.{namespace}",
    )
    missing = tmp_path / "gone" / "eval.jsonl"
    world, _, canary = canary_world_with(sender, {"datasetUri": f"file://{missing}"})
    world.metrics(canary, 0.10)  # what the accuracy query reads: nothing labeled sent
    world.reconcile(1)
    md = parse_model_deployment(world.body())
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while sender.problem(md) is None and datetime.now(UTC) < deadline:
        sender.submit(md).result()
    world.reconcile(30)
    world.reconcile(30)
    sender.close()
    status = world.status()
    assert status["phase"] == "Progressing"
    assert status["analysis"]["failed"] == 0
    assert status["analysis"]["consecutiveErrors"] == 2
    accuracy = next(c for c in status["analysis"]["checks"] if c["name"] == "accuracy")
    assert accuracy["verdict"] == "Error"
    assert "evaluation data unavailable" in accuracy["message"]
    ready = next(c for c in status["conditions"] if c["type"] == "EvaluationReady")
    assert (ready["status"], ready["reason"]) == ("False", "DatasetUnreachable")
    assert str(missing) in ready["message"]
    warnings = [e for e in world.events if e.reason == "EvaluationFailed"]
    assert len(warnings) == 1  # said once, not every tick


def test_a_step_whole_pods_cannot_give_is_said_once_with_what_would() -> None:
    world, _, canary = canary_world()  # one stable replica, replicas router
    world.metrics(canary, 0.93)
    world.reconcile(1)
    status = world.status()
    assert status["stepIndex"] == 0
    share = next(c for c in status["conditions"] if c["type"] == "TrafficShare")
    assert (share["status"], share["reason"]) == ("False", "ReplicaGranularity")
    step = parse_model_deployment(world.body()).spec.canary.steps[0]
    assert f"step {step}% gives 50%" in share["message"]
    assert "stable replicas would give" in share["message"]
    assert status["canaryWeight"] == 50  # what the pods give, not what the step asked
    world.reconcile(1)
    coarse = [e for e in world.events if e.reason == "CoarseTrafficShare"]
    assert len(coarse) == 1


def test_a_step_the_replicas_realise_raises_no_warning() -> None:
    world, _, _ = canary_world(runtime={"replicas": 9}, canary={"steps": [10, 50]})
    world.reconcile(1)
    status = world.status()
    assert status["stepIndex"] == 0
    share = next(c for c in status["conditions"] if c["type"] == "TrafficShare")
    assert (share["status"], share["reason"]) == ("True", "AsStepped")
    assert status["canaryWeight"] == 10
    assert not [e for e in world.events if e.reason == "CoarseTrafficShare"]
