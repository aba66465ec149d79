"""spec.notifications: which Events are announced, what each target kind receives, and how
delivery fails without holding up a rollout (httpx.MockTransport for the endpoints)."""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

import httpx
import pytest

from tests.unit.builders import BASE, merged
from torchrollout.engine import Event
from torchrollout.operator.cluster import FakeCluster
from torchrollout.operator.notifier import (
    Job,
    Notifier,
    notifications_condition,
    parse_default_target,
)
from torchrollout.operator.notify import Notice, notices, payload
from torchrollout.spec import ModelDeployment, parse_model_deployment
from torchrollout.spec.status import ModelDeploymentStatus

URL = "https://hooks.example.com/T000/B000/secret-token"
FAILED_CHECK = {
    "name": "accuracy",
    "verdict": "Failed",
    "value": 0.5,
    "threshold": ">= 0.85",
    "message": "accuracy 0.5 below 0.85",
}
PASSED_CHECK = {
    "name": "latency-p99",
    "verdict": "Successful",
    "value": 120.0,
    "threshold": "<= 500",
}


def resource(*targets: dict[str, Any]) -> ModelDeployment:
    return parse_model_deployment(
        merged(BASE, {"status": None, "spec": {"notifications": list(targets)}})
    )


def target(kind: str = "webhook", name: str = "hooks", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "secretRef": {"name": name, "key": "url"}, **extra}


def rolled_back() -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(
        {
            "phase": "RolledBack",
            "stableVersion": "1.0.0",
            "history": [{"version": "2.0.0", "revision": "abc", "reason": "accuracy failed"}],
            "rollbackReason": "2 failed ticks: accuracy 0.5 < 0.85",
            "analysis": {"checks": [FAILED_CHECK, PASSED_CHECK]},
        }
    )


def progressing() -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(
        {
            "phase": "Progressing",
            "stableVersion": "1.0.0",
            "canaryVersion": "2.0.0",
            "analysis": {"checks": [PASSED_CHECK]},
        }
    )


# -- which Events are announced ------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "announced"),
    [
        ("StepAdvanced", "stepAdvanced"),
        ("Promoted", "promoted"),
        ("RolledBack", "rolledBack"),
        ("InstantRollback", "rolledBack"),
        ("Paused", "paused"),
        ("DeployFailed", "failed"),
        ("ProgressDeadlineExceeded", "failed"),
        ("RollingBack", None),
        ("CanaryStarted", None),
        ("AnalysisFailed", None),
        ("Deployed", None),
    ],
)
def test_engine_events_map_to_the_names_spec_events_uses(
    reason: str, announced: str | None
) -> None:
    found = notices(resource(target()), progressing(), [Event("Normal", reason, "m")])
    assert [n.event for n in found] == ([announced] if announced else [])


def test_targets_default_to_every_event() -> None:
    md = resource(target())
    assert md.spec.notifications[0].events == [
        "stepAdvanced",
        "promoted",
        "rolledBack",
        "paused",
        "failed",
    ]


@pytest.mark.parametrize(
    ("events", "reasons", "queued"),
    [
        (["promoted", "rolledBack"], ["StepAdvanced", "Promoted"], 1),
        (["promoted", "rolledBack"], ["RolledBack"], 1),
        (["failed"], ["StepAdvanced", "Promoted", "RolledBack"], 0),
        (None, ["StepAdvanced", "Promoted"], 2),
    ],
)
def test_a_target_gets_only_the_events_it_names(
    events: list[str] | None, reasons: list[str], queued: int
) -> None:
    extra = {} if events is None else {"events": events}
    notifier = Notifier(FakeCluster(), start=False)
    got = notifier.enqueue(
        resource(target(**extra)), progressing(), [Event("Normal", r, "m") for r in reasons]
    )
    assert got == queued


# -- what each kind receives ---------------------------------------------------------


def test_a_rollback_message_names_the_model_versions_phase_and_failing_check() -> None:
    (notice,) = notices(
        resource(target()), rolled_back(), [Event("Warning", "RolledBack", "rolled back 2.0.0")]
    )
    text = notice.text()
    for fragment in ("risk/fraud", "RolledBack", "stable 1.0.0", "canary 2.0.0", "accuracy"):
        assert fragment in text
    assert "accuracy Failed: 0.5 (threshold >= 0.85)" in text
    assert "latency-p99" not in text  # it passed: it did not decide
    assert "rollback reason: 2 failed ticks" in text


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("slack", lambda p: set(p) == {"text"} and "accuracy Failed: 0.5" in p["text"]),
        (
            "teams",
            lambda p: (
                p["@type"] == "MessageCard"
                and "risk/fraud rolled back" in p["title"]
                and {"name": "Canary", "value": "2.0.0"} in p["sections"][0]["facts"]
                and any("accuracy Failed" in f["value"] for f in p["sections"][0]["facts"])
            ),
        ),
        (
            "webhook",
            lambda p: (
                (p["namespace"], p["name"], p["event"], p["reason"], p["phase"])
                == ("risk", "fraud", "rolledBack", "RolledBack", "RolledBack")
                and (p["stableVersion"], p["canaryVersion"]) == ("1.0.0", "2.0.0")
                and p["checks"][0]["name"] == "accuracy"
                and p["checks"][0]["value"] == 0.5
                and p["rollbackReason"].startswith("2 failed ticks")
            ),
        ),
    ],
)
def test_payload_per_target_kind(kind: Any, check: Any) -> None:
    (notice,) = notices(
        resource(target(kind)), rolled_back(), [Event("Warning", "RolledBack", "rolled back")]
    )
    assert check(payload(kind, notice)), payload(kind, notice)


