"""The previous stable kept warm after a promotion, and what a revert to it reports.

After a promotion the revision that was stable keeps the stable's replica count for
`canary.scaleDownDelaySeconds` (as Argo Rollouts' option of that name): `status.warmRevision`
names it with the moment its delay ends. No Service sends it traffic meanwhile (the client
Service selects the stable revision alone while no canary runs), but a revert to it finds
it ready and the decision promotes it at once: a *warm* instant rollback, one reconcile.
When the delay ends, or as soon as another rollout starts (during a canary the client
Service selects every revision, so warm pods would take traffic), the status stops naming
it and the renderer scales it to zero with the other rollback-window revisions; a revert
then waits for its pods to start: a *cold* instant rollback.

Pure helpers of `decide`: the time is the `now` passed in and the deadline is in the
status, so an operator restarted mid-delay scales the revision down at the same moment.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from torchrollout.spec.status import ModelDeploymentStatus, WarmRevision

if TYPE_CHECKING:
    from torchrollout.spec.resource import ModelDeploymentSpec


def warm_after_promotion(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime
) -> WarmRevision | None:
    """The revision kept warm when `status`'s canary is promoted at `now`: the stable it
    replaces, unless the delay is 0 or no revert could use it (rollbackWindow 0)."""
    delay = spec.canary.scale_down_delay_seconds
    previous = status.stable_revision
    if delay <= 0 or spec.canary.rollback_window <= 0:
        return None
    if previous is None or previous == status.canary_revision:
        return None
    return WarmRevision(
        revision=previous,
        version=status.stable_version or previous,
        scale_down_at=now + timedelta(seconds=delay),
    )


def seconds_until_scale_down(warm: WarmRevision, now: datetime) -> float:
    """Seconds the warm revision has left (0 or less: its delay is over)."""
    return (warm.scale_down_at - now).total_seconds()


def scale_down_reason(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, warm: WarmRevision, left: float
) -> str | None:
    """Why the warm revision is let go now: None to keep it, "" to let it go silently
    (the rollout has made it the stable or canary revision, which sizes it itself)."""
    if warm.revision in {status.stable_revision, status.canary_revision}:
        return ""
    what = f"previous stable {warm.version} (revision {warm.revision}) scaled to zero"
    if status.canary_active:
        return (
            f"{what}: canary {status.canary_version} started, and during a canary the "
            "client Service sends traffic to every revision"
        )
    if left <= 0:
        return (
            f"{what}: canary.scaleDownDelaySeconds ({spec.canary.scale_down_delay_seconds}s) passed"
        )
    return None


def instant_rollback_detail(
    how: Literal["warm", "cold"], *, revision: str, ready: int, waited: float
) -> str:
    """How a revert inside rollbackWindow got its traffic back, for history and message."""
    replicas = "replica" if ready == 1 else "replicas"
    if how == "warm":
        return f"warm: revision {revision} still had {ready} ready {replicas}"
    return (
        f"cold: revision {revision} was scaled up and had {ready} ready {replicas} "
        f"after {waited:.0f}s"
    )
