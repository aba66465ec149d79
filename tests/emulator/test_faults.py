"""Fault injection (errors, slowness, dropped watches) through the harness, and the
emulator run as its own process (the CLI) driven by its HTTP control endpoints."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.fixtures import EmulatorProcess, Kubectl, eventually

pytestmark = pytest.mark.emulator


def test_error_fault_filtered_by_method_and_path(
    emulator: KubeEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    emulator.set_fault(status=409, methods=("PATCH",), path="/configmaps/cm$", times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            core.patch_namespaced_config_map("cm", namespace, {"data": {"a": "b"}})
        assert caught.value.status == 409
    assert core.read_namespaced_config_map("cm", namespace).data is None  # reads unaffected
    core.patch_namespaced_config_map("cm", namespace, {"data": {"a": "b"}})  # times exhausted


def test_probabilistic_5xx(
    emulator: KubeEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    emulator.set_fault(status=503, probability=0.5, path=f"/namespaces/{namespace}/")
    outcomes = []
    for _ in range(40):
        try:
            core.list_namespaced_config_map(namespace)
            outcomes.append(200)
        except ApiException as exc:
            outcomes.append(exc.status)
    assert set(outcomes) == {200, 503}


def test_slow_fault_delays_requests(
    emulator: KubeEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    emulator.set_fault("slow", delay=0.5, path=f"/namespaces/{namespace}/configmaps")
    started = time.monotonic()
    core.list_namespaced_config_map(namespace)
    assert time.monotonic() - started >= 0.5


def test_drop_watches_cuts_open_streams(
    emulator: KubeEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    ended = threading.Event()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in watch.Watch().stream(
                core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=30
            ):
                pass
        except Exception as exc:  # a cut connection surfaces as a protocol error
            errors.append(exc)
        ended.set()

    thread = threading.Thread(target=consume)
    thread.start()
    ours = f"/api/v1/namespaces/{namespace}/configmaps?"
    # Not a count of open watches: other tests' streams close at any time.
    eventually(
        lambda: any(
            r["path"].startswith(ours) and "watch=" in r["path"] for r in emulator.requests()
        )
    )
    started = time.monotonic()

    def cut() -> bool:  # a drop before the stream has subscribed misses it: drop again
        emulator.drop_watches()
        return ended.wait(0.2)

    eventually(cut, timeout=5)  # the stream would have lasted 30 s
    thread.join()
    assert time.monotonic() - started < 5


def test_drop_watch_rule_cuts_new_streams_after_a_delay(
    emulator: KubeEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    emulator.set_fault("drop_watch", delay=0.3, path=f"/namespaces/{namespace}/configmaps")
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - urllib3 raises a protocol error on a cut
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=30
        ):
            pass
    assert time.monotonic() - started < 5


def test_cli_emulator_is_driven_over_http(
    emulator_process: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    kubectl = Kubectl(emulator_process.kubeconfig, tmp_path_factory.mktemp("cache"))
    assert "default" in kubectl("get", "ns").stdout
    control = emulator_process.control
    control.add_fault(kind="error", status=500, methods=["GET"], path="/api/v1/namespaces$")
    failed = kubectl("get", "ns", "--request-timeout=5s", check=False)
    assert failed.returncode != 0 and "injected fault" in failed.stderr
    assert control.state()["faults"][0]["fired"] >= 1
    control.clear_faults()
    assert kubectl("get", "ns").returncode == 0

    api = config.new_client_from_config(config_file=str(emulator_process.kubeconfig))
    try:
        core = client.CoreV1Api(api)
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        control.configure(historySize=2)
        for index in range(4):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"c{index}"}})
        with pytest.raises(ApiException) as caught:
            for _ in watch.Watch().stream(
                core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1
            ):
                pass
        assert caught.value.status == 410
    finally:
        api.close()
    assert any(
        r["path"].startswith("/api/v1/namespaces/default/configmaps") for r in control.requests()
    )
