"""The hpa and keda engines' objects on a real control plane.

The real API server checks the HPA (its `behavior` included) and, once KEDA's CRD from its Go
module is installed, the ScaledObject against KEDA's own schema; both must follow the stable
revision through a promotion and stay on it through a rollback. No KEDA operator and no
metrics server run here, so nothing is really scaled: what the objects say is what is tested.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    BAD,
    GOOD,
    OperatorProcess,
    condition_of,
    deploy_stable,
    dump,
    model_deployment,
    phase_is,
    play,
    revision_of,
    status_of,
)
from tests.kube_cluster.cluster import ControlPlane
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter
from torchrollout.local.prometheus import PrometheusServer
from torchrollout.operator.reconcile import TROUBLE_RECHECK

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SCALED_OBJECTS = "scaledobjects.keda.sh"
BEHAVIOR = {
    "scaleDown": {
        "stabilizationWindowSeconds": 600,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    }
}


def autoscaler_ready(md_api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    return condition_of(status_of(md_api, namespace), "AutoscalerReady")


def roll_out(
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    namespace: str,
    version: str,
    *,
    good: bool,
    **spec: Any,
) -> dict[str, Any]:
    """Apply `version` as a canary and wait for it to be promoted (good) or rolled back."""
    body = model_deployment(namespace, version, **spec)
    play(exporter, namespace, body, GOOD if good else BAD)
    kubectl.apply(dump(body))
    if good:
        done = {"stableVersion": version}
        eventually(lambda: phase_is(md_api, namespace, "Succeeded", **done), timeout=60)
    else:
        eventually(lambda: phase_is(md_api, namespace, "RolledBack"), timeout=60)
    return body


def test_the_hpa_with_its_behavior_follows_the_stable_through_promotion_and_rollback(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    autoscaling = {"engine": "hpa", "minReplicas": 1, "maxReplicas": 4, "behavior": BEHAVIOR}
    first = deploy_stable(kubectl, md_api, exporter, namespace, autoscaling=autoscaling)
    hpas = client.AutoscalingV2Api(api_client)

    def target() -> str:
        found = hpas.read_namespaced_horizontal_pod_autoscaler("fraud", namespace)
        name: str = found.spec.scale_target_ref.name
        return name

    eventually(lambda: autoscaler_ready(md_api, namespace).get("reason") == "HPAApplied")
    assert target() == f"fraud-{revision_of(first)}"
    found = api_client.sanitize_for_serialization(
        hpas.read_namespaced_horizontal_pod_autoscaler("fraud", namespace)
    )
    down = found["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 600
    assert down["policies"] == BEHAVIOR["scaleDown"]["policies"]

    promoted = roll_out(
        kubectl, md_api, exporter, namespace, "2.0.0", good=True, autoscaling=autoscaling
    )
    eventually(lambda: target() == f"fraud-{revision_of(promoted)}")

    roll_out(kubectl, md_api, exporter, namespace, "3.0.0", good=False, autoscaling=autoscaling)
    assert target() == f"fraud-{revision_of(promoted)}"
    assert autoscaler_ready(md_api, namespace)["status"] == "True"


def test_keda_says_what_to_install_then_its_scaled_object_follows_the_stable(
    operator_process: OperatorProcess,
    kube_cluster: ControlPlane,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    prometheus: PrometheusServer,
    namespace: str,
) -> None:
    kube_cluster.kubectl("delete", "crd", SCALED_OBJECTS, "--ignore-not-found", "--wait")
    autoscaling = {"engine": "keda", "minReplicas": 1, "maxReplicas": 5, "target": 20}
    first = deploy_stable(kubectl, md_api, exporter, namespace, autoscaling=autoscaling)
    eventually(lambda: autoscaler_ready(md_api, namespace).get("reason") == "KEDANotInstalled")
    ready = autoscaler_ready(md_api, namespace)
    assert ready["status"] == "False" and SCALED_OBJECTS in ready["message"]
    assert phase_is(md_api, namespace, "Succeeded")

    crd = kube_cluster.tools.keda_crd(SCALED_OBJECTS)
    kube_cluster.kubectl("apply", "--server-side", "-f", str(crd))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/{SCALED_OBJECTS}"
    )
    # Touched, it is looked at once; but a kind found missing less than MISSING_RECHECK ago
    # is not asked about again, and then the look for a platform that is not ready (every
    # TROUBLE_RECHECK) is the one that finds it: the promise is within that.
    kubectl("annotate", "md", "fraud", "-n", namespace, "example.com/touched=1")
    eventually(
        lambda: autoscaler_ready(md_api, namespace).get("reason") == "ScaledObjectApplied",
        timeout=TROUBLE_RECHECK + 5,
    )
    custom = client.CustomObjectsApi(api_client)

    def scaled_object() -> dict[str, Any]:
        found: dict[str, Any] = custom.get_namespaced_custom_object(
            "keda.sh", "v1alpha1", namespace, "scaledobjects", "fraud"
        )
        return found

    spec = scaled_object()["spec"]
    assert spec["scaleTargetRef"]["name"] == f"fraud-{revision_of(first)}"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 5)
    (trigger,) = spec["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", "AverageValue")
    assert trigger["metadata"]["serverAddress"] == prometheus.url
    assert trigger["metadata"]["threshold"] == "20"
    assert f'revision="{revision_of(first)}"' in trigger["metadata"]["query"]

    promoted = roll_out(
        kubectl, md_api, exporter, namespace, "2.0.0", good=True, autoscaling=autoscaling
    )
    new_target = f"fraud-{revision_of(promoted)}"
    eventually(lambda: scaled_object()["spec"]["scaleTargetRef"]["name"] == new_target)
    assert (
        f'revision="{revision_of(promoted)}"'
        in scaled_object()["spec"]["triggers"][0]["metadata"]["query"]
    )
