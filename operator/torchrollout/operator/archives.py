"""The archive build Job of a revision: read from the cluster, cleaned up, and reported in
the `ArchiveReady` condition.

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
from torchrollout.operator.routers import Workload
from torchrollout.render import names
from torchrollout.render.workload import ARCHIVE_OF_LABEL, BUILD_COMPONENT, COMPONENT_LABEL
from torchrollout.spec.document import ModelDeployment, compute_revision
from torchrollout.spec.status import ArchiveRecord, Condition, Phase

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


def current_build(cluster: ClusterApi, md: ModelDeployment, store: str | None) -> BuildState | None:
    """The spec's revision's build, when it uses a store and its archive is not known yet.

    A Job whose result was read (or lost with its pod), or a failed one a retry request asks
    to run again, is deleted: the plan makes it again while the revision still needs it.
    """
    revision = compute_revision(md.spec)
    if store is None or md.status.archive_for(revision) is not None:
        return None
    state = read_build(cluster, md, revision, store)
    retry = md.requests().get("retry")
    retried = retry is not None and retry != md.status.handled_requests.get("retry")
    if state.record is not None or state.stale or (state.failure and retried):
        cluster.delete("batch/v1", "Job", md.metadata.namespace, state.job)
        if state.record is None:
            return BuildState(job=state.job)
    return state


def drop_superseded_builds(cluster: ClusterApi, md: ModelDeployment) -> None:
    """Delete build Jobs of revisions the spec has moved on from."""
    revision = compute_revision(md.spec)
    for job in cluster.list(
        "batch/v1", "Job", md.metadata.namespace, {ARCHIVE_OF_LABEL: md.metadata.name}
    ):
        if job["metadata"].get("labels", {}).get(names.REVISION_LABEL) != revision:
            cluster.delete("batch/v1", "Job", md.metadata.namespace, job["metadata"]["name"])


def archive_condition(
    md: ModelDeployment, workloads: dict[str, Workload], build: BuildState | None
) -> Condition:
    """ArchiveReady: the revision's archive is in the store, or a pod got past building it."""
    status = md.status
    revision = compute_revision(md.spec)
    record = status.archive_for(revision)
    if record is not None and md.spec.archive.store in {None, record.store}:
        return Condition(
            type="ArchiveReady",
            status="True",
            reason="Stored",
            message=f"{record.store} holds the archive (sha256 {record.sha256})",
        )
    if build is not None and build.failure is not None:
        return Condition(
            type="ArchiveReady", status="False", reason="BuildFailed", message=build.failure
        )
    if build is not None:
        return Condition(
            type="ArchiveReady",
            status="Unknown",
            reason="Building",
            message=f"build Job {build.job} is running"
            if build.running
            else f"build Job {build.job} starts when the revision is rolled out",
        )
    workload = workloads.get(revision)
    if workload is not None and workload.ready > 0:
        return Condition(type="ArchiveReady", status="True", reason="Built")
    gave_up = status.phase is Phase.FAILED or "not ready within" in (status.rollback_reason or "")
    if gave_up and status.phase in {Phase.FAILED, Phase.ROLLED_BACK}:
        deployment = names.revision_name(md, compute_revision(md.spec))
        return Condition(
            type="ArchiveReady",
            status="False",
            reason="NotReadyInTime",
            message="no pod of the revision became ready: the init container's archive build "
            f"says which step failed (kubectl logs deploy/{deployment} -c archive)",
        )
    return Condition(type="ArchiveReady", status="Unknown", reason="Building")
