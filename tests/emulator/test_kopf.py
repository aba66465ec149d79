"""Conformance through a real kopf process: handlers, status patches, events, finalizers,
children, timers, and resuming after a restart, against the API server over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.emulator.conftest import CONTROLLERS, GROUP, PLURAL, VERSION, widget
from tests.kube_emulator.fixtures import REPO_ROOT, eventually

pytestmark = pytest.mark.emulator
OPERATOR = Path(__file__).with_name("widget_operator.py")


@contextmanager
def kopf_operator(kubeconfig: Path, namespace: str, log: Path) -> Iterator[Path]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--verbose",
                "--namespace",
                namespace,
                str(OPERATOR),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield log
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _get(widgets: client.CustomObjectsApi, namespace: str) -> dict:
    return widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")


def test_kopf_operator_full_lifecycle(
    kubeconfig: Path,
    api_client: client.ApiClient,
    widgets: client.CustomObjectsApi,
    namespace: str,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(api_client)
    log = tmp_path / "kopf.log"
    with kopf_operator(kubeconfig, namespace, log):
        created = widgets.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, widget("w1")
        )
        eventually(
            lambda: _get(widgets, namespace).get("status", {}).get("phase") == "Created", timeout=20
        )
        current = _get(widgets, namespace)
        assert "example.com/kopf-finalizer" in current["metadata"]["finalizers"]
        child = core.read_namespaced_config_map("w1-child", namespace)
        assert child.metadata.owner_references[0].uid == created["metadata"]["uid"]
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=w1")
        assert "ChildCreated" in [e.reason for e in events.items]

        widgets.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "w1", {"spec": {"color": "blue"}}
        )
        eventually(lambda: _get(widgets, namespace)["status"].get("color") == "blue", timeout=20)
        eventually(lambda: _get(widgets, namespace)["status"].get("ticks", 0) >= 3, timeout=20)

    # A restart finds the existing object: the resume handler runs, creation does not repeat.
    with kopf_operator(kubeconfig, namespace, log):
        eventually(
            lambda: (
                _get(widgets, namespace)["metadata"]
                .get("annotations", {})
                .get("example.com/resumed")
                == "yes"
            ),
            timeout=20,
        )
        widgets.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")

        def deleted() -> bool:
            try:
                _get(widgets, namespace)
            except ApiException as exc:
                return exc.status == 404
            return False

        eventually(deleted, timeout=20)
        assert core.read_namespaced_config_map("w1-tombstone", namespace)

        def child_collected() -> bool:
            names = [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
            return "w1-child" not in names

        eventually(child_collected, timeout=CONTROLLERS)

    text = log.read_text()
    assert text.count("Handler 'create_child' succeeded") == 1, text[-3000:]
    for bad in ("Traceback", "APIUnprocessableEntity", "inconsistencies", "status=500"):
        assert bad not in text, text[-3000:]
