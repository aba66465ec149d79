"""Conformance through the unmodified kubernetes Python client: CRUD, every patch type, the
status and scale subresources, optimistic concurrency, selectors and lists."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.emulator.conftest import GROUP, PLURAL, ROOT_CA, VERSION, widget

pytestmark = pytest.mark.emulator


def _status(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_create_sets_server_fields(widgets: client.CustomObjectsApi, namespace: str) -> None:
    created = widgets.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w1")
    )
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert meta["namespace"] == namespace
    fetched = widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    assert fetched == created


def test_create_twice_is_409_already_exists(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    with pytest.raises(ApiException) as caught:
        widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    assert caught.value.status == 409
    assert _status(caught.value)["reason"] == "AlreadyExists"


def test_generate_name_gives_distinct_names(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    names = {
        core.create_namespaced_config_map(
            namespace, {"metadata": {"generateName": "cm-"}}
        ).metadata.name
        for _ in range(5)
    }
    assert len(names) == 5
    assert all(name.startswith("cm-") and len(name) == 8 for name in names)


def test_missing_namespace_is_404(api_client: client.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(api_client).create_namespaced_config_map(
            "no-such-namespace", {"metadata": {"name": "x"}}
        )
    assert caught.value.status == 404
    assert _status(caught.value)["message"] == 'namespaces "no-such-namespace" not found'


def test_get_missing_is_404_with_status(widgets: client.CustomObjectsApi, namespace: str) -> None:
    with pytest.raises(ApiException) as caught:
        widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "nope")
    status = _status(caught.value)
    assert (caught.value.status, status["kind"], status["reason"]) == (404, "Status", "NotFound")
    assert status["message"] == 'widgets.example.com "nope" not found'


def test_generation_bumps_on_spec_changes_only(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    labelled = widgets.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    with_status = widgets.patch_namespaced_custom_object_status(*args, {"status": {"phase": "X"}})
    assert with_status["metadata"]["generation"] == 1
    changed = widgets.patch_namespaced_custom_object(*args, {"spec": {"color": "blue"}})
    assert changed["metadata"]["generation"] == 2


def test_noop_patch_keeps_resource_version(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    created = widgets.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w1")
    )
    same = widgets.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "w1", {"spec": {"color": "red"}}
    )
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_status_subresource_owns_status(widgets: client.CustomObjectsApi, namespace: str) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    body = widget("w1")
    body["status"] = {"phase": "ignored-on-create"}
    created = widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert "status" not in created
    widgets.patch_namespaced_custom_object_status(*args, {"status": {"phase": "Ready"}})
    main = widgets.patch_namespaced_custom_object(
        *args, {"spec": {"color": "green"}, "status": {"phase": "ignored-on-main"}}
    )
    assert main["status"] == {"phase": "Ready"}
    status_put = widgets.get_namespaced_custom_object_status(*args)
    status_put["spec"]["color"] = "blue"  # ignored by the status endpoint
    status_put["status"]["phase"] = "Done"
    replaced = widgets.replace_namespaced_custom_object_status(*args, status_put)
    assert (replaced["spec"]["color"], replaced["status"]["phase"]) == ("green", "Done")


def test_put_with_stale_resource_version_is_409(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    stale = widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    widgets.patch_namespaced_custom_object(*args, {"spec": {"color": "blue"}})
    stale["spec"]["color"] = "green"
    with pytest.raises(ApiException) as caught:
        widgets.replace_namespaced_custom_object(*args, stale)
    assert caught.value.status == 409
    assert _status(caught.value)["reason"] == "Conflict"
    fresh = widgets.get_namespaced_custom_object(*args)
    fresh["spec"]["color"] = "green"
    assert widgets.replace_namespaced_custom_object(*args, fresh)["spec"]["color"] == "green"


def test_put_without_resource_version_is_invalid_for_custom_resources(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    with pytest.raises(ApiException) as caught:
        widgets.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "w1", widget("w1", color="blue")
        )
    assert caught.value.status == 422
    assert _status(caught.value)["details"]["causes"][0]["field"] == "metadata.resourceVersion"


def test_merge_patch_with_resource_version_is_optimistic(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    created = widgets.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w1")
    )
    rv = created["metadata"]["resourceVersion"]
    widgets.patch_namespaced_custom_object(
        *args, {"metadata": {"resourceVersion": rv}, "spec": {"color": "blue"}}
    )
    with pytest.raises(ApiException) as caught:
        widgets.patch_namespaced_custom_object(
            *args, {"metadata": {"resourceVersion": rv}, "spec": {"color": "green"}}
        )
    assert caught.value.status == 409


def test_merge_patch_semantics(widgets: client.CustomObjectsApi, namespace: str) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    widgets.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        widget("w1", note="n", extra={"keep": 1, "drop": 2}, steps=[{"weight": 1}]),
    )
    patched = widgets.patch_namespaced_custom_object(
        *args, {"spec": {"note": None, "extra": {"drop": None, "add": 3}, "steps": [{"weight": 5}]}}
    )
    spec = patched["spec"]
    assert "note" not in spec
    assert spec["extra"] == {"keep": 1, "add": 3}
    assert spec["steps"] == [{"weight": 5, "pause": "1m"}]  # lists replace; defaults reapply


def test_json_patch_including_test(widgets: client.CustomObjectsApi, namespace: str) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    created = widgets.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w1", steps=[{"weight": 1}])
    )
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/spec/steps/-", "value": {"weight": 2}},
        {"op": "replace", "path": "/spec/color", "value": "blue"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/x"]},
        {"op": "copy", "from": "/spec/color", "path": "/metadata/labels"},
    ]
    with pytest.raises(ApiException) as caught:  # labels must be a map
        widgets.patch_namespaced_custom_object(
            *args, ops, _content_type="application/json-patch+json"
        )
    assert caught.value.status == 422
    patched = widgets.patch_namespaced_custom_object(
        *args, ops[:4], _content_type="application/json-patch+json"
    )
    assert [s["weight"] for s in patched["spec"]["steps"]] == [1, 2]
    assert patched["metadata"]["finalizers"] == ["example.com/x"]
    with pytest.raises(ApiException) as caught:  # the same test op now fails: stale rv
        widgets.patch_namespaced_custom_object(
            *args, ops[:1], _content_type="application/json-patch+json"
        )
    assert caught.value.status == 422
    removed = widgets.patch_namespaced_custom_object(
        *args,
        [{"op": "remove", "path": "/metadata/finalizers"}],
        _content_type="application/json-patch+json",
    )
    assert "finalizers" not in removed["metadata"]


def test_strategic_merge_patch_on_deployments(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "d1"},
            "spec": {
                "selector": {"matchLabels": {"app": "d1"}},
                "template": {
                    "metadata": {"labels": {"app": "d1"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "a:1",
                                "env": [{"name": "A", "value": "1"}],
                                "ports": [{"containerPort": 80}],
                            },
                            {"name": "side", "image": "s:1"},
                        ]
                    },
                },
            },
        },
    )
    patched = apps.patch_namespaced_deployment(
        "d1",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "a:2",
                                "env": [{"name": "B", "value": "2"}],
                                "ports": [{"containerPort": 80, "name": "http"}],
                            },
                            {"name": "side", "$patch": "delete"},
                        ]
                    }
                }
            }
        },
    )
    containers = patched.spec.template.spec.containers
    assert [c.name for c in containers] == ["main"]
    assert containers[0].image == "a:2"
    # merged by name; the patch's items come first, as the API server orders a merged list
    assert [(e.name, e.value) for e in containers[0].env] == [("B", "2"), ("A", "1")]
    assert [(p.container_port, p.name) for p in containers[0].ports] == [(80, "http")]
    assert patched.metadata.generation == 2


def test_strategic_merge_patch_is_415_for_custom_resources(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    with pytest.raises(ApiException) as caught:
        widgets.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "w1",
            {"spec": {"color": "blue"}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert caught.value.status == 415


def test_server_side_apply_creates_then_merges(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    response = widgets.patch_namespaced_custom_object_with_http_info(
        *args,
        widget("w1", replicas=2),
        field_manager="test",
        _content_type="application/apply-patch+yaml",
    )
    assert response[1] == 201  # created, as the API server answers an apply-create
    assert widgets.get_namespaced_custom_object(*args)["spec"]["replicas"] == 2
    applied = widgets.patch_namespaced_custom_object(
        *args,
        widget("w1", color="blue"),
        field_manager="test",
        _content_type="application/apply-patch+yaml",
    )
    assert (applied["spec"]["color"], applied["metadata"]["generation"]) == ("blue", 2)


def test_scale_subresource(widgets: client.CustomObjectsApi, namespace: str) -> None:
    args = (GROUP, VERSION, namespace, PLURAL, "w1")
    widgets.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w1", replicas=2)
    )
    widgets.patch_namespaced_custom_object_status(
        *args, {"status": {"replicas": 2, "selector": "app=w1"}}
    )
    scale = widgets.get_namespaced_custom_object_scale(*args)
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]) == (
        "Scale",
        2,
        {"replicas": 2, "selector": "app=w1"},
    )
    widgets.patch_namespaced_custom_object_scale(*args, {"spec": {"replicas": 5}})
    assert widgets.get_namespaced_custom_object(*args)["spec"]["replicas"] == 5


def test_label_and_field_selectors(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    for name, labels in (
        ("a", {"tier": "web", "env": "prod"}),
        ("b", {"tier": "db"}),
        ("c", {"env": "dev"}),
    ):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: str) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(namespace, **kwargs).items]

    assert names(label_selector="tier=web") == ["a"]
    assert names(label_selector="tier") == ["a", "b"]
    # every namespace also holds the root CA's ConfigMap, which has no labels
    assert names(label_selector="!tier") == ["c", ROOT_CA]
    assert names(label_selector="tier in (web,db),env!=prod") == ["b"]
    assert names(label_selector="env notin (prod)") == ["b", "c", ROOT_CA]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c", ROOT_CA]
    with pytest.raises(ApiException) as caught:
        names(label_selector="tier in (web")
    assert caught.value.status == 400
    with pytest.raises(ApiException) as caught:  # each kind supports a few field labels
        names(field_selector="data.k=v")
    assert json.loads(caught.value.body)["message"] == (
        '"data.k" is not a known field selector: only "metadata.name", "metadata.namespace"'
    )
    events = client.CoreV1Api(api_client).list_namespaced_event
    assert events(namespace, field_selector="source=kopf,type=Normal").items == []
    with pytest.raises(ApiException) as caught:
        events(namespace, field_selector="note=x")
    assert json.loads(caught.value.body)["message"] == "field label not supported: note"


def test_lists_have_kind_version_and_resource_version(
    widgets: client.CustomObjectsApi, namespace: str
) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    listed = widgets.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert (listed["kind"], listed["apiVersion"]) == ("WidgetList", "example.com/v1")
    assert int(listed["metadata"]["resourceVersion"]) >= int(
        listed["items"][0]["metadata"]["resourceVersion"]
    )
    everywhere = widgets.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert any(i["metadata"]["namespace"] == namespace for i in everywhere["items"])
    with pytest.raises(ApiException) as caught:  # CRs only support metadata field selectors
        widgets.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, field_selector="spec.color=red"
        )
    assert caught.value.status == 400


def test_pagination_with_limit_and_continue(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    for index in range(5):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"cm{index}"}})
    first = core.list_namespaced_config_map(namespace, limit=2)
    assert len(first.items) == 2 and first.metadata.remaining_item_count == 4  # and the root CA
    rest = core.list_namespaced_config_map(namespace, limit=10, _continue=first.metadata._continue)
    names = [i.metadata.name for i in first.items + rest.items]
    assert names == [*(f"cm{i}" for i in range(5)), ROOT_CA]
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map(namespace, limit=2, _continue="not-a-token")
    assert caught.value.status == 400
    assert _status(caught.value)["message"].startswith("invalid continue token: ")


def test_a_delete_that_removes_the_object_returns_a_status(
    api_client: client.ApiClient, widgets: client.CustomObjectsApi, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    status = core.delete_namespaced_config_map("cm", namespace)
    assert (status["kind"], status["status"]) == ("Status", "Success")
    assert status["details"] == {"name": "cm", "kind": "configmaps", "uid": created.metadata.uid}
    widget_uid = widgets.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w1")
    )["metadata"]["uid"]
    deleted = widgets.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    assert (deleted["kind"], deleted["status"]) == ("Status", "Success")
    assert deleted["details"] == {
        "name": "w1",
        "group": GROUP,
        "kind": PLURAL,
        "uid": widget_uid,
    }


def test_delete_collection_with_selector(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "labels": {"tier": tier}}}
        )
    core.delete_collection_namespaced_config_map(namespace, label_selector="tier=x")
    names = [i.metadata.name for i in core.list_namespaced_config_map(namespace).items]
    assert names == ["c", ROOT_CA]


def test_events_in_both_groups(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_event(
        namespace,
        {
            "metadata": {"generateName": "ev-"},
            "reason": "Tested",
            "message": "hello",
            "involvedObject": {"kind": "Widget", "name": "w1", "namespace": namespace},
        },
    )
    found = core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=w1,involvedObject.kind=Widget"
    )
    assert [e.reason for e in found.items] == ["Tested"]
    events = client.EventsV1Api(api_client)
    events.create_namespaced_event(
        namespace,
        {
            "metadata": {"name": "ev2"},
            # MicroTime: the client sends isoformat(), which drops a zero fraction (400)
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "reason": "Tested",
            "action": "Test",
            "type": "Normal",
            "reportingController": "t",
            "reportingInstance": "t",
            "regarding": {"kind": "Widget", "name": "w1", "namespace": namespace},
        },
    )
    assert events.read_namespaced_event("ev2", namespace).reason == "Tested"


def test_lease_and_other_builtins_round_trip(api_client: client.ApiClient, namespace: str) -> None:
    leases = client.CoordinationV1Api(api_client)
    leases.create_namespaced_lease(
        namespace, {"metadata": {"name": "l1"}, "spec": {"holderIdentity": "me"}}
    )
    lease = leases.patch_namespaced_lease("l1", namespace, {"spec": {"holderIdentity": "you"}})
    assert lease.spec.holder_identity == "you"
    client.PolicyV1Api(api_client).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "pdb"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}},
        },
    )
    hpa = client.AutoscalingV2Api(api_client).create_namespaced_horizontal_pod_autoscaler(
        namespace,
        {
            "metadata": {"name": "hpa"},
            "spec": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            },
        },
    )
    service = client.CoreV1Api(api_client).create_namespaced_service(
        namespace,
        {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}},
    )
    assert hpa.spec.metrics[0].resource.name == "cpu"  # the default: CPU at 80%
    assert hpa.spec.metrics[0].resource.target.average_utilization == 80
    assert service.spec.cluster_ip and service.spec.ports[0].target_port == 80
    secret = client.CoreV1Api(api_client).create_namespaced_secret(
        namespace, {"metadata": {"name": "s"}, "stringData": {"k": "v"}}
    )
    assert (secret.data, secret.string_data) == ({"k": "dg=="}, None)  # stored base64 in data


def test_builtin_defaults_the_server_fills_in(api_client: client.ApiClient, namespace: str) -> None:
    deployment = client.AppsV1Api(api_client).create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {
                        "containers": [
                            {"name": "untagged", "image": "img"},
                            {"name": "tagged", "image": "registry:5000/img:1"},
                        ]
                    },
                },
            },
        },
    )
    spec = deployment.spec
    assert (spec.replicas, spec.strategy.rolling_update.max_surge) == (1, "25%")
    pods = spec.template.spec
    assert [c.image_pull_policy for c in pods.containers] == ["Always", "IfNotPresent"]
    assert pods.security_context is not None and pods.containers[0].resources is not None
    service = client.CoreV1Api(api_client).create_namespaced_service(
        namespace, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert (service.spec.type, service.spec.ip_families) == ("ClusterIP", ["IPv4"])
    assert service.spec.internal_traffic_policy == "Cluster"
    assert service.status.load_balancer is not None
    hpa = client.AutoscalingV2Api(api_client).create_namespaced_horizontal_pod_autoscaler(
        namespace,
        {
            "metadata": {"name": "hpa"},
            "spec": {
                "maxReplicas": 3,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            },
        },
    )
    assert (hpa.spec.min_replicas, hpa.metadata.generation) == (1, None)
