"""The prometheus autoscaling engine on a real control plane and a real Prometheus.

The load is a gauge the test exporter serves per revision (`test_load`), read through
`signal: query`: the operator reads it once per interval, scales the revision's Deployment
with the HPA algorithm, and the test watches the Deployment's replicas.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    GOOD,
    OperatorProcess,
    condition_of,
    deploy_stable,
    dump,
    events_of,
    model_deployment,
    phase_is,
    play,
    plugin,
    revision_of,
    status_of,
)
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SCALING: dict[str, Any] = {
    "engine": "prometheus",
    "minReplicas": 1,
    "maxReplicas": 4,
    "signal": "query",
    "query": 'sum(test_load{namespace="{{ namespace }}",revision="{{ revision }}"})',
    "target": 10,
    "interval": "2s",
    "scaleDownStabilizationSeconds": 12,
    "scalePeriodSeconds": 1,
}


def replicas_of(apps: client.AppsV1Api, namespace: str, revision: str) -> tuple[int, int]:
    """(spec.replicas, readyReplicas) of the revision's Deployment."""
    found = apps.read_namespaced_deployment(f"fraud-{revision}", namespace)
    return found.spec.replicas, found.status.ready_replicas or 0


def watch_replicas(
    apps: client.AppsV1Api, namespace: str, revision: str, until: int, timeout: float
) -> tuple[list[int], float]:
    """Every replica count seen until it is `until`, and the seconds that took."""
    seen, started = [], time.monotonic()
    while time.monotonic() - started < timeout:
        wanted, _ = replicas_of(apps, namespace, revision)
        seen.append(wanted)
        if wanted == until:
            return seen, time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"replicas never reached {until} in {timeout:g}s: saw {seen[-20:]}")


def test_replicas_follow_the_signal_up_and_down_within_the_window_and_the_bounds(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    apps = client.AppsV1Api(api_client)
    stable = deploy_stable(kubectl, md_api, exporter, namespace, autoscaling=SCALING)
    revision = revision_of(stable)
    load = exporter.revision(namespace, revision)

    load.load = 25.0  # 2.5x the target per replica: up at once, as far as max
    seen, _ = watch_replicas(apps, namespace, revision, until=4, timeout=40)
    assert all(1 <= n <= 4 for n in seen)
    record = status_of(md_api, namespace)["scaling"][0]
    assert (record["role"], record["revision"], record["target"]) == ("stable", revision, 10.0)
    assert condition_of(status_of(md_api, namespace), "AutoscalerReady")["status"] == "True"
    assert "ScaledUp" in kubectl("get", "events", "-n", namespace).stdout

    # A tenth of the target: down to min, but not inside the 12 s window. The window counts
    # from the last read of the high load, up to an interval (2 s) before the change, and
    # status times are whole seconds: at least 12 - 2 - 1 s after it. Without the window
    # it would go at the next read, within about 3 s.
    load.load = 1.0
    try:
        seen, took = watch_replicas(apps, namespace, revision, until=1, timeout=60)
    except AssertionError as exc:
        scaling = status_of(md_api, namespace)["scaling"]
        raise AssertionError(f"{exc}; status.scaling: {scaling}") from exc
    assert took >= 8, f"scaled down after {took:.1f}s, inside the 12 s window"
    assert all(1 <= n <= 4 for n in seen)
    assert "-> 1 replica (" in events_of(kubectl, namespace)


def test_promotion_under_load_keeps_the_stable_service_at_full_strength(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    stable = deploy_stable(kubectl, md_api, exporter, namespace, autoscaling=SCALING)
    exporter.revision(namespace, revision_of(stable)).load = 25.0
    watch_replicas(apps, namespace, revision_of(stable), until=4, timeout=40)
    eventually(lambda: replicas_of(apps, namespace, revision_of(stable))[1] == 4, timeout=20)

    canary = model_deployment(namespace, "2.0.0", autoscaling=SCALING)
    play(exporter, namespace, canary, GOOD)
    exporter.revision(namespace, revision_of(canary)).load = 25.0
    kubectl.apply(dump(canary))
    lowest = 4
    deadline = time.monotonic() + 90
    while not phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"):
        assert time.monotonic() < deadline, status_of(md_api, namespace).get("message")
        selector = core.read_namespaced_service("fraud-stable", namespace).spec.selector
        serving = selector["torchrollout.io/revision"]
        lowest = min(lowest, replicas_of(apps, namespace, serving)[1])
        time.sleep(0.2)
    assert lowest >= 4, f"the stable Service's revision had {lowest} ready replicas"
    # The 60% step had 6 canary pods (replicas router); 2 are still going away.
    eventually(lambda: replicas_of(apps, namespace, revision_of(canary)) == (4, 4), timeout=30)
    record = status_of(md_api, namespace)["scaling"]
    assert [(r["role"], r["revision"]) for r in record] == [("stable", revision_of(canary))]
    line = "Replicas: stable  4/4 ready, desired 4; query 25 (target 10)"
    eventually(lambda: line in plugin(kubectl, "status", "fraud", "-n", namespace).stdout)
