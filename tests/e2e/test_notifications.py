"""spec.notifications on a real control plane: the operator (with the chart's RBAC) reads the
webhook URL from a Secret of the resource's namespace and POSTs to a loopback receiver."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    BAD,
    GOOD,
    OperatorProcess,
    Receiver,
    condition_of,
    deploy_stable,
    dump,
    events_of,
    model_deployment,
    phase_is,
    play,
    status_of,
)
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def webhook_secret(api_client: client.ApiClient, namespace: str, url: str) -> None:
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        {"metadata": {"name": "hooks"}, "stringData": {"url": url}},
    )


NOTIFY = [{"type": "webhook", "secretRef": {"name": "hooks", "key": "url"}}]


def test_a_good_canary_announces_its_steps_and_promotion(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
    receiver: Receiver,
) -> None:
    webhook_secret(api_client, namespace, receiver.url)
    deploy_stable(kubectl, md_api, exporter, namespace, notifications=NOTIFY)
    canary = model_deployment(namespace, "2.0.0", notifications=NOTIFY)
    play(exporter, namespace, canary, GOOD)
    kubectl.apply(dump(canary))
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=60)
    eventually(lambda: "promoted" in receiver.events(), timeout=15)
    assert "stepAdvanced" in receiver.events()
    promoted = next(b for b in receiver.bodies if b["event"] == "promoted")
    assert (promoted["namespace"], promoted["name"]) == (namespace, "fraud")
    assert (promoted["stableVersion"], promoted["canaryVersion"]) == ("2.0.0", "2.0.0")
    steps = [b for b in receiver.bodies if b["event"] == "stepAdvanced"]
    assert all(s["canaryVersion"] == "2.0.0" for s in steps)
    # The first step starts once the canary is ready; the next one follows passed checks.
    assert len(steps) == 2
    assert {c["name"] for c in steps[1]["checks"]} == {"accuracy", "error-rate"}
    eventually(
        lambda: (
            condition_of(status_of(md_api, namespace), "NotificationsReady").get("status") == "True"
        ),
        timeout=15,
    )


def test_a_bad_canary_announces_the_rollback_and_its_failing_check(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
    receiver: Receiver,
) -> None:
    webhook_secret(api_client, namespace, receiver.url)
    only = [{**NOTIFY[0], "events": ["rolledBack"]}]
    deploy_stable(kubectl, md_api, exporter, namespace, notifications=only)
    canary = model_deployment(namespace, "2.0.0", notifications=only)
    play(exporter, namespace, canary, BAD)
    kubectl.apply(dump(canary))
    eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=60)
    eventually(lambda: "rolledBack" in receiver.events(), timeout=15)
    assert receiver.events() == ["rolledBack"]  # the target asked for nothing else
    (body,) = receiver.bodies
    assert body["phase"] == "RolledBack" and body["canaryVersion"] == "2.0.0"
    failing = {c["name"]: c for c in body["checks"]}
    assert set(failing) == {"accuracy"}
    assert failing["accuracy"]["value"] == pytest.approx(0.5)
    assert "accuracy Failed: 0.5" in body["text"]


def test_a_failing_receiver_is_a_condition_and_the_rollout_goes_on(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
    receiver: Receiver,
) -> None:
    receiver.status = 500
    webhook_secret(api_client, namespace, receiver.url)
    deploy_stable(kubectl, md_api, exporter, namespace, notifications=NOTIFY)
    canary = model_deployment(namespace, "2.0.0", notifications=NOTIFY)
    play(exporter, namespace, canary, GOOD)
    kubectl.apply(dump(canary))
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=60)
    ready = eventually(
        lambda: condition_of(status_of(md_api, namespace), "NotificationsReady") or None,
        timeout=15,
    )
    assert ready["status"] == "False" and ready["reason"] == "DeliveryFailed"
    assert "notifications[0] (webhook, Secret hooks key url)" in ready["message"]
    assert "HTTP 500" in ready["message"]
    assert receiver.url not in ready["message"]
    assert len(receiver.bodies) >= 3  # retried
    eventually(lambda: "failed after 3 tries: HTTP 500" in events_of(kubectl, namespace))
