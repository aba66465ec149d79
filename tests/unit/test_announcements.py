"""Events are written into the status before they are posted, and posted once each: an
operator killed at any point of a reconciliation loses none and repeats none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.builders import event_recorder
from tests.unit.test_reconcile import NAME, NS, World
from torchrollout.operator.cluster import ClusterError, FakeCluster
from torchrollout.operator.reconcile import TROUBLE_RECHECK, Reconciler


class Killed(BaseException):
    """The operator process dies here (nothing below it runs)."""


def kill_on_post(world: World) -> Callable[[dict[str, Any]], bool]:
    def post(_obj: dict[str, Any]) -> bool:
        raise Killed

    return post


def kill_after_post(world: World) -> Callable[[dict[str, Any]], bool]:
    """Posts, then dies when the reconciler empties the status's pending list."""
    emptied = world.cluster.patch_status

    def patch_status(namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        if set(status) == {"pendingEvents"}:
            raise Killed
        return emptied(namespace, name, status)

    world.cluster.patch_status = patch_status  # type: ignore[method-assign]
    return event_recorder(world.events, world.cluster)


def fail_once(world: World) -> Callable[[dict[str, Any]], bool]:
    """The API server answers 503 to the first Event, then recovers."""
    post = event_recorder(world.events, world.cluster)
    failed: list[bool] = []

    def flaky(obj: dict[str, Any]) -> bool:
        if not failed:
            failed.append(True)
            raise ClusterError("503 Service Unavailable", status=503)
        return post(obj)

    return flaky


def restarted(world: World, cluster: FakeCluster) -> Reconciler:
    if "patch_status" in vars(cluster):
        del cluster.patch_status  # the new process's API calls all go through
    return Reconciler(
        cluster,
        world.provider,
        post_event=event_recorder(world.events, cluster),
        clock=lambda: world.now,
    )


@pytest.mark.parametrize(
    ("fault", "dies"),
    [(kill_on_post, True), (kill_after_post, True), (fail_once, False)],
    ids=["killed before posting", "killed after posting", "API server fails once"],
)
def test_a_transition_event_is_posted_exactly_once(
    fault: Callable[[World], Callable[[dict[str, Any]], bool]], dies: bool
) -> None:
    world = World()
    world.reconcile()
    world.ready(world.revision())
    world.reconciler = Reconciler(
        world.cluster, world.provider, post_event=fault(world), clock=lambda: world.now
    )
    if dies:
        with pytest.raises(Killed):
            world.reconcile(1)
    else:  # the operator lives on: it comes back for the Event soon, not at the resync
        assert world.reconcile(1).requeue_after == TROUBLE_RECHECK
    assert world.status()["phase"] == "Succeeded"  # the transition itself is written
    assert [e["reason"] for e in world.status()["pendingEvents"]] == ["Deployed"]

    world.reconciler = restarted(world, world.cluster)
    world.reconcile(1)
    world.reconcile(1)
    assert [e.reason for e in world.events] == ["Deploying", "Deployed"]
    stored = [o for (kind, _, _), o in world.cluster.objects.items() if kind == "Event"]
    assert [o["reason"] for o in stored] == ["Deploying", "Deployed"]
    assert world.status()["pendingEvents"] == []


def test_an_event_names_its_resource_and_keeps_the_time_it_was_decided() -> None:
    world = World()
    world.reconcile()
    event = next(o for (kind, _, _), o in world.cluster.objects.items() if kind == "Event")
    assert event["metadata"]["name"].startswith(f"{NAME}.")
    assert event["metadata"]["namespace"] == NS
    assert event["involvedObject"] == {
        "apiVersion": "torchrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": NAME,
        "namespace": NS,
        "uid": "uid-1",
    }
    assert event["firstTimestamp"] == world.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (event["type"], event["reason"], event["count"]) == ("Normal", "Deploying", 1)


def test_an_event_the_api_server_refuses_is_dropped_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()

    def refuse(_obj: dict[str, Any]) -> bool:
        raise ClusterError("events is forbidden", status=403, transient=False)

    world.reconciler = Reconciler(
        world.cluster, world.provider, post_event=refuse, clock=lambda: world.now
    )
    world.reconcile()
    assert world.status()["phase"] == "Building"
    assert world.status()["pendingEvents"] == []
    assert "Deploying) not posted: events is forbidden" in caplog.text
