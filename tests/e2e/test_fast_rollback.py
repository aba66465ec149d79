"""The fast watch on the real control plane: a canary answering only errors is rolled back
between analysis ticks, long before its first one; a canary with a trickle of failing
requests is left to the tick, where its critical error-rate check decides at once.

The analysis interval is 30 s (20 s for the trickle), the fast interval 1 s (a 2 s window,
Prometheus scrapes every second), so "before the first tick" is a behaviour, not a timing.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    OperatorProcess,
    deploy_stable,
    dump,
    events_of,
    model_deployment,
    play,
    status_of,
)
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter, Rates

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BROKEN = Rates(requests=50, errors=50, labeled=20, correct=19)
TRICKLE = Rates(requests=0.3, errors=0.3, labeled=0.3, correct=0.3)


def canary_with(namespace: str, interval: str) -> dict[str, object]:
    body = model_deployment(namespace, "2.0.0")
    body["spec"]["canary"] = {**body["spec"]["canary"], "interval": interval, "fastInterval": "1s"}
    return body


def step_started(md_api: client.CustomObjectsApi, namespace: str) -> bool:
    status = status_of(md_api, namespace)
    return status.get("canaryRevision") is not None and status.get("stepIndex") is not None


def test_a_canary_answering_only_errors_is_rolled_back_before_its_first_tick(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = canary_with(namespace, "30s")
    play(exporter, namespace, canary, BROKEN)
    kubectl.apply(dump(canary))
    eventually(lambda: step_started(md_api, namespace), timeout=30)
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
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = canary_with(namespace, "20s")
    play(exporter, namespace, canary, TRICKLE)
    kubectl.apply(dump(canary))
    eventually(lambda: step_started(md_api, namespace), timeout=30)
    time.sleep(12)  # a dozen fast readings, each on fewer requests than the floor of 5
    assert status_of(md_api, namespace).get("phase") == "Progressing"
    eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=30)
    status = status_of(md_api, namespace)
    assert "fast watch" not in status["message"]
    assert "(critical: error-rate)" in status["message"]
    assert status["analysis"]["failed"] == 1  # failureLimit is 2: the critical check decided
