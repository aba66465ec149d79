"""`spec.notifications`: where a rollout's milestones are announced, and which ones.

Each entry names a target kind (a generic JSON webhook, a Slack or a Microsoft Teams
incoming webhook) and the Secret key holding its URL — webhook URLs carry their own
credentials, so they never sit in the spec. `events` picks the milestones; all by default.
The field is called `events`, not `on`: YAML 1.1 parsers (kubectl's among them) read an
unquoted `on:` key as the boolean true.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from torchrollout.spec.base import SpecModel
from torchrollout.spec.pod import SecretKeySelector

NotificationType = Literal["webhook", "slack", "teams"]
NotificationEvent = Literal["stepAdvanced", "promoted", "rolledBack", "paused", "failed"]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = get_args(NotificationEvent)


class NotificationTarget(SpecModel):
    """One destination of rollout messages."""

    type: NotificationType
    """webhook (a JSON POST of the event's fields), slack or teams (incoming webhooks)."""
    secret_ref: SecretKeySelector
    """The Secret key, in the resource's namespace, holding the webhook URL."""
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(NOTIFICATION_EVENTS), min_length=1, max_length=5
    )
    """Which milestones to send: stepAdvanced, promoted, rolledBack, paused, failed."""
