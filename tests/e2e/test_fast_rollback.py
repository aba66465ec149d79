"""The fast watch on the real control plane: a canary answering only errors is rolled back
between analysis ticks, long before its first one; a canary with a trickle of failing
requests is left to the tick, where its critical error-rate check decides at once.

The analysis interval is 30 s (20 s for the trickle), the fast interval 1 s (a 2 s window,
Prometheus scrapes every second), so "before the first tick" is a behaviour, not a timing.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    OWN_OPERATOR_PREFIX,
    OperatorProcess,
    create_namespace,
    deploy_stable,
    dump,
    events_of,
    model_deployment,
    play,
    start_operator,
    status_of,
)
from tests.kube_cluster.cluster import ControlPlane
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter, Rates
from torchrollout.local.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BROKEN = Rates(requests=50, errors=50, labeled=20, correct=19)
TRICKLE = Rates(requests=0.3, errors=0.3, labeled=0.3, correct=0.3)


def canary_at_its_first_step(
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
    *,
    interval: str,
    rates: Rates,
) -> None:
    """Stable 1.0.0 deployed, then canary 2.0.0 (fastInterval 1s) serving `rates` at step 1."""
    deploy_stable(kubectl, md_api, exporter, namespace)
    body = model_deployment(namespace, "2.0.0")
    body["spec"]["canary"] = {**body["spec"]["canary"], "interval": interval, "fastInterval": "1s"}
    play(exporter, namespace, body, rates)
    kubectl.apply(dump(body))

    def step_started() -> bool:
        status = status_of(md_api, namespace)
        return status.get("canaryRevision") is not None and status.get("stepIndex") is not None

    eventually(step_started, timeout=30)


def test_a_canary_answering_only_errors_is_rolled_back_before_its_first_tick(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
) -> None:
    canary_at_its_first_step(kubectl, md_api, exporter, namespace, interval="30s", rates=BROKEN)
    eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=25)
    status = status_of(md_api, namespace)
    assert status["analysis"].get("failed", 0) == 0  # no analysis tick has run
    assert "fast watch: error-rate 1 over the last 2s" in status["message"]
    assert status.get("canaryWeight", 0) == 0
    (entry,) = [h for h in status["history"] if h["version"] == "2.0.0"]
    assert "rolledBackAt" in entry and "promotedAt" not in entry
    warnings = events_of(kubectl, namespace)
    assert "catastrophic 0.5" in warnings


def test_a_trickle_of_errors_is_left_to_the_tick_where_the_critical_check_decides(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
) -> None:
    canary_at_its_first_step(kubectl, md_api, exporter, namespace, interval="20s", rates=TRICKLE)
    time.sleep(12)  # a dozen fast readings, each on fewer requests than the floor of 5
    assert status_of(md_api, namespace).get("phase") == "Progressing"
    eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=30)
    status = status_of(md_api, namespace)
    assert "fast watch" not in status["message"]
    assert "(critical: error-rate)" in status["message"]
    assert status["analysis"]["failed"] == 1  # failureLimit is 2: the critical check decided


def test_a_rollback_caused_by_one_prometheus_outage_names_the_cause_once_everywhere(
    kube_cluster: ControlPlane,
    api_client: client.ApiClient,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    operator_process: OperatorProcess,  # running, to show that it leaves this namespace alone
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    namespace = f"{OWN_OPERATOR_PREFIX}{uuid.uuid4().hex[:6]}"
    create_namespace(api_client, namespace)
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    workdir = tmp_path_factory.mktemp("outage")
    running = start_operator(
        kube_cluster.kubeconfig, unreachable, workdir, args=(f"--namespace={namespace}",)
    )
    cause = f"Prometheus at {unreachable} is unreachable"
    core = client.CoreV1Api(api_client)

    def warnings_naming_the_cause() -> dict[str, str]:
        named = {}
        for event in core.list_namespaced_event(namespace).items:
            if cause in (event.message or ""):
                assert event.type == "Warning", f"{event.reason}: {event.message}"
                named[f"Event {event.reason}"] = event.message
        return named

    def both_warnings() -> dict[str, str] | None:
        named = warnings_naming_the_cause()
        return named if {"Event AnalysisError", "Event RollingBack"} <= set(named) else None

    try:
        deploy_stable(kubectl, md_api, exporter, namespace)  # a first deploy needs no metrics
        canary = model_deployment(namespace, "2.0.0")
        canary["spec"]["canary"]["analysis"]["consecutiveErrorLimit"] = 2
        kubectl.apply(dump(canary))
        eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=60)
        # Events are posted from a queue: wait for them while the operator runs.
        events = eventually(both_warnings, timeout=15)
    finally:
        running.stop()
    status = status_of(md_api, namespace)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    (entry,) = [h for h in status["history"] if h["version"] == "2.0.0"]
    said = {"message": status["message"], "Degraded": degraded["message"]}
    said["history"] = entry.get("reason", "")
    said.update(events)
    for where, text in said.items():
        assert text.count("is unreachable") <= 1, f"{where} says it more than once: {text}"
    assert "2 checks (accuracy, error-rate): " + cause in degraded["message"]
    described = kubectl("describe", "md", "fraud", "-n", namespace).stdout
    assert "<nil>" not in described
