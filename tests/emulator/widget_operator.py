"""A small kopf operator for the emulator's conformance suite (run as ``kopf run``).

It exercises what our real operator relies on: create/update/resume/delete handlers, status
patches, events, kopf's finalizer, a child object with an ownerReference, and a timer.
Evidence goes where a test can read it: status fields, an annotation, a tombstone ConfigMap.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
import kubernetes

WIDGETS = ("example.com", "v1", "widgets")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "example.com/kopf-finalizer"
    settings.watching.server_timeout = 3  # short watch requests: resumes from resourceVersion
    settings.posting.level = logging.INFO
    kubernetes.config.load_kube_config()


@kopf.on.create(*WIDGETS)
def create_child(
    body: kopf.Body, spec: kopf.Spec, name: str, namespace: str, patch: kopf.Patch, **_: Any
) -> None:
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-child"},
        "data": {"color": spec["color"]},
    }
    kopf.adopt(child, owner=body)
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, child)
    kopf.info(body, reason="ChildCreated", message=f"created {name}-child")
    patch.status["phase"] = "Created"
    patch.status["color"] = spec["color"]


@kopf.on.update(*WIDGETS, field="spec.color")
def follow_color(new: str, patch: kopf.Patch, **_: Any) -> None:
    patch.status["color"] = new


@kopf.on.resume(*WIDGETS)
def mark_resumed(patch: kopf.Patch, **_: Any) -> None:
    patch.metadata.annotations["example.com/resumed"] = "yes"


@kopf.on.delete(*WIDGETS)
def leave_tombstone(name: str, namespace: str, **_: Any) -> None:
    # kopf may run a delete handler again when an event (a timer's status patch) arrives
    # before its success is recorded: a tombstone already there is this handler's own.
    try:
        kubernetes.client.CoreV1Api().create_namespaced_config_map(
            namespace, {"metadata": {"name": f"{name}-tombstone"}}
        )
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise


@kopf.timer(*WIDGETS, interval=0.5)
def tick(status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    patch.status["ticks"] = int(status.get("ticks", 0)) + 1
