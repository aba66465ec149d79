"""The operator's only door to the Kubernetes API, and an in-memory fake beside it.

`ClusterApi` is the seam: `KubernetesCluster` speaks to a real (or emulated) API server
through the kubernetes client's dynamic client; `FakeCluster` keeps objects in a dict for
the reconciler's unit tests. API errors are translated here into `ClusterError`s so the
layers above never see a kubernetes exception.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

from torchrollout.errors import TorchrolloutError
from torchrollout.spec.document import API_VERSION, KIND


class ClusterError(TorchrolloutError):
    """The API server refused or failed a request; `transient` says whether to retry."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class KindNotInstalled(ClusterError):
    """The API server does not serve this kind (e.g. Gateway API CRDs are missing)."""


class ClusterApi(Protocol):
    def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...

    def list(
        self, api_version: str, kind: str, namespace: str, labels: dict[str, str]
    ) -> list[dict[str, Any]]: ...

    def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]: ...

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...


def contains(actual: Any, wanted: Any) -> bool:
    """Whether `actual` already holds everything in `wanted` (so no write is needed)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            contains(actual.get(k), v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def apply(cluster: ClusterApi, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create `obj`, or merge-patch the fields it sets when the live object differs; the
    object as the API server has it now, and whether it was written.

    A null map entry in `obj` means "absent": dropped on create, deleted by the patch.
    """
    meta = obj["metadata"]
    api_version, kind = obj["apiVersion"], obj["kind"]
    live = cluster.get(api_version, kind, meta["namespace"], meta["name"])
    if live is None:
        return cluster.create(_without_none(obj)), True
    wanted = {k: v for k, v in obj.items() if k in {"metadata", "spec", "data"}}
    if kind == "Service":
        wanted = _replacing_selector(live, wanted)
    if contains(live, wanted):
        return live, False
    return cluster.patch(api_version, kind, meta["namespace"], meta["name"], wanted), True


def _replacing_selector(live: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """A Service's selector is replaced, not merged: labels it no longer selects by are
    nulled, so the patch deletes them (the client Service widens from the stable revision
    to every revision when a canary starts)."""
    selector = wanted.get("spec", {}).get("selector")
    if selector is None:
        return wanted
    stale = {k: None for k in (live.get("spec") or {}).get("selector") or {} if k not in selector}
    if not stale:
        return wanted
    return {**wanted, "spec": {**wanted["spec"], "selector": {**stale, **selector}}}


def _without_none(value: Any) -> Any:
    """`value` without the null map entries that a merge patch would use to delete a key."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class FakeCluster:
    """Objects in a dict, for tests of the reconciler; Deployments are ready when told."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.reads: list[tuple[str, str]] = []  # (verb, kind): what a reconcile costs
        self.missing_kinds: set[str] = set()

    def _key(self, kind: str, namespace: str, name: str) -> tuple[str, str, str]:
        if kind in self.missing_kinds:
            raise KindNotInstalled(
                f"the API server has no kind {kind}", status=404, transient=False
            )
        return (kind, namespace, name)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(("get", kind))
        found = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self, api_version: str, kind: str, namespace: str, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        self.reads.append(("list", kind))
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in sorted(self.objects.items())
            if k == kind
            and ns == namespace
            and all(o["metadata"].get("labels", {}).get(a) == b for a, b in labels.items())
        ]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = self._key(obj["kind"], meta["namespace"], meta["name"])
        if key in self.objects:
            raise ClusterError(
                f"{obj['kind']} {meta['namespace']}/{meta['name']} already exists",
                status=409,
                transient=False,
            )
        self.objects[key] = copy.deepcopy(obj)
        self.writes.append(("create", obj["kind"], meta["name"]))
        return copy.deepcopy(obj)

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        key = self._key(kind, namespace, name)
        self.objects[key] = _merge(self.objects[key], patch)
        self.writes.append(("patch", kind, name))
        return copy.deepcopy(self.objects[key])

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.objects.pop(self._key(kind, namespace, name), None)
        self.writes.append(("delete", kind, name))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.patch(API_VERSION, KIND, namespace, name, {"status": status})

    def set_ready(self, name: str, namespace: str, *, ready: int | None = None) -> None:
        """Report a Deployment's pods ready (all of them unless `ready` says how many)."""
        deployment = self.objects[("Deployment", namespace, name)]
        replicas = deployment["spec"].get("replicas", 1)
        count = replicas if ready is None else ready
        deployment["status"] = {
            "replicas": replicas,
            "readyReplicas": count,
            "availableReplicas": count,
            "observedGeneration": deployment["metadata"].get("generation", 1),
        }

    def finish_job(self, name: str, namespace: str, *, message: str, succeeded: bool) -> None:
        """Play a Job's pod to its end: its termination message, then the Job's condition."""
        job = self.objects[("Job", namespace, name)]
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-x1",
                "namespace": namespace,
                "labels": dict(job["spec"]["template"]["metadata"]["labels"]),
            },
            "status": {
                "phase": "Succeeded" if succeeded else "Failed",
                "containerStatuses": [
                    {
                        "name": "build",
                        "state": {
                            "terminated": {"exitCode": 0 if succeeded else 1, "message": message}
                        },
                    }
                ],
            },
        }
        self.objects[("Pod", namespace, pod["metadata"]["name"])] = pod
        kind = "Complete" if succeeded else "Failed"
        job["status"] = {"conditions": [{"type": kind, "status": "True", "reason": kind}]}


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out
