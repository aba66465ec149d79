"""Watches (resume, 410 Gone, bookmarks, selectors, timeouts) and the object lifecycle
(finalizers, garbage collection in every propagation mode, namespace and CRD deletion),
through the unmodified kubernetes Python client."""

from __future__ import annotations

import time

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.emulator.conftest import (
    CONTROLLERS,
    GROUP,
    PLURAL,
    ROOT_CA,
    VERSION,
    WIDGETS_CRD,
    crd_served,
    widget,
)
from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.fixtures import eventually

pytestmark = pytest.mark.emulator


def _collect(stream_fn, *args, **kwargs) -> list[tuple[str, str]]:
    return [
        (e["type"], e["raw_object"]["metadata"].get("name", ""))
        for e in watch.Watch().stream(stream_fn, *args, **kwargs)
    ]


def test_watch_resumes_from_a_resource_version(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "before"}})
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", namespace, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("a", namespace)
    events = _collect(
        core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=1
    )
    assert events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_watch_without_resource_version_starts_with_existing_objects(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "old"}})
    events = _collect(core.list_namespaced_config_map, namespace, timeout_seconds=1)
    assert sorted(events) == [("ADDED", ROOT_CA), ("ADDED", "old")]


def test_watch_timeout_seconds_ends_the_stream(
    api_client: client.ApiClient, namespace: str
) -> None:
    started = time.monotonic()
    rv = (
        client.CoreV1Api(api_client).list_namespaced_config_map(namespace).metadata.resource_version
    )
    _collect(
        client.CoreV1Api(api_client).list_namespaced_config_map,
        namespace,
        resource_version=rv,
        timeout_seconds=1,
    )
    assert 0.9 <= time.monotonic() - started < 5


def test_watch_from_a_compacted_resource_version_is_410(
    emulator: KubeEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    emulator.set_history_size(3)
    for index in range(5):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"cm{index}"}})
    with pytest.raises(ApiException) as caught:
        _collect(core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=1)
    assert caught.value.status == 410
    fresh = core.list_namespaced_config_map(namespace).metadata.resource_version
    assert (
        _collect(
            core.list_namespaced_config_map, namespace, resource_version=fresh, timeout_seconds=1
        )
        == []
    )


def test_label_selector_transitions_become_added_and_deleted(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.patch_namespaced_config_map("x", namespace, {"metadata": {"labels": {"on": "yes"}}})
    core.patch_namespaced_config_map("x", namespace, {"data": {"k": "v"}})
    core.patch_namespaced_config_map("x", namespace, {"metadata": {"labels": {"on": None}}})
    events = _collect(
        core.list_namespaced_config_map,
        namespace,
        resource_version=rv,
        label_selector="on=yes",
        timeout_seconds=1,
    )
    assert events == [("ADDED", "x"), ("MODIFIED", "x"), ("DELETED", "x")]


def test_initial_events_end_with_a_bookmark(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map,
            namespace,
            allow_watch_bookmarks=True,
            send_initial_events=True,
            resource_version_match="NotOlderThan",
            timeout_seconds=1,
            deserialize=False,
        )
    )
    seen = [(e["type"], e["object"]["metadata"].get("name")) for e in events]
    assert seen[:3] == [("ADDED", ROOT_CA), ("ADDED", "x"), ("BOOKMARK", None)]
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_idle_watches_get_periodic_bookmarks(
    emulator: KubeEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    emulator.set_bookmark_interval(0.2)  # a real server sends one about every minute
    core = client.CoreV1Api(api_client)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    kinds = [
        e["type"]
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            namespace,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
            deserialize=False,
        )
    ]
    assert kinds.count("BOOKMARK") >= 3


def test_finalizers_hold_deletion(widgets: client.CustomObjectsApi, namespace: str) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    body = widget("w1")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    pending = widgets.delete_namespaced_custom_object(*args)
    assert pending["metadata"]["deletionTimestamp"]
    assert pending["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as caught:  # no new finalizers once deleting
        widgets.patch_namespaced_custom_object(
            *args, {"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}
        )
    assert caught.value.status == 422
    still = widgets.get_namespaced_custom_object(*args)
    assert still["metadata"]["deletionTimestamp"] == pending["metadata"]["deletionTimestamp"]
    widgets.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as caught:
        widgets.get_namespaced_custom_object(*args)
    assert caught.value.status == 404


def _owned_config_map(name: str, owner: dict, *, block: bool = False) -> dict:
    meta = owner["metadata"]
    return {
        "metadata": {
            "name": name,
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "blockOwnerDeletion": block,
                }
            ],
        }
    }


