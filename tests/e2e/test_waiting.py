"""A revision that cannot start, or cannot be judged, says why on a real control plane, and
the stable revision keeps serving: the real API server refuses pods of a missing
ServiceAccount, the real scheduler cannot place pods asking for GPUs on kwok's GPU-less nodes,
and an evaluation dataset nobody serves is an error of its own, not a model failure."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    GOOD,
    OperatorProcess,
    condition_of,
    deploy_stable,
    deployments,
    dump,
    events_of,
    model_deployment,
    play,
    revision_of,
    status_of,
)
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.mark.parametrize(
    ("runtime", "reason", "says"),
    [
        (
            {"serviceAccountName": "model-reader"},
            "ServiceAccountMissing",
            '"model-reader" not found',
        ),
        ({"gpus": 1}, "Unschedulable", "Insufficient nvidia.com/gpu"),
    ],
    ids=["missing-service-account", "gpus-without-gpu-nodes"],
)
def test_pods_that_cannot_start_are_named_and_rolled_back_at_the_deadline(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
    runtime: dict[str, Any],
    reason: str,
    says: str,
) -> None:
    stable = revision_of(deploy_stable(kubectl, md_api, exporter, namespace))
    canary = model_deployment(namespace, "2.0.0", runtime=runtime)
    kubectl.apply(dump(canary))

    def waiting() -> bool:
        condition = condition_of(status_of(md_api, namespace), "PodsReady")
        return condition.get("reason") == reason

    eventually(waiting, timeout=20)  # before the deadline: what is wrong and what to fix
    condition = condition_of(status_of(md_api, namespace), "PodsReady")
    assert condition["status"] == "False"
    assert says in condition["message"]
    assert "spec.runtime." in condition["message"]
    eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=40)
    status = status_of(md_api, namespace)
    assert says in status["rollbackReason"]
    assert deployments(api_client, namespace)[f"fraud-{stable}"] == 1
    assert f"fraud-{revision_of(canary)}" not in deployments(api_client, namespace) or (
        deployments(api_client, namespace)[f"fraud-{revision_of(canary)}"] == 0
    )


def test_an_unreachable_evaluation_dataset_pauses_without_blaming_the_model(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = model_deployment(
        namespace,
        "2.0.0",
        canary={
            "steps": [20, 60],
            "interval": "3s",
            "progressDeadlineSeconds": 20,
            "evaluation": {"datasetUri": "https://127.0.0.1:9/eval.jsonl", "samplesPerTick": 5},
            "analysis": {
                "metrics": [{"template": "accuracy", "min": 0.85}],
                "minSamples": 5,
                "consecutiveErrorLimit": 2,
                "onError": "pause",
            },
        },
    )
    play(exporter, namespace, canary, GOOD)
    kubectl.apply(dump(canary))
    eventually(lambda: status_of(md_api, namespace).get("phase") == "Paused", timeout=60)
    status = status_of(md_api, namespace)
    assert status["pauseReason"] == "Error"
    assert status["analysis"]["failed"] == 0  # the model was never judged bad
    ready = condition_of(status, "EvaluationReady")
    assert (ready["status"], ready["reason"]) == ("False", "DatasetUnreachable")
    assert "https://127.0.0.1:9/eval.jsonl" in ready["message"]
    assert "evaluation dataset https://127.0.0.1:9/eval.jsonl" in events_of(kubectl, namespace)
