"""The archive build Job of a revision, as read from the cluster.

A build Job (rendered by `render.workload.render_archive_job`) writes the archive's sha256 to
its container's termination message; when it fails, Kubernetes puts the tail of its log
there instead (`FallbackToLogsOnError`). Reading the message needs no access to the store
and no pod logs. The digest then lives in `status.archives`, so an operator restart never
starts a build again, and a Job re-created anyway finds the archive in the store and
rebuilds nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torchrollout.operator.cluster import ClusterApi
from torchrollout.render import names
from torchrollout.render.workload import ARCHIVE_OF_LABEL, BUILD_COMPONENT, COMPONENT_LABEL
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.status import ArchiveRecord

DIGEST = re.compile(r"^[a-f0-9]{64}$")
TAIL_LINES = 12
TAIL_CHARS = 1500


@dataclass(frozen=True)
class BuildState:
    """Where the build of one revision's archive is."""

    job: str
    record: ArchiveRecord | None = None  # built: the digest the pods verify
    failure: str | None = None  # failed: the tail of the build's log
    running: bool = False
    stale: bool = False  # complete, but its pod (and the digest) is gone: build again


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (container.get("state") or {}).get("terminated")
        if state:
            return dict(state)
    return {}


def tail(text: str) -> str:
    """The last lines of a log, short enough for a condition message."""
    lines = [line for line in text.strip().splitlines() if line.strip()][-TAIL_LINES:]
    return "\n".join(lines)[-TAIL_CHARS:]


def build_pods(cluster: ClusterApi, md: ModelDeployment, revision: str) -> list[dict[str, Any]]:
    selector = {
        COMPONENT_LABEL: BUILD_COMPONENT,
        ARCHIVE_OF_LABEL: md.metadata.name,
        names.REVISION_LABEL: revision,
    }
    return cluster.list("v1", "Pod", md.metadata.namespace, selector)


def read_build(cluster: ClusterApi, md: ModelDeployment, revision: str, store: str) -> BuildState:
    """The build Job of `revision`: running, built (with its digest) or failed (with why)."""
    name = names.revision_name(md, revision)
    job = cluster.get("batch/v1", "Job", md.metadata.namespace, name)
    if job is None:
        return BuildState(job=name)
    if _condition(job, "Complete") is not None:
        for pod in build_pods(cluster, md, revision):
            message = (_terminated(pod).get("message") or "").strip()
            if DIGEST.match(message):
                return BuildState(
                    job=name, record=ArchiveRecord(revision=revision, sha256=message, store=store)
                )
        # The pod that knew the digest is gone: a new Job finds the archive in the store.
        return BuildState(job=name, stale=True)
    failed = _condition(job, "Failed")
    if failed is not None:
        logs = [_terminated(pod).get("message") or "" for pod in build_pods(cluster, md, revision)]
        told = tail(next((m for m in reversed(logs) if m.strip()), ""))
        why = told or failed.get("message") or failed.get("reason") or "the build Job failed"
        return BuildState(
            job=name,
            failure=f"archive build failed (kubectl logs job/{name}): {why}",
        )
    return BuildState(job=name, running=True)
