"""The ModelDeployment status: the whole state of a rollout.

Everything the engine needs to continue lives here, so an operator restarted at any
moment reads the status and resumes where it was. The models are immutable; the engine
returns a new status with `model_copy(update=...)`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from pydantic.alias_generators import to_camel

HISTORY_LIMIT = 20
PENDING_EVENTS_LIMIT = 32


def without_nulls(value: Any) -> Any:
    """JSON with null fields left out, as a merge patch stores it."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


class Phase(StrEnum):
    """Where a ModelDeployment is in its lifecycle."""

    PENDING = "Pending"  # nothing decided yet
    BUILDING = "Building"  # the first revision is starting (archive build, pods)
    PROGRESSING = "Progressing"  # a canary is taking traffic step by step
    PROMOTING = "Promoting"  # the canary passed; it scales to full size and takes over
    SUCCEEDED = "Succeeded"  # the stable revision serves everything
    ROLLING_BACK = "RollingBack"  # weight goes back to stable, then the canary scales down
    ROLLED_BACK = "RolledBack"  # the canary was rejected; stable serves everything
    PAUSED = "Paused"  # held by spec.paused or by an analysis policy
    FAILED = "Failed"  # the first revision never became ready


CANARY_PHASES = frozenset({Phase.PROGRESSING, Phase.PROMOTING, Phase.PAUSED, Phase.ROLLING_BACK})


class Verdict(StrEnum):
    """What one measurement says about the canary."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"  # no data, or too few samples
    ERROR = "Error"  # the metrics backend or the query failed


class StatusModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    @field_serializer("*", when_used="json")
    @classmethod
    def _timestamps(cls, value: object) -> object:
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%dT%H:%M:%SZ")
        return value


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class CheckStatus(StatusModel):
    """The last result of one check."""

    name: str
    verdict: Verdict
    value: float | None = None
    stable_value: float | None = None
    samples: int | None = None
    threshold: str = ""
    message: str = ""


class AnalysisStatus(StatusModel):
    """Counters of the running canary's analysis and its last tick."""

    last_tick: datetime | None = None
    checks: list[CheckStatus] = Field(default_factory=list)
    failed: int = 0
    inconclusive: int = 0
    consecutive_errors: int = 0


class HistoryEntry(StatusModel):
    """A revision that was promoted or rolled back."""

    version: str
    revision: str
    archive_digest: str | None = None
    promoted_at: datetime | None = None
    rolled_back_at: datetime | None = None
    reason: str = ""
    instant_rollback: Literal["warm", "cold"] | None = None
    """Set when this promotion was a revert inside rollbackWindow (no analysis): `warm` when
    the revision still had its replicas and took the traffic at once, `cold` when its pods
    had to start first."""


class PendingEvent(StatusModel):
    """An Event decided with this status and not yet posted. The operator writes it here
    first, then creates it under `name`, then removes it: an operator killed in between posts
    it after its restart, and the fixed name keeps it from being posted twice."""

    name: str
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    at: datetime


class WarmRevision(StatusModel):
    """The previous stable, kept at the stable's replica count after a promotion, so that a
    revert to it moves traffic at once; scaled to zero at `scaleDownAt`."""

    revision: str
    version: str
    scale_down_at: datetime


class Recommendation(StatusModel):
    """What the scaling function recommended for a revision at one moment."""

    at: datetime
    replicas: int


class RevisionScaling(StatusModel):
    """One revision's replicas and the last scaling decision about it."""

    revision: str
    role: Literal["stable", "canary"]
    replicas: int = 0
    """Replicas its Deployment has now."""
    ready: int = 0
    desired: int = 0
    """Replicas it should have: the autoscaler's, or the canary's share of the stable's."""
    signal: str | None = None
    value: float | None = None
    """The signal's last value (prometheus engine)."""
    target: float | None = None
    reason: str = ""
    """Why `desired` is what it is."""
    last_scale_time: datetime | None = None
    last_read: datetime | None = None
    """When the signal was last read (prometheus engine: one read per interval)."""
    recommendations: list[Recommendation] = Field(default_factory=list, max_length=64)


ARCHIVES_LIMIT = 8


class ArchiveRecord(StatusModel):
    """A revision's archive in the archive store: built once, fetched by every pod."""

    revision: str
    sha256: str
    store: str


class ModelDeploymentStatus(StatusModel):
    """Everything the operator knows about a ModelDeployment's rollout."""

    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int | None = None
    stable_revision: str | None = None
    stable_version: str | None = None
    canary_revision: str | None = None
    canary_version: str | None = None
    canary_weight: int = 0
    """Percent of traffic the router really sends to the canary."""
    router: str | None = None
    """The router whose objects the operator last applied; when spec.traffic.router changes,
    the operator deletes that router's objects."""
    autoscaler: str | None = None
    """The autoscaling engine the operator last applied (null: no autoscaling); when
    spec.autoscaling.engine changes, the operator deletes that engine's HPA or ScaledObject."""
    step_index: int | None = None
    """Index into spec.canary.steps; null until the canary is ready for its first step."""
    progress_started_at: datetime | None = None
    """When the revision being rolled out started; the progress deadline counts from here."""
    step_started_at: datetime | None = None
    """When the current step (or the promotion) began."""
    pause_reason: Literal["Manual", "Inconclusive", "Error"] | None = None
    rollback_reason: str | None = None
    instant_rollback: bool = False
    """The promotion under way is a revert inside rollbackWindow: no analysis, and its history
    entry says whether it was warm or cold."""
    warm_revision: WarmRevision | None = None
    """The previous stable while canary.scaleDownDelaySeconds keep it warm (no Service sends
    it traffic); null once it is scaled to zero or another rollout starts."""
    analysis: AnalysisStatus = Field(default_factory=AnalysisStatus)
    history: list[HistoryEntry] = Field(default_factory=list, max_length=HISTORY_LIMIT)
    conditions: list[Condition] = Field(default_factory=list)
    handled_requests: dict[str, str] = Field(default_factory=dict)
    """Values of the promote/abort/retry annotations already acted on."""
    archives: list[ArchiveRecord] = Field(default_factory=list, max_length=ARCHIVES_LIMIT)
    """Archives built into the store, newest last: the digest each revision's pods verify."""
    scaling: list[RevisionScaling] = Field(default_factory=list, max_length=4)
    """Replicas of the stable and the canary revision, desired and current, and why."""
    pending_events: list[PendingEvent] = Field(default_factory=list)
    """Events written with this status and not yet posted (empty once they are); at most
    `PENDING_EVENTS_LIMIT`, the oldest dropped first."""

    def scaling_of(self, revision: str | None) -> RevisionScaling | None:
        return next((s for s in self.scaling if s.revision == revision), None)

    def archive_for(self, revision: str) -> ArchiveRecord | None:
        return next((a for a in reversed(self.archives) if a.revision == revision), None)

    def archive_digest(self, revision: str) -> str | None:
        record = self.archive_for(revision)
        return record.sha256 if record is not None else None

    def with_archive(self, record: ArchiveRecord) -> ModelDeploymentStatus:
        kept = [a for a in self.archives if a.revision != record.revision]
        return self.model_copy(update={"archives": [*kept, record][-ARCHIVES_LIMIT:]})

    @property
    def canary_active(self) -> bool:
        return self.canary_revision is not None and self.phase in CANARY_PHASES