def test_a_step_message_shows_the_checks_that_passed() -> None:
    (notice,) = notices(resource(target()), progressing(), [Event("Normal", "StepAdvanced", "s")])
    assert "latency-p99 Successful: 120" in notice.text()
    assert "canary 2.0.0" in notice.text()


# -- delivery --------------------------------------------------------------------------


def secret(cluster: FakeCluster, name: str = "hooks", url: str = URL) -> None:
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "risk"},
            "data": {"url": base64.b64encode(url.encode()).decode()},
        }
    )


class Endpoint:
    """Answers with the next status of `answers` (the last one repeats), or times out."""

    def __init__(self, *answers: int | str) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        assert isinstance(answer, int)
        return httpx.Response(answer, text="boom" if answer >= 400 else "ok")


def job(notifier: Notifier, md: ModelDeployment, notice: Notice) -> Job:
    """The notice for the resource's first target, as `enqueue` would queue it."""
    first = notifier.destinations(md)[0]
    return Job(("risk", "fraud"), first.label, first.target, notice, first.secret_namespace)


def delivered(
    endpoint: Endpoint, *, with_secret: bool = True, tries: int = 3
) -> tuple[Notifier, ModelDeployment, list[str]]:
    """One rollback notice delivered synchronously to a webhook target."""
    cluster = FakeCluster()
    if with_secret:
        secret(cluster)
    errors: list[str] = []
    sleeps: list[float] = []
    notifier = Notifier(
        cluster,
        httpx.Client(transport=httpx.MockTransport(endpoint)),
        tries=tries,
        on_error=errors.append,
        sleep=sleeps.append,
        start=False,
    )
    md = resource(target())
    (notice,) = notices(md, rolled_back(), [Event("Warning", "RolledBack", "rolled back")])
    notifier.deliver(job(notifier, md, notice))
    assert sleeps == [0.5, 1.0][: max(0, len(endpoint.requests) - 1)]
    return notifier, md, errors


@pytest.mark.parametrize(
    ("answers", "tries", "ready", "fragment"),
    [
        ((200,), 1, "True", ""),
        ((500, 503, 200), 3, "True", ""),
        ((500,), 3, "False", "failed after 3 tries: HTTP 500 boom"),
        (("timeout",), 3, "False", "failed after 3 tries: timed out after 5s"),
        ((404,), 1, "False", "failed after 1 try: HTTP 404 boom"),
        ((429, 200), 2, "True", ""),
    ],
)
def test_retries_then_delivers_or_gives_up_with_a_condition(
    answers: tuple[int | str, ...], tries: int, ready: str, fragment: str
) -> None:
    endpoint = Endpoint(*answers)
    notifier, md, errors = delivered(endpoint)
    assert len(endpoint.requests) == tries
    assert str(endpoint.requests[0].url) == URL
    condition = notifications_condition(notifier.problem(md))
    assert condition.status == ready
    if ready == "False":
        assert condition.reason == "DeliveryFailed"
        assert fragment in condition.message
        assert "notifications[0] (webhook, Secret hooks key url)" in condition.message
        assert URL not in condition.message  # the URL is a credential
        assert errors and fragment in errors[0]
    else:
        assert errors == []


def test_a_missing_secret_is_a_condition_naming_it_and_nothing_is_sent() -> None:
    endpoint = Endpoint(200)
    notifier, md, errors = delivered(endpoint, with_secret=False)
    assert endpoint.requests == []
    condition = notifications_condition(notifier.problem(md))
    assert (condition.status, condition.reason) == ("False", "SecretNotFound")
    assert "Secret risk/hooks does not exist" in condition.message
    assert errors


def test_a_later_delivery_clears_the_problem() -> None:
    notifier, md, _ = delivered(Endpoint(500), tries=1)
    assert notifier.problem(md) is not None
    (notice,) = notices(md, rolled_back(), [Event("Warning", "RolledBack", "again")])
    notifier.client = httpx.Client(transport=httpx.MockTransport(Endpoint(200)))
    notifier.deliver(job(notifier, md, notice))
    assert notifier.problem(md) is None


