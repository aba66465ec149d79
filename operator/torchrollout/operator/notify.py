"""Rollout messages for `spec.notifications`: which Events are announced, and what is said.

Pure: no I/O. `notices` turns the Events of one reconciliation into `Notice`s (the engine's
Event reasons mapped to the names `spec.notifications[].events` uses), and `payload` renders
a notice for its target kind. `torchrollout.operator.notifier` delivers them.

    StepAdvanced                            -> stepAdvanced
    Promoted                                -> promoted
    RolledBack, InstantRollback             -> rolledBack
    Paused                                  -> paused
    DeployFailed, ProgressDeadlineExceeded  -> failed

A message names the model (namespace/name), the stable and canary versions, the phase, the
Event's own message, the checks that decided (Failed or Inconclusive ones on a rollback, a
pause or a failure; all of the last tick's on a step) and the rollback reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchrollout.engine import Event
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.notifications import NotificationEvent, NotificationType
from torchrollout.spec.status import CheckStatus, ModelDeploymentStatus, Verdict

NOTIFIED: dict[str, NotificationEvent] = {
    "StepAdvanced": "stepAdvanced",
    "Promoted": "promoted",
    "RolledBack": "rolledBack",
    "InstantRollback": "rolledBack",
    "Paused": "paused",
    "DeployFailed": "failed",
    "ProgressDeadlineExceeded": "failed",
}
_TITLES: dict[NotificationEvent, str] = {
    "stepAdvanced": "canary step advanced",
    "promoted": "promoted",
    "rolledBack": "rolled back",
    "paused": "paused",
    "failed": "failed",
}
_COLORS: dict[NotificationEvent, str] = {  # Teams' theme colour per milestone
    "stepAdvanced": "0078D7",
    "promoted": "2EB886",
    "rolledBack": "D40E0D",
    "paused": "F2C744",
    "failed": "D40E0D",
}


@dataclass(frozen=True)
class CheckLine:
    """One check as the message shows it."""

    name: str
    verdict: str
    value: float | None
    threshold: str
    message: str

    def text(self) -> str:
        value = "no value" if self.value is None else f"{self.value:g}"
        threshold = f" (threshold {self.threshold})" if self.threshold else ""
        return f"{self.name} {self.verdict}: {value}{threshold}"


@dataclass(frozen=True)
class Notice:
    """One rollout milestone of one ModelDeployment, ready to render."""

    namespace: str
    name: str
    event: NotificationEvent
    reason: str
    message: str
    phase: str
    stable_version: str | None
    canary_version: str | None
    checks: tuple[CheckLine, ...] = ()
    rollback_reason: str | None = None

    @property
    def model(self) -> str:
        return f"{self.namespace}/{self.name}"

    def title(self) -> str:
        return f"ModelDeployment {self.model} {_TITLES[self.event]}"

    def text(self) -> str:
        """The whole message as plain lines."""
        lines = [
            f"{self.title()}: {self.message}",
            f"phase {self.phase}, stable {self.stable_version or '-'}, "
            f"canary {self.canary_version or '-'}",
        ]
        if self.checks:
            lines.append("checks: " + "; ".join(c.text() for c in self.checks))
        if self.rollback_reason and self.event == "rolledBack":
            lines.append(f"rollback reason: {self.rollback_reason}")
        return "\n".join(lines)


def _deciding(event: NotificationEvent, checks: list[CheckStatus]) -> tuple[CheckLine, ...]:
    if event in ("rolledBack", "paused", "failed"):
        checks = [c for c in checks if c.verdict is not Verdict.SUCCESSFUL]
    elif event != "stepAdvanced":
        checks = []
    return tuple(CheckLine(c.name, str(c.verdict), c.value, c.threshold, c.message) for c in checks)


def notices(
    md: ModelDeployment, status: ModelDeploymentStatus, events: list[Event]
) -> list[Notice]:
    """The announced milestones among `events`, told with the status they led to."""
    # The canary's version is gone from the status once it is promoted or rolled back:
    # the history's last entry still names it.
    last = status.history[-1].version if status.history else None
    found = []
    for event in events:
        kind = NOTIFIED.get(event.reason)
        if kind is None:
            continue
        canary = status.canary_version
        if canary is None and kind in ("promoted", "rolledBack"):
            canary = last
        found.append(
            Notice(
                namespace=md.metadata.namespace,
                name=md.metadata.name,
                event=kind,
                reason=event.reason,
                message=event.message,
                phase=str(status.phase),
                stable_version=status.stable_version,
                canary_version=canary,
                checks=_deciding(kind, status.analysis.checks),
                rollback_reason=status.rollback_reason,
            )
        )
    return found


def webhook_payload(notice: Notice) -> dict[str, Any]:
    """The generic webhook's JSON: every field, and the text a chat would show."""
    return {
        "kind": "ModelDeployment",
        "namespace": notice.namespace,
        "name": notice.name,
        "event": notice.event,
        "reason": notice.reason,
        "phase": notice.phase,
        "stableVersion": notice.stable_version,
        "canaryVersion": notice.canary_version,
        "message": notice.message,
        "rollbackReason": notice.rollback_reason,
        "checks": [
            {
                "name": c.name,
                "verdict": c.verdict,
                "value": c.value,
                "threshold": c.threshold,
                "message": c.message,
            }
            for c in notice.checks
        ],
        "text": notice.text(),
    }


def slack_payload(notice: Notice) -> dict[str, Any]:
    """A Slack incoming webhook's message."""
    return {"text": notice.text()}


def teams_payload(notice: Notice) -> dict[str, Any]:
    """A Microsoft Teams incoming webhook's MessageCard."""
    facts = [
        {"name": "Model", "value": notice.model},
        {"name": "Phase", "value": notice.phase},
        {"name": "Stable", "value": notice.stable_version or "-"},
        {"name": "Canary", "value": notice.canary_version or "-"},
    ]
    facts += [{"name": f"Check {c.name}", "value": c.text()} for c in notice.checks]
    if notice.rollback_reason and notice.event == "rolledBack":
        facts.append({"name": "Rollback reason", "value": notice.rollback_reason})
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": notice.title(),
        "themeColor": _COLORS[notice.event],
        "title": notice.title(),
        "sections": [{"text": notice.message, "facts": facts}],
    }


def payload(kind: NotificationType, notice: Notice) -> dict[str, Any]:
    """What is POSTed to a target of this kind."""
    if kind == "slack":
        return slack_payload(notice)
    if kind == "teams":
        return teams_payload(notice)
    return webhook_payload(notice)