def _exists(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_background_garbage_collection(
    api_client: client.ApiClient, widgets: client.CustomObjectsApi, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner = widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    core.create_namespaced_config_map(namespace, _owned_config_map("child", owner))
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "bystander"}})
    widgets.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    eventually(lambda: not _exists(core, namespace, "child"), timeout=CONTROLLERS)
    assert _exists(core, namespace, "bystander")


def test_orphan_propagation_keeps_dependents(
    api_client: client.ApiClient, widgets: client.CustomObjectsApi, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner = widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    core.create_namespaced_config_map(namespace, _owned_config_map("child", owner))
    widgets.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "w1", propagation_policy="Orphan"
    )

    def orphaned() -> bool:
        return not core.read_namespaced_config_map("child", namespace).metadata.owner_references

    eventually(orphaned, timeout=CONTROLLERS)
    eventually(
        lambda: (
            not widgets.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        ),
        timeout=CONTROLLERS,
    )


def test_foreground_deletion_waits_for_blocking_dependents(
    api_client: client.ApiClient, widgets: client.CustomObjectsApi, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    owner = widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    child = _owned_config_map("child", owner, block=True)
    child["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_config_map(namespace, child)
    deleting = widgets.delete_namespaced_custom_object(*args, propagation_policy="Foreground")
    assert "foregroundDeletion" in deleting["metadata"]["finalizers"]
    eventually(
        lambda: core.read_namespaced_config_map("child", namespace).metadata.deletion_timestamp,
        timeout=CONTROLLERS,
    )
    assert widgets.get_namespaced_custom_object(*args)["metadata"]["deletionTimestamp"]
    core.patch_namespaced_config_map("child", namespace, {"metadata": {"finalizers": None}})

    def owner_gone() -> bool:
        try:
            widgets.get_namespaced_custom_object(*args)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(owner_gone, timeout=CONTROLLERS)


def test_deleting_a_namespace_deletes_its_contents(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": "doomed"}})
    held = {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    core.create_namespaced_config_map("doomed", held)
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "free"}})
    core.delete_namespace("doomed")
    assert core.read_namespace("doomed").status.phase == "Terminating"
    eventually(
        lambda: (
            [c.metadata.name for c in core.list_namespaced_config_map("doomed").items] == ["held"]
        ),
        timeout=CONTROLLERS,
    )
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map("doomed", {"metadata": {"name": "late"}})
    assert caught.value.status == 403

    def holdup_reported() -> bool:  # what `kubectl describe namespace` shows
        namespace = core.read_namespace("doomed")
        conditions = {c.type: (c.status, c.message) for c in namespace.status.conditions or []}
        assert conditions.get("NamespaceContentRemaining") == (
            "True",
            "Some resources are remaining: configmaps. has 1 resource instances",
        )
        assert conditions.get("NamespaceFinalizersRemaining") == (
            "True",
            "Some content in the namespace has finalizers remaining: "
            "example.com/hold in 1 resource instances",
        )
        return True

    eventually(holdup_reported, timeout=CONTROLLERS)
    core.patch_namespaced_config_map("held", "doomed", {"metadata": {"finalizers": None}})

    def namespace_gone() -> bool:
        return "doomed" not in [n.metadata.name for n in core.list_namespace().items]

    eventually(namespace_gone, timeout=CONTROLLERS)


def test_crd_lifecycle_registers_and_removes_its_resource(
    api_client: client.ApiClient, namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    crd = yaml.safe_load(WIDGETS_CRD.read_text())
    crd["metadata"]["name"] = "gadgets.example.org"
    crd["spec"]["group"] = "example.org"
    crd["spec"]["names"] = {"plural": "gadgets", "kind": "Gadget"}
    created = ext.create_custom_resource_definition(crd)
    assert not created.status.conditions  # controllers establish it after the create returns
    eventually(lambda: crd_served(api_client, "example.org", "v1", "gadgets"))
    gadget = widget("g1")
    gadget["apiVersion"], gadget["kind"] = "example.org/v1", "Gadget"
    custom.create_namespaced_custom_object("example.org", "v1", namespace, "gadgets", gadget)
    ext.delete_custom_resource_definition("gadgets.example.org")

    def gone() -> bool:
        try:
            custom.list_namespaced_custom_object("example.org", "v1", namespace, "gadgets")
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone, timeout=CONTROLLERS)

    def undiscovered() -> bool:
        groups = [g.name for g in client.ApisApi(api_client).get_api_versions().groups]
        return "example.org" not in groups

    eventually(undiscovered)
