"""A fake Deployment controller: what kube-controller-manager and the kubelet would report.

There are no pods. After a configurable delay, a Deployment's status says its replicas are
updated, ready and available (conditions Available/Progressing, observedGeneration), and a
ReplicaSet child per pod template is kept (owned by the Deployment, so cascading deletion has
something to collect), with the real controller's annotations (revision, desired and maximum
replicas) and a ``ScalingReplicaSet`` Event each time one is scaled. A Deployment can be kept
unready or made to flap, by annotation or by the harness (which wins):

    emulator.torchrollout.io/unready: "true"
    emulator.torchrollout.io/flap: "2s"      # ready, then unready, every 2 seconds

An unready Deployment reports ``ProgressDeadlineExceeded`` once ``progressDeadlineSeconds``
have passed, as the real controller does.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .objects import now_timestamp, template_hash
from .operations import Operations
from .resources import DEPLOYMENT_KEY, REPLICASET_KEY, ResourceInfo
from .store import Store, WatchEvent

logger = logging.getLogger(__name__)

UNREADY_ANNOTATION = "emulator.torchrollout.io/unready"
FLAP_ANNOTATION = "emulator.torchrollout.io/flap"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
DESIRED_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_ANNOTATION = "deployment.kubernetes.io/max-replicas"


def parse_duration(text: str) -> float:
    """``"2s"``, ``"500ms"``, ``"1m"`` or a bare number of seconds."""
    text = text.strip()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@dataclass
class Override:
    unready: bool | None = None
    flap: float | None = None


class DeploymentController:
    def __init__(self, store: Store, ops: Operations, *, delay: float = 0.3) -> None:
        self.store = store
        self.ops = ops
        self.delay = delay
        self.overrides: dict[tuple[str, str], Override] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._unready_since: dict[tuple[str, str], float] = {}
        self._flap_since: dict[tuple[str, str], float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        store.listeners.append(self._on_event)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # --- harness controls (called on the loop thread) ------------------------------------
    def set_override(
        self, namespace: str, name: str, *, unready: bool | None = None, flap: float | None = None
    ) -> None:
        self.overrides[(namespace, name)] = Override(unready, flap)
        self._flap_since.pop((namespace, name), None)
        self._schedule((namespace, name), 0)

    def clear_override(self, namespace: str, name: str) -> None:
        self.overrides.pop((namespace, name), None)
        self._schedule((namespace, name), 0)

    # --- reacting to changes ------------------------------------------------------------
    def _on_event(self, event: WatchEvent) -> None:
        if event.key != DEPLOYMENT_KEY:
            return
        meta = event.obj["metadata"]
        where = (meta.get("namespace", ""), meta["name"])
        if event.type == "DELETED":
            if timer := self._timers.pop(where, None):
                timer.cancel()
            self._unready_since.pop(where, None)
            self._flap_since.pop(where, None)
            return
        old_meta = (event.old or {}).get("metadata", {})
        if event.old is not None and (
            old_meta.get("generation") == meta.get("generation")
            and old_meta.get("annotations") == meta.get("annotations")
        ):
            return  # our own status write, or a label change: nothing to roll out
        self._schedule(where, self.delay)

    def _schedule(self, where: tuple[str, str], delay: float) -> None:
        if self._loop is None:
            return
        if timer := self._timers.pop(where, None):
            timer.cancel()
        self._timers[where] = self._loop.call_later(delay, self._reconcile_safely, where)

    def _reconcile_safely(self, where: tuple[str, str]) -> None:
        self._timers.pop(where, None)
        try:
            self.reconcile(where)
        except Exception:  # the fake controller must never take the emulator down
            logger.exception("deployment controller failed on %s/%s", *where)

    # --- the decision -------------------------------------------------------------------
    def _readiness(self, where: tuple[str, str], obj: dict[str, Any]) -> tuple[bool, float | None]:
        """Is it ready now, and when should we look again (flapping, deadlines)?"""
        assert self._loop is not None
        annotations = obj["metadata"].get("annotations") or {}
        override = self.overrides.get(where, Override())
        flap = override.flap
        if flap is None and FLAP_ANNOTATION in annotations:
            try:
                flap = parse_duration(annotations[FLAP_ANNOTATION])
            except ValueError:
                flap = None
        if flap and flap > 0:
            start = self._flap_since.setdefault(where, self._loop.time())
            elapsed = self._loop.time() - start
            phase = int(elapsed // flap)
            return phase % 2 == 0, (phase + 1) * flap - elapsed + 0.01
        unready = override.unready
        if unready is None:
            unready = annotations.get(UNREADY_ANNOTATION, "").lower() == "true"
        return not unready, None

    def reconcile(self, where: tuple[str, str]) -> None:
        assert self._loop is not None
        obj = self.store.get(DEPLOYMENT_KEY, *where)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        ready, recheck = self._readiness(where, obj)
        now = self._loop.time()
        if ready:
            self._unready_since.pop(where, None)
        else:
            since = self._unready_since.setdefault(where, now)
            deadline = (obj.get("spec") or {}).get("progressDeadlineSeconds", 600)
            remaining = since + deadline - now
            if remaining > 0:
                recheck = min(recheck or remaining + 0.01, remaining + 0.01)
        rs_name, revision = self._sync_replicaset(obj, ready)
        obj = self._annotate_revision(obj, revision)
        status = self._status(
            obj,
            ready,
            rs_name,
            deadline_exceeded=(
                not ready
                and now - self._unready_since.get(where, now)
                >= (obj.get("spec") or {}).get("progressDeadlineSeconds", 600)
            ),
        )
        if status != obj.get("status"):
            info = self.ops.registry.lookup("apps", "v1", "deployments")
            assert info is not None
            new = copy.deepcopy(obj)
            new["status"] = status
            try:
                self.ops.commit(info, obj, new, subresource="status")
            except ApiError as exc:
                logger.debug("deployment status write failed: %s", exc)
        if recheck is not None:
            self._schedule(where, recheck)

    def _annotate_revision(self, obj: dict[str, Any], revision: str) -> dict[str, Any]:
        """The Deployment carries its current ReplicaSet's revision (``kubectl rollout history``
        reads it); returns the Deployment as stored afterwards."""
        if (obj["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION) == revision:
            return obj
        info = self.ops.registry.lookup("apps", "v1", "deployments")
        assert info is not None
        annotated = copy.deepcopy(obj)
        annotated["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = revision
        try:
            return dict(self.ops.commit(info, obj, annotated))
        except ApiError as exc:
            logger.debug("deployment annotation write failed: %s", exc)
            return obj

    def _status(
        self, obj: dict[str, Any], ready: bool, rs_name: str, *, deadline_exceeded: bool
    ) -> dict[str, Any]:
        replicas = int((obj.get("spec") or {}).get("replicas", 1))
        old = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
        available = ready or replicas == 0
        status: dict[str, Any] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas if ready else 0,
            "availableReplicas": replicas if ready else 0,
            "unavailableReplicas": 0 if ready else replicas,
            "terminatingReplicas": 0,  # no pods, none ever terminating
        }
        if deadline_exceeded:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        elif ready:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        conditions = [
            _condition(
                old,
                "Available",
                *(
                    ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
                    if available
                    else (
                        "False",
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.",
                    )
                ),
            ),
            _condition(old, "Progressing", *progressing),
        ]
        status["conditions"] = conditions
        # The real API omits zero counts (omitempty); clients read them as 0.
        kept = ("observedGeneration", "terminatingReplicas")
        return {k: v for k, v in status.items() if v != 0 or k in kept}

    def _sync_replicaset(self, deployment: dict[str, Any], ready: bool) -> tuple[str, str]:
        """Keep one ReplicaSet per pod template, scale the new one up and then the others to
        zero, reporting each scaling as the real controller does; returns the current one's
        name and revision (the newest: a template rolled back to gets the next number)."""
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        namespace, template = meta.get("namespace", ""), spec.get("template") or {}
        pod_hash = template_hash(template)
        name = f"{meta['name']}-{pod_hash}"
        info = self.ops.registry.lookup("apps", "v1", "replicasets")
        assert info is not None
        replicas = int(spec.get("replicas", 1))
        owned = [
            rs
            for rs in self.store.items(REPLICASET_KEY, namespace)
            if any(r.get("uid") == meta["uid"] for r in rs["metadata"].get("ownerReferences") or [])
        ]
        others = [rs for rs in owned if rs["metadata"]["name"] != name]
        latest = max((_revision(rs) for rs in others), default=0)
        current = next((rs for rs in owned if rs["metadata"]["name"] == name), None)
        own = _revision(current) if current is not None else 0
        revision = str(own if own > latest else latest + 1)
        sizes = _size_annotations(spec, replicas)
        try:
            if current is None:
                body = _replicaset(deployment, name, pod_hash, revision=revision)
                body["metadata"]["annotations"].update(sizes)
                current = self.ops.create(info, namespace, body)
                if replicas:
                    self._scaled(deployment, name, 0, replicas)
            desired = copy.deepcopy(current)
            desired["spec"]["replicas"] = replicas
            desired["metadata"].setdefault("annotations", {}).update(
                {**sizes, REVISION_ANNOTATION: revision}
            )
            if desired != current:
                before = int((current.get("spec") or {}).get("replicas") or 0)
                current = self.ops.commit(info, current, desired)
                if before != replicas:
                    self._scaled(deployment, name, before, replicas)
            self._set_replicaset_status(info, current, replicas, ready)
            for rs in others:
                old_replicas = int((rs.get("spec") or {}).get("replicas") or 0)
                scaled = copy.deepcopy(rs)
                scaled["spec"]["replicas"] = 0
                scaled["metadata"].setdefault("annotations", {}).update(sizes)
                committed = self.ops.commit(info, rs, scaled)
                if old_replicas:
                    self._scaled(deployment, rs["metadata"]["name"], old_replicas, 0)
                # the old pods are gone at once: nothing to drain without pods
                self._set_replicaset_status(info, committed, 0, ready)
        except ApiError as exc:
            logger.debug("replicaset sync failed: %s", exc)
        return name, revision

    def _set_replicaset_status(
        self, info: ResourceInfo, rs: dict[str, Any], replicas: int, ready: bool
    ) -> None:
        counts = {
            "replicas": replicas,
            "fullyLabeledReplicas": replicas,
            "readyReplicas": replicas if ready else 0,
            "availableReplicas": replicas if ready else 0,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        # replicas and terminatingReplicas are shown even when 0; other zeros are omitted
        status = {k: v for k, v in counts.items() if v or k == "replicas"}
        status["terminatingReplicas"] = 0
        if rs.get("status") != status:
            self.ops.commit(info, rs, {**rs, "status": status}, subresource="status")

    def _scaled(self, deployment: dict[str, Any], rs_name: str, before: int, after: int) -> None:
        """The ScalingReplicaSet Event ``kubectl describe deployment`` lists."""
        meta = deployment["metadata"]
        direction = "up" if after > before else "down"
        stamp = now_timestamp()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}"},
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
                "uid": meta["uid"],
            },
            "reason": "ScalingReplicaSet",
            "message": f"Scaled {direction} replica set {rs_name} from {before} to {after}",
            "source": {"component": "deployment-controller"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": "Normal",
            "eventTime": None,
            "reportingComponent": "deployment-controller",
            "reportingInstance": "",
        }
        info = self.ops.registry.lookup("", "v1", "events")
        assert info is not None
        try:
            self.ops.create(info, meta.get("namespace", ""), event)
        except ApiError as exc:
            logger.debug("deployment event failed: %s", exc)


def _revision(rs: dict[str, Any]) -> int:
    annotations = rs["metadata"].get("annotations") or {}
    try:
        return int(annotations.get(REVISION_ANNOTATION, "0"))
    except ValueError:
        return 0


def _size_annotations(spec: dict[str, Any], replicas: int) -> dict[str, str]:
    """desired-replicas and max-replicas (replicas plus the rolling update's surge)."""
    strategy = spec.get("strategy") or {}
    surge: Any = 0
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        surge = math.ceil(replicas * int(surge[:-1]) / 100)  # a percentage rounds up
    return {
        DESIRED_ANNOTATION: str(replicas),
        MAX_ANNOTATION: str(replicas + int(surge)),
    }


def _condition(
    old: dict[str, Any], kind: str, status: str, reason: str, message: str
) -> dict[str, Any]:
    stamp = now_timestamp()
    previous = old.get(kind) or {}
    same = previous.get("status") == status
    unchanged = same and previous.get("reason") == reason
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": previous.get("lastUpdateTime", stamp) if unchanged else stamp,
        "lastTransitionTime": previous.get("lastTransitionTime", stamp) if same else stamp,
        "reason": reason,
        "message": message,
    }


def _replicaset(
    deployment: dict[str, Any], name: str, pod_hash: str, *, revision: str
) -> dict[str, Any]:
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels["pod-template-hash"] = pod_hash
    template.setdefault("metadata", {})["labels"] = labels
    selector = copy.deepcopy(spec.get("selector") or {})
    selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": {REVISION_ANNOTATION: revision},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": int(spec.get("replicas", 1)),
            "selector": selector,
            "template": template,
        },
    }
