"""Rollouts as users run them on a real control plane: kubectl apply, the operator with the
chart's RBAC, real Prometheus metrics, pods admitted under the restricted Pod Security
Standard."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    BAD,
    GOOD,
    OperatorProcess,
    condition_of,
    deploy_stable,
    deployments,
    dump,
    get_md,
    model_deployment,
    phase_is,
    play,
    plugin,
    revision_of,
    status_of,
)
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_first_deploy_then_a_good_canary_is_promoted(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    stable = deploy_stable(kubectl, md_api, exporter, namespace)
    old = revision_of(stable)
    table = kubectl("get", "md", "-n", namespace).stdout
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "AGE"]
    assert table.split("\n")[1].split()[:3] == ["fraud", "Succeeded", "1.0.0"]
    assert deployments(api_client, namespace) == {f"fraud-{old}": 1}
    # Admitted under the restricted Pod Security Standard, scheduled, Ready (kwok's kubelet).
    pods = (
        client.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"torchrollout.io/revision={old}")
        .items
    )
    assert [(p.status.phase, p.spec.node_name.startswith("kwok-node-")) for p in pods] == [
        ("Running", True)
    ]

    canary = model_deployment(namespace, "2.0.0")
    play(exporter, namespace, canary, GOOD)
    kubectl.apply(dump(canary))
    new = revision_of(canary)
    eventually(
        lambda: phase_is(md_api, namespace, "Progressing", canaryVersion="2.0.0"), timeout=20
    )
    core = client.CoreV1Api(api_client)
    # While the canary runs, the client Service selects both revisions' pods (the replicas
    # router's split), whatever it selected before.
    eventually(
        lambda: (
            core.read_namespaced_service("fraud", namespace).spec.selector
            == {"torchrollout.io/deployment": "fraud"}
        ),
        timeout=10,
    )
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=60)

    selectors = {
        s.metadata.name: s.spec.selector for s in core.list_namespaced_service(namespace).items
    }
    assert selectors["fraud-stable"]["torchrollout.io/revision"] == new
    # No canary: the client Service selects the new stable alone, and the previous one stays
    # warm (scaleDownDelaySeconds, 30 s) for a revert.
    assert selectors["fraud"] == {
        "torchrollout.io/deployment": "fraud",
        "torchrollout.io/revision": new,
    }
    assert deployments(api_client, namespace) == {f"fraud-{old}": 1, f"fraud-{new}": 1}
    status = status_of(md_api, namespace)
    assert [h["version"] for h in status["history"]] == ["1.0.0", "2.0.0"]
    verdicts = {c["name"]: c["verdict"] for c in status["analysis"]["checks"]}
    assert verdicts == {"accuracy": "Successful", "error-rate": "Successful"}
    described = kubectl("describe", "md", "fraud", "-n", namespace).stdout
    assert "Promoted" in described and "StepAdvanced" in described


def test_a_bad_canary_is_rolled_back_with_a_degraded_condition(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = model_deployment(namespace, "2.0.0")
    play(exporter, namespace, canary, BAD)
    kubectl.apply(dump(canary))
    eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=60)
    status = status_of(md_api, namespace)
    assert status["stableVersion"] == "1.0.0"
    assert status["canaryWeight"] == 0
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert "accuracy: 0.5 is below the minimum 0.85" in degraded["message"]
    eventually(lambda: deployments(api_client, namespace)[f"fraud-{revision_of(canary)}"] == 0)
    assert "rolled back" in kubectl("get", "md", "fraud", "-n", namespace, "-o", "wide").stdout


@pytest.mark.parametrize(
    ("command", "phase"),
    [("promote", "Succeeded"), ("abort", "RolledBack")],
)
def test_manual_control_with_the_kubectl_plugin(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
    command: str,
    phase: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = model_deployment(namespace, "2.0.0", canary={"interval": "1h"})  # would never advance
    play(exporter, namespace, canary, GOOD)
    kubectl.apply(dump(canary))
    eventually(lambda: phase_is(md_api, namespace, "Progressing", stepIndex=0), timeout=20)
    watching = subprocess.Popen(
        [str(kubectl.binary), "torchrollout", "status", "fraud", "-n", namespace, "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubectl.kubeconfig)},
    )
    assert watching.stdout is not None
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(watching.stdout or ()), daemon=True)
    reader.start()
    eventually(lambda: any(line.startswith("Phase:") for line in printed), timeout=20)
    if command == "promote":
        done = plugin(kubectl, command, "fraud", "-n", namespace)
        assert f"{command} requested" in done.stdout
    else:  # the annotation the plugin sets, by hand
        kubectl("annotate", "md", "fraud", "-n", namespace, f"torchrollout.io/{command}=now")
    eventually(lambda: status_of(md_api, namespace).get("phase") == phase, timeout=20)
    shown = plugin(kubectl, "status", "fraud", "-n", namespace).stdout
    assert f"Phase:    {phase}" in shown
    time.sleep(2)  # a read or two after the change
    watching.send_signal(signal.SIGINT)
    watching.wait(timeout=15)
    reader.join(timeout=5)
    assert watching.stderr is not None
    err = watching.stderr.read()
    watching.stderr.close()
    watching.stdout.close()
    assert watching.returncode == 0, err
    frames = "".join(printed).split("\n\n")  # not a terminal: a blank line between redraws
    assert "Phase:    Progressing" in frames[0]
    assert f"Phase:    {phase}" in frames[-1]
    assert "Traceback" not in err


def test_retry_after_a_rollback_and_history_in_the_plugin(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = model_deployment(namespace, "2.0.0")
    play(exporter, namespace, canary, BAD)
    kubectl.apply(dump(canary))
    eventually(lambda: status_of(md_api, namespace).get("phase") == "RolledBack", timeout=60)
    play(exporter, namespace, canary, GOOD)  # the problem was elsewhere and is fixed
    plugin(kubectl, "retry", "fraud", "-n", namespace)
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=60)
    history = plugin(kubectl, "history", "fraud", "-n", namespace).stdout.splitlines()
    assert [line.split()[0] for line in history[1:]] == ["1.0.0", "2.0.0", "2.0.0"]
    assert "rolled back" in history[2] and "promoted" in history[3]


def test_reverting_to_a_recent_version_rolls_back_instantly(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = model_deployment(namespace, "2.0.0")
    play(exporter, namespace, canary, GOOD)
    kubectl.apply(dump(canary))
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=60)
    kubectl.apply(dump(model_deployment(namespace, "1.0.0")))  # git revert
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="1.0.0"), timeout=20)
    status = status_of(md_api, namespace)
    assert status["analysis"]["checks"] == []  # no analysis ran for the revert
    assert "without analysis" in status["history"][-1]["reason"]


def test_a_new_version_mid_canary_supersedes_it(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    stable = deploy_stable(kubectl, md_api, exporter, namespace)
    second = model_deployment(namespace, "2.0.0", canary={"interval": "1h"})
    kubectl.apply(dump(second))
    eventually(lambda: phase_is(md_api, namespace, "Progressing", stepIndex=0), timeout=20)
    third = model_deployment(namespace, "3.0.0")
    play(exporter, namespace, third, GOOD)
    kubectl.apply(dump(third))
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="3.0.0"), timeout=60)
    names = set(deployments(api_client, namespace))
    assert f"fraud-{revision_of(second)}" not in names
    assert {f"fraud-{revision_of(stable)}", f"fraud-{revision_of(third)}"} <= names


def test_an_operator_killed_mid_canary_resumes_without_a_double_transition(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    canary = model_deployment(namespace, "2.0.0", canary={"steps": [10, 30, 60]})
    play(exporter, namespace, canary, GOOD)
    kubectl.apply(dump(canary))
    eventually(lambda: phase_is(md_api, namespace, "Progressing", stepIndex=1), timeout=30)
    operator_process.restart()
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="2.0.0"), timeout=60)
    status = status_of(md_api, namespace)
    assert [h["version"] for h in status["history"]] == ["1.0.0", "2.0.0"]
    core = client.CoreV1Api(api_client)

    def promoted() -> int:
        events = core.list_namespaced_event(namespace).items
        return sum(e.count or 1 for e in events if e.reason == "Promoted")

    # The Event follows the status write; once there, it is there once.
    eventually(lambda: promoted() > 0, timeout=10)
    time.sleep(2)
    assert promoted() == 1


def test_gateway_api_router_sets_and_reads_httproute_weights(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    traffic = {"router": "gateway-api", "gatewayRef": {"name": "edge", "namespace": "gateways"}}
    deploy_stable(kubectl, md_api, exporter, namespace, traffic=traffic)
    canary = model_deployment(namespace, "2.0.0", traffic=traffic, canary={"interval": "1h"})
    kubectl.apply(dump(canary))
    eventually(
        lambda: phase_is(md_api, namespace, "Progressing", stepIndex=0, canaryWeight=20), timeout=20
    )
    route = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "fraud"
    )
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"fraud-stable": 80, "fraud-canary": 20}
    router = next(
        c for c in status_of(md_api, namespace)["conditions"] if c["type"] == "RouterReady"
    )
    assert router["status"] == "True"


def test_delete_leaves_nothing_behind(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    deploy_stable(kubectl, md_api, exporter, namespace)
    assert get_md(md_api, namespace)["metadata"]["finalizers"] == [
        "operator.torchrollout.io/finalizer"
    ]
    kubectl("delete", "md", "fraud", "-n", namespace, "--timeout=30s")
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    # The garbage collector follows ownerReferences: Deployments, their ReplicaSets and pods.
    eventually(lambda: not apps.list_namespaced_deployment(namespace).items, timeout=30)
    eventually(lambda: not apps.list_namespaced_replica_set(namespace).items, timeout=30)
    eventually(lambda: not core.list_namespaced_pod(namespace).items, timeout=30)
    eventually(lambda: not core.list_namespaced_service(namespace).items, timeout=30)
    owned = [
        c.metadata.name
        for c in core.list_namespaced_config_map(namespace).items
        if c.metadata.name != "kube-root-ca.crt"  # every namespace's, from the controller-manager
    ]
    assert owned == []


@pytest.mark.parametrize(
    ("steps", "field", "says"),
    [
        ([0, 200], "spec.canary.steps[1]", "should be less than 100"),
        ([60, 20], "spec.canary.steps", "increase strictly"),
    ],
)
def test_an_invalid_resource_is_refused_by_the_api_server(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
    steps: list[int],
    field: str,
    says: str,
) -> None:
    broken = model_deployment(namespace, "1.0.0", canary={"steps": steps})
    refused = kubectl("apply", "-f", "-", input=dump(broken), check=False)
    assert refused.returncode != 0
    assert field in refused.stderr and says in refused.stderr, refused.stderr
    deploy_stable(kubectl, md_api, exporter, namespace)  # the fixed resource proceeds


def test_changing_the_replica_count_scales_the_stable_in_place_without_a_canary(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    stable = deploy_stable(kubectl, md_api, exporter, namespace)
    name = f"fraud-{revision_of(stable)}"
    kubectl.apply(dump(model_deployment(namespace, "1.0.0", runtime={"replicas": 3})))
    apps = client.AppsV1Api(api_client)
    eventually(
        lambda: apps.read_namespaced_deployment(name, namespace).status.ready_replicas == 3,
        timeout=30,
    )
    assert deployments(api_client, namespace) == {name: 3}
    status = status_of(md_api, namespace)
    assert (status["phase"], status.get("canaryVersion")) == ("Succeeded", None)
    assert [h["version"] for h in status["history"]] == ["1.0.0"]


def test_a_route_the_gateway_rejects_says_so_and_moves_no_traffic(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    traffic = {"router": "gateway-api", "gatewayRef": {"name": "edge", "namespace": "gateways"}}
    deploy_stable(kubectl, md_api, exporter, namespace, traffic=traffic)
    # No metrics for the canary: every 2s tick is Inconclusive and the canary holds its step,
    # so each tick reads the route again.
    held = {"interval": "2s", "analysis": {"inconclusiveLimit": 30}}
    canary = model_deployment(namespace, "2.0.0", traffic=traffic, canary=held)
    kubectl.apply(dump(canary))
    eventually(lambda: phase_is(md_api, namespace, "Progressing", canaryWeight=20), timeout=20)
    # What a Gateway controller writes when a listener does not take the route.
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        "gateway.networking.k8s.io",
        "v1",
        namespace,
        "httproutes",
        "fraud",
        {
            "status": {
                "parents": [
                    {
                        "parentRef": {"name": "edge", "namespace": "gateways"},
                        "controllerName": "example.com/gateway-controller",
                        "conditions": [
                            {
                                "type": "Accepted",
                                "status": "False",
                                "reason": "NotAllowedByListeners",
                                "message": "no listener allows routes from this namespace",
                                "lastTransitionTime": "2026-01-01T00:00:00Z",
                                "observedGeneration": 1,
                            }
                        ],
                    }
                ]
            }
        },
    )

    def rejected() -> bool:
        status = status_of(md_api, namespace)
        router = condition_of(status, "RouterReady")
        return router["reason"] == "RouteNotAccepted" and status["canaryWeight"] == 0

    eventually(rejected, timeout=20)
    router = condition_of(status_of(md_api, namespace), "RouterReady")
    assert router["status"] == "False"
    assert "NotAllowedByListeners" in router["message"]
    assert "spec.traffic.gatewayRef" in router["message"]
