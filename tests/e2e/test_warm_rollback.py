"""Reverts on a real control plane: warm inside `scaleDownDelaySeconds`, cold after it.

After a promotion the previous stable keeps its replicas (taking no traffic) for the delay,
so a `kubectl apply` of the old version is promoted by the first reconcile that sees it: the
ModelDeployment's status goes from Succeeded on the new version to Succeeded on the old one
in one write, and the old Deployment never goes to zero. After the delay it is at zero, and
a revert scales it up and waits for its pods (kwok's) before traffic moves, still without
analysis. Watches (not polls) record every status write and every Deployment change, so a
write in between could not go unseen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from tests.e2e.conftest import (
    GOOD,
    OperatorProcess,
    deploy_stable,
    deployments,
    dump,
    model_deployment,
    phase_is,
    play,
    revision_of,
    status_of,
)
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPLICAS = {"replicas": 2}


class Recorder:
    """Every object a watch streams, in order, from a thread until `stop()`."""

    def __init__(self, list_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.objects: list[Any] = []
        self.error: BaseException | None = None
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        listed = list_fn(*args, **kwargs)
        version = (
            listed["metadata"]["resourceVersion"]
            if isinstance(listed, dict)
            else listed.metadata.resource_version
        )
        self._thread = threading.Thread(
            target=self._run, args=(list_fn, args, {**kwargs, "resource_version": version})
        )
        self._thread.daemon = True
        self._thread.start()

    def _run(self, list_fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> None:
        try:
            while not self._stopped.is_set():
                for event in self._watch.stream(list_fn, *args, timeout_seconds=5, **kwargs):
                    self.objects.append(event["object"])
                    kwargs["resource_version"] = (
                        event["object"]["metadata"]["resourceVersion"]
                        if isinstance(event["object"], dict)
                        else event["object"].metadata.resource_version
                    )
                    if self._stopped.is_set():
                        return
        except BaseException as exc:  # reported by stop(), in the test's thread
            if not self._stopped.is_set():  # stop() shuts the stream's socket: not an error
                self.error = exc

    def stop(self) -> list[Any]:
        self._stopped.set()
        self._watch.stop()
        self._thread.join(timeout=10)
        if self.error is not None:
            raise self.error
        return self.objects


def watch_statuses(md_api: client.CustomObjectsApi, namespace: str) -> Recorder:
    return Recorder(
        md_api.list_namespaced_custom_object,
        "torchrollout.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
    )


def watch_replicas(api_client: client.ApiClient, namespace: str) -> Recorder:
    return Recorder(client.AppsV1Api(api_client).list_namespaced_deployment, namespace)


def phases(statuses: list[Any]) -> list[tuple[str, str]]:
    """(phase, stableVersion) of each status write, repeats folded."""
    seen: list[tuple[str, str]] = []
    for md in statuses:
        status = md.get("status") or {}
        entry = (status.get("phase", ""), status.get("stableVersion", ""))
        if not seen or seen[-1] != entry:
            seen.append(entry)
    return seen


def replicas_of(recorded: list[Any], name: str) -> list[int]:
    return [d.spec.replicas for d in recorded if d.metadata.name == name]


def serving(api_client: client.ApiClient, namespace: str) -> dict[str, int]:
    """Ready endpoints of the client Service `fraud`, counted by their pod's revision."""
    core = client.CoreV1Api(api_client)
    slices = client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=fraud"
    )
    counts: dict[str, int] = {}
    for endpoint in (e for s in slices.items for e in s.endpoints or []):
        if endpoint.conditions.ready and endpoint.target_ref is not None:
            pod = core.read_namespaced_pod(endpoint.target_ref.name, namespace)
            revision = pod.metadata.labels["torchrollout.io/revision"]
            counts[revision] = counts.get(revision, 0) + 1
    return counts


def counted(operator_process: OperatorProcess, outcome: str) -> float:
    wanted = f'torchrollout_rollouts_total{{outcome="{outcome}"}} '
    for line in operator_process.metrics().splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


def promote_second_version(
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
    **canary: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    stable = deploy_stable(kubectl, md_api, exporter, namespace, runtime=REPLICAS, canary=canary)
    second = model_deployment(namespace, "2.0.0", runtime=REPLICAS, canary=canary)
    play(exporter, namespace, second, GOOD)
    kubectl.apply(dump(second))
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=60)
    return stable, second


