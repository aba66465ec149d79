"""Deployments as a controller drives them (the emulator's fake one, or kube-controller-manager
over kwok's pods): readiness, the scale subresource, a child ReplicaSet; and, on the emulator
only, unready/flapping Deployments by annotation or harness."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.emulator.conftest import CONTROLLERS
from tests.kube_emulator import FLAP_ANNOTATION, UNREADY_ANNOTATION, KubeEmulator
from tests.kube_emulator.fixtures import eventually

pytestmark = pytest.mark.emulator


def _deployment(name: str, replicas: int = 2, **annotations: str) -> dict:
    return {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]},
            },
        },
    }


def _status(apps: client.AppsV1Api, namespace: str, name: str) -> client.V1DeploymentStatus:
    # no status at all until the fake controller has looked at it
    return (
        apps.read_namespaced_deployment_status(name, namespace).status
        or client.V1DeploymentStatus()
    )


def _ready(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    status = _status(apps, namespace, name)
    return (status.ready_replicas or 0) == (status.replicas or -1)


def test_deployments_become_ready_with_full_status(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    created = apps.create_namespaced_deployment(namespace, _deployment("web"))
    assert created.status is None or not created.status.ready_replicas
    eventually(lambda: _ready(apps, namespace, "web"))
    status = _status(apps, namespace, "web")
    assert (status.replicas, status.updated_replicas, status.available_replicas) == (2, 2, 2)
    assert status.observed_generation == 1
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    replicasets = apps.list_namespaced_replica_set(namespace).items
    assert [rs.metadata.owner_references[0].name for rs in replicasets] == ["web"]
    assert replicasets[0].metadata.annotations == {
        "deployment.kubernetes.io/desired-replicas": "2",
        "deployment.kubernetes.io/max-replicas": "3",  # 25% surge, rounded up
        "deployment.kubernetes.io/revision": "1",
    }
    web = apps.read_namespaced_deployment("web", namespace)
    assert web.metadata.annotations["deployment.kubernetes.io/revision"] == "1"

    def scaling_events() -> list[str]:
        events = client.CoreV1Api(api_client).list_namespaced_event(
            namespace, field_selector="involvedObject.name=web,reason=ScalingReplicaSet"
        )
        return [e.message for e in events.items]

    rs_name = replicasets[0].metadata.name
    assert eventually(scaling_events) == [f"Scaled up replica set {rs_name} from 0 to 2"]


def test_a_new_template_gets_a_new_replicaset_and_revision(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web"))
    eventually(lambda: _ready(apps, namespace, "web"))
    image = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "img:2"}]}}}}
    apps.patch_namespaced_deployment("web", namespace, image)

    def old_one_scaled_down() -> bool:
        sizes = {
            rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs.spec.replicas
            for rs in apps.list_namespaced_replica_set(namespace).items
        }
        assert sizes == {"1": 0, "2": 2}
        return True

    def rolled_out() -> bool:  # as `kubectl rollout status` judges it
        status = _status(apps, namespace, "web")
        done = (status.updated_replicas, status.replicas, status.available_replicas) == (2, 2, 2)
        return status.observed_generation == 2 and done

    eventually(rolled_out)
    eventually(old_one_scaled_down)
    web = apps.read_namespaced_deployment("web", namespace)
    assert web.metadata.annotations["deployment.kubernetes.io/revision"] == "2"


def test_scale_subresource_and_cascading_delete(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web"))
    scale = apps.read_namespaced_deployment_scale("web", namespace)
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=web")
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 5}})
    eventually(lambda: _status(apps, namespace, "web").ready_replicas == 5)
    assert _status(apps, namespace, "web").observed_generation == 2
    eventually(lambda: apps.list_namespaced_replica_set(namespace).items)
    apps.delete_namespaced_deployment("web", namespace)
    eventually(lambda: not apps.list_namespaced_replica_set(namespace).items, timeout=CONTROLLERS)


@pytest.mark.emulator_only("the unready annotation is the fake Deployment controller's")
def test_unready_annotation_keeps_it_unavailable(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web", **{UNREADY_ANNOTATION: "true"}))
    eventually(lambda: _status(apps, namespace, "web").observed_generation == 1)
    status = _status(apps, namespace, "web")
    assert not status.ready_replicas and status.unavailable_replicas == 2
    assert {c.type: c.status for c in status.conditions}["Available"] == "False"
    apps.patch_namespaced_deployment(
        "web", namespace, {"metadata": {"annotations": {UNREADY_ANNOTATION: None}}}
    )
    eventually(lambda: _ready(apps, namespace, "web"))


@pytest.mark.emulator_only("the unready annotation is the fake Deployment controller's")
def test_progress_deadline_is_reported(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    body = _deployment("web", **{UNREADY_ANNOTATION: "true"})
    body["spec"]["progressDeadlineSeconds"] = 1
    apps.create_namespaced_deployment(namespace, body)

    def deadline_exceeded() -> bool:
        conditions = {c.type: c for c in _status(apps, namespace, "web").conditions or []}
        return (
            conditions.get("Progressing") is not None
            and conditions["Progressing"].reason == "ProgressDeadlineExceeded"
        )

    eventually(deadline_exceeded, timeout=5)


def test_harness_overrides_and_flapping(
    emulator: KubeEmulator, api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web"))
    eventually(lambda: _ready(apps, namespace, "web"))
    emulator.deployments.set_unready(namespace, "web")
    eventually(lambda: not _ready(apps, namespace, "web"))
    emulator.deployments.clear(namespace, "web")
    eventually(lambda: _ready(apps, namespace, "web"))

    apps.create_namespaced_deployment(
        namespace, _deployment("flappy", **{FLAP_ANNOTATION: "300ms"})
    )
    seen: set[bool] = set()

    def flapped_both_ways() -> bool:
        status = _status(apps, namespace, "flappy")
        if status.observed_generation:
            seen.add(_ready(apps, namespace, "flappy"))
        return seen == {True, False}

    eventually(flapped_both_ways, timeout=5, interval=0.05)
