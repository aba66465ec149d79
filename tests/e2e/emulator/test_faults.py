"""What a real API server cannot stage on demand, on the emulator: faults, unready pods, and
a resource that reached the operator although the CRD's CEL rules would refuse it."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    GOOD,
    OperatorProcess,
    deploy_stable,
    dump,
    model_deployment,
    phase_is,
    play,
    revision_of,
    status_of,
)
from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_a_canary_never_ready_is_rolled_back_at_the_deadline(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    emulator: KubeEmulator,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = model_deployment(namespace, "2.0.0", canary={"progressDeadlineSeconds": 4})
    emulator.deployments.set_unready(namespace, f"fraud-{revision_of(canary)}")
    kubectl.apply(dump(canary))
    eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=30)
    status = status_of(md_api, namespace)
    assert "was not ready within 4s" in status["message"]
    archive = next(c for c in status["conditions"] if c["type"] == "ArchiveReady")
    assert (archive["status"], archive["reason"]) == ("False", "NotReadyInTime")


def test_a_resource_the_crd_would_refuse_gets_a_condition_and_the_operator_keeps_serving(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
) -> None:
    # The emulator checks the CRD's OpenAPI schema but not its CEL rules, as an API server
    # with an older copy of the CRD would not: the operator's own validation says what to fix.
    decreasing = model_deployment(namespace, "1.0.0", canary={"steps": [60, 20]})
    kubectl.apply(dump(decreasing))
    eventually(
        lambda: "steps must increase strictly" in status_of(md_api, namespace).get("message", ""),
        timeout=20,
    )
    deploy_stable(kubectl, md_api, exporter, namespace)  # fixed: it proceeds
    assert operator_process.process is not None and operator_process.process.poll() is None
    assert "torchrollout_check_verdicts" in operator_process.metrics()
    assert operator_process.healthy()


def test_conflicts_server_errors_and_broken_watches_lose_nothing(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    emulator: KubeEmulator,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = model_deployment(namespace, "2.0.0", canary={"steps": [10, 30, 60]})
    play(exporter, namespace, canary, GOOD)
    # The operator's next status writes answer 409, its next Deployment writes 503, and
    # every watch is cut after 2s (the open ones at once).
    faults = [
        emulator.set_fault("error", status=409, times=2, methods=("PATCH",), path="/status$"),
        emulator.set_fault(
            "error", status=503, times=2, methods=("PATCH", "POST"), path="/deployments"
        ),
        emulator.set_fault("drop_watch", delay=2.0),
    ]
    emulator.drop_watches()
    kubectl.apply(dump(canary))
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=90)
    emulator.clear_faults()
    assert [fault.fired > 0 for fault in faults] == [True, True, True]
    status = status_of(md_api, namespace)
    assert [h["version"] for h in status["history"]] == ["1.0.0", "2.0.0"]
    assert operator_process.process is not None and operator_process.process.poll() is None