def test_a_revert_inside_the_delay_is_warm_and_moves_traffic_in_one_reconcile(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    recorded = watch_replicas(api_client, namespace)
    delay = {"scaleDownDelaySeconds": 120}
    stable, second = promote_second_version(kubectl, md_api, exporter, namespace, **delay)
    old, new = f"fraud-{revision_of(stable)}", f"fraud-{revision_of(second)}"
    status = status_of(md_api, namespace)
    assert status["warmRevision"]["revision"] == revision_of(stable)
    assert deployments(api_client, namespace) == {old: 2, new: 2}  # warm...
    core = client.CoreV1Api(api_client)
    selector = core.read_namespaced_service("fraud", namespace).spec.selector
    assert selector["torchrollout.io/revision"] == revision_of(second)  # ...and no traffic
    eventually(lambda: serving(api_client, namespace) == {revision_of(second): 2})
    warm_before = counted(operator_process, "instant_rollback_warm")

    statuses = watch_statuses(md_api, namespace)
    revert = model_deployment(namespace, "1.0.0", runtime=REPLICAS, canary=delay)
    kubectl.apply(dump(revert))  # git revert
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="1.0.0"), timeout=10)
    # The watch may deliver the write a moment after a GET has seen it.
    eventually(lambda: ("Succeeded", "1.0.0") in phases(list(statuses.objects)), timeout=10)
    writes = statuses.stop()
    # One reconcile: the status went from 2.0.0 to 1.0.0 in one write, never Promoting.
    assert phases(writes)[-2:] == [("Succeeded", "2.0.0"), ("Succeeded", "1.0.0")]
    assert all((md.get("status") or {}).get("phase") != "Promoting" for md in writes)
    status = status_of(md_api, namespace)
    entry = status["history"][-1]
    assert (entry["version"], entry["instantRollback"]) == ("1.0.0", "warm")
    assert "without analysis" in entry["reason"]
    assert f"warm: revision {revision_of(stable)} still had 2 ready replicas" in entry["reason"]
    assert "warm" in status["message"]
    assert status["canaryWeight"] == 0
    assert status["analysis"]["checks"] == []
    selectors = {
        s.metadata.name: s.spec.selector for s in core.list_namespaced_service(namespace).items
    }
    for service in ("fraud", "fraud-stable", "fraud-canary"):
        assert selectors[service]["torchrollout.io/revision"] == revision_of(stable), service
    # What kube-proxy would route to: the client Service's ready endpoints, old pods only.
    eventually(lambda: serving(api_client, namespace) == {revision_of(stable): 2})
    # 2.0.0 is warm in its turn; the old stable never went to zero.
    assert deployments(api_client, namespace) == {old: 2, new: 2}
    assert status["warmRevision"]["version"] == "2.0.0"
    changes = recorded.stop()
    assert replicas_of(changes, old) and 0 not in replicas_of(changes, old)
    eventually(lambda: counted(operator_process, "instant_rollback_warm") == warm_before + 1)


def test_after_the_delay_the_old_revision_is_at_zero_and_a_revert_is_cold(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    delay = {"scaleDownDelaySeconds": 2}
    stable, second = promote_second_version(kubectl, md_api, exporter, namespace, **delay)
    old, new = f"fraud-{revision_of(stable)}", f"fraud-{revision_of(second)}"
    eventually(lambda: deployments(api_client, namespace) == {old: 0, new: 2}, timeout=15)
    eventually(lambda: "warmRevision" not in status_of(md_api, namespace))
    apps = client.AppsV1Api(api_client)
    eventually(lambda: not apps.read_namespaced_deployment(old, namespace).status.ready_replicas)
    cold_before = counted(operator_process, "instant_rollback_cold")

    statuses = watch_statuses(md_api, namespace)
    revert = model_deployment(namespace, "1.0.0", runtime=REPLICAS, canary=delay)
    kubectl.apply(dump(revert))
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="1.0.0"), timeout=30)
    eventually(lambda: ("Succeeded", "1.0.0") in phases(list(statuses.objects)), timeout=10)
    writes = statuses.stop()
    # Cold: it waited in Promoting (no analysis) while its pods started, then took over.
    assert phases(writes)[-3:] == [
        ("Succeeded", "2.0.0"),
        ("Promoting", "2.0.0"),
        ("Succeeded", "1.0.0"),
    ]
    promoting = next(md["status"] for md in writes if md["status"]["phase"] == "Promoting")
    assert "cold" in promoting["message"] and "waiting for them" in promoting["message"]
    status = status_of(md_api, namespace)
    entry = status["history"][-1]
    assert (entry["version"], entry["instantRollback"]) == ("1.0.0", "cold")
    assert "without analysis" in entry["reason"]
    assert "cold: revision" in entry["reason"] and "2 ready replicas after" in entry["reason"]
    assert status["analysis"]["checks"] == []
    assert deployments(api_client, namespace)[old] == 2
    eventually(lambda: counted(operator_process, "instant_rollback_cold") == cold_before + 1)