def test_a_slow_endpoint_never_blocks_enqueue_and_a_full_queue_drops_with_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release, started = threading.Event(), threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        release.wait(10)
        return httpx.Response(200)

    cluster = FakeCluster()
    secret(cluster)
    notifier = Notifier(cluster, httpx.Client(transport=httpx.MockTransport(slow)), queue_size=2)
    md = resource(target())
    events = [Event("Warning", "RolledBack", "rolled back")]
    try:
        began = time.monotonic()
        assert notifier.enqueue(md, rolled_back(), events) == 1
        assert started.wait(5)  # the worker is now stuck in the slow endpoint
        with caplog.at_level(logging.WARNING, logger="torchrollout.operator.notifier"):
            queued = [notifier.enqueue(md, rolled_back(), events) for _ in range(4)]
        assert time.monotonic() - began < 2
        assert queued == [1, 1, 0, 0]
        assert notifier.dropped == 2
        assert "notification queue full: dropped rolledBack of risk/fraud" in caplog.text
    finally:
        release.set()
        notifier.close()
    assert notifier.problem(md) is None


# -- operator-wide defaults -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "kind", "where", "events"),
    [
        ("slack:ops/hooks/url", "slack", ("ops", "hooks", "url"), 5),
        (
            "teams:torchrollout-system/t/k:promoted,rolledBack",
            "teams",
            ("torchrollout-system", "t", "k"),
            2,
        ),
    ],
)
def test_a_default_target_flag_names_its_kind_secret_and_events(
    flag: str, kind: str, where: tuple[str, str, str], events: int
) -> None:
    parsed = parse_default_target(flag)
    ref = parsed.target.secret_ref
    assert (parsed.target.type, (parsed.namespace, ref.name, ref.key)) == (kind, where)
    assert len(parsed.target.events) == events


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        ("slack", "use TYPE:NAMESPACE/SECRET/KEY"),
        ("slack:hooks/url", "use TYPE:NAMESPACE/SECRET/KEY"),
        ("sms:ops/hooks/url", "TYPE is webhook, slack or teams"),
        ("slack:ops/hooks/url:promoted,deployed", "unknown event 'deployed'"),
    ],
)
def test_a_bad_default_target_flag_says_what_to_fix(flag: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        parse_default_target(flag)


def test_defaults_serve_resources_without_targets_of_their_own_from_the_operator_namespace() -> (
    None
):
    cluster = FakeCluster()
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ops-hooks", "namespace": "torchrollout-system"},
            "data": {"url": base64.b64encode(URL.encode()).decode()},
        }
    )
    endpoint = Endpoint(200)
    notifier = Notifier(
        cluster,
        httpx.Client(transport=httpx.MockTransport(endpoint)),
        start=False,
        defaults=[parse_default_target("webhook:torchrollout-system/ops-hooks/url:rolledBack")],
    )
    own = resource(target(name="team-hooks"))
    assert [d.label for d in notifier.destinations(own)] == [
        "notifications[0] (webhook, Secret team-hooks key url)"
    ]
    bare = resource()
    (default,) = notifier.destinations(bare)
    assert default.secret_namespace == "torchrollout-system"
    step = notices(bare, progressing(), [Event("Normal", "StepAdvanced", "step 2")])
    assert notifier.enqueue(bare, progressing(), [Event("Normal", "StepAdvanced", "x")]) == 0
    assert step  # a step notice exists, but the default target asked for rollbacks only
    assert notifier.enqueue(bare, rolled_back(), [Event("Warning", "RolledBack", "x")]) == 1
    (notice,) = notices(bare, rolled_back(), [Event("Warning", "RolledBack", "x")])
    assert notifier.deliver(job(notifier, bare, notice)) is None
    assert [str(r.url) for r in endpoint.requests] == [URL]


def test_a_missing_default_secret_names_the_operator_namespace() -> None:
    notifier = Notifier(
        FakeCluster(),
        httpx.Client(transport=httpx.MockTransport(Endpoint(200))),
        start=False,
        defaults=[parse_default_target("slack:torchrollout-system/ops-hooks/url")],
    )
    bare = resource()
    (notice,) = notices(bare, rolled_back(), [Event("Warning", "RolledBack", "x")])
    notifier.deliver(job(notifier, bare, notice))
    condition = notifications_condition(notifier.problem(bare))
    assert condition.reason == "SecretNotFound"
    assert "Secret torchrollout-system/ops-hooks does not exist" in condition.message
    assert "default notification 0 (slack, Secret torchrollout-system/ops-hooks key url)" in (
        condition.message
    )
