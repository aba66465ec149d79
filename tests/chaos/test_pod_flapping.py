"""Canary pods flap between Ready and unready while every canary of the fleet is being
analysed, on the real control plane: the rollouts end as they would without the fault, and
no tick that found the canary unready counted towards its promotion.

A flapper thread plays a kubelet whose readiness probe fails on and off: it patches each
canary pod's status subresource through the API (the pod's `Ready` and `ContainersReady`
conditions and every container's `ready` flag) to False and back to True, each pod on its
own random 0.3-2.0 s schedule, for FLAP_SECONDS, and then leaves every pod Ready. kwok does
not undo it: its `pod-ready` stage (kustomize/stage/pod/fast) only matches pods still in
phase Pending, and a flapping pod stays Running; the flapper reads every pod back and
counts any it had set unready that another writer made Ready again.

The engine counts a tick that finds the canary not ready as Failed ("canary is not ready",
engine/decide.py `analyse`). Under the e2e policy's failureLimit 2 a good canary that flaps
through two ticks is therefore rolled back, by design. This scenario raises failureLimit
above the number of ticks that flapping can reach, so that the fault-free outcome (good
promoted, bad rolled back) is reachable, and checks instead that every unready tick of a
good canary was counted Failed and announced as such, and that each good canary still
passed through both steps once (two Successful ticks) before being promoted.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.chaos.harness import (
    FAST_CANARY,
    FLEET,
    NAME,
    TRANSITIONS,
    Fleet,
    Results,
    Role,
    ScenarioRecord,
    analysing,
    check_outcome,
    event_count,
    expected_outcome,
    orphans,
    outcome,
    phase_label,
    stray_replicas,
    traceback_count,
    transition_events,
)
from tests.e2e.conftest import (
    OperatorProcess,
    condition_of,
    model_deployment,
)
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(300)]

SEED = 20261130
FIRST, NEXT = "1.0.0", "2.0.0"
FLAP_SECONDS = 24.0
FLAP_INTERVAL = (0.3, 2.0)  # seconds a pod stays Ready, or unready, before the next toggle
SAMPLE_SECONDS = 0.5  # how often the flapper reads the fleet's status and pods back
TICK_SECONDS = 3.0  # the e2e policy's analysis interval
STEPS = 2  # the e2e policy's steps, [20, 60]
# Ticks that can find a canary unready: those within the flapping (a tick may come 5% early,
# engine/decide.py `tick_due`) and one after it, before the Deployment's status catches up.
# With the replicas router a good canary has 4-5 pods at 60%, all flapping, so it is seldom
# all Ready while they flap: 6-8 of these ticks were counted Failed per good canary here.
UNREADY_TICKS = math.floor(FLAP_SECONDS / (0.95 * TICK_SECONDS)) + 2
FAILURE_LIMIT = UNREADY_TICKS + 2  # a good canary cannot reach it by flapping alone
SETTLE_TIMEOUT = 150.0  # a bad canary needs FAILURE_LIMIT ticks (about 36 s) to roll back
UNREADY = "canary is not ready"
ANALYSED = frozenset({"Progressing", "Promoting"})  # the phases whose canary pods flap


@dataclass
class Flapper:
    """A thread that toggles the Ready condition of every canary pod of the fleet while its
    resource is mid-analysis or promoting, then restores them; and reads the fleet back
    every SAMPLE_SECONDS until stopped (what the operator reported while pods flapped)."""

    fleet: Fleet
    api_client: client.ApiClient
    rng: random.Random
    seconds: float = FLAP_SECONDS
    interval: tuple[float, float] = FLAP_INTERVAL
    toggles: int = 0
    by_phase: Counter[str] = field(default_factory=Counter)
    # role -> "phase, PodsReady=status/reason" -> samples
    reported: dict[str, Counter[str]] = field(default_factory=dict)
    undone: list[str] = field(default_factory=list)  # unready pods someone else made Ready
    failed_calls: Counter[str] = field(default_factory=Counter)
    flapped_seconds: float = 0.0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)
        self.md_api = client.CustomObjectsApi(self.api_client)
        self._stop = threading.Event()
        self._unready: dict[tuple[str, str], bool] = {}  # (namespace, pod) -> set unready
        self._due: dict[tuple[str, str], float] = {}  # next toggle, monotonic
        self._containers: dict[tuple[str, str], list[str]] = {}
        self._mds: dict[str, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._run, name="pod-flapper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        """Stop at once (the test failed): what it recorded stays."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the flapper failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            started = time.monotonic()
            end = started + self.seconds
            next_sample = started
            while not self._stop.is_set() and time.monotonic() < end:
                if time.monotonic() >= next_sample:
                    self._sample(flapping=True)
                    next_sample = time.monotonic() + SAMPLE_SECONDS
                self._toggle_due()
                self._stop.wait(0.05)
            self.flapped_seconds = time.monotonic() - started
            for key, unready in list(self._unready.items()):
                if unready:
                    self._set(key, ready=True)
            while not self._stop.wait(SAMPLE_SECONDS):
                self._sample(flapping=False)
        except BaseException as error:
            self.error = error

    def _sample(self, *, flapping: bool) -> None:
        """Read every resource's status, and the canary pods of those being analysed."""
        for role in self.fleet.roles:
            namespace = self.fleet.namespace(role)
            try:
                found: Any = self.md_api.get_namespaced_custom_object(
                    "torchrollout.io",
                    "v1alpha1",
                    namespace,
                    "modeldeployments",
                    NAME,
                    _request_timeout=5,
                )
            except Exception as error:  # a slow answer under load: the next sample will do
                self.failed_calls[f"read status: {type(error).__name__}"] += 1
                continue
            md: dict[str, Any] = found
            self._mds[namespace] = md
            status = md.get("status") or {}
            pods = condition_of(status, "PodsReady")
            seen = f"{status.get('phase')}, PodsReady={pods.get('status')}/{pods.get('reason')}"
            self.reported.setdefault(role.name, Counter())[seen] += 1
            if flapping and status.get("phase") in ANALYSED and status.get("canaryRevision"):
                self._track_pods(namespace, status["canaryRevision"])

    def _track_pods(self, namespace: str, revision: str) -> None:
        selector = f"torchrollout.io/deployment={NAME},torchrollout.io/revision={revision}"
        try:
            pods = self.core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=5
            ).items
        except Exception as error:
            self.failed_calls[f"list pods: {type(error).__name__}"] += 1
            return
        now = time.monotonic()
        for pod in pods:
            meta, spec, state = pod.metadata, pod.spec, pod.status
            if meta is None or spec is None or state is None or meta.name is None:
                continue
            if meta.deletion_timestamp is not None or state.phase != "Running":
                continue
            key = (namespace, meta.name)
            ready = any(c.type == "Ready" and c.status == "True" for c in state.conditions or [])
            if key not in self._due:  # a new canary pod: its first toggle comes at random
                self._due[key] = now + self.rng.uniform(*self.interval)
                self._unready[key] = False
                self._containers[key] = [c.name for c in spec.containers]
            elif self._unready[key] and ready:
                self.undone.append(f"{namespace}/{meta.name}")
                self._unready[key] = False

    def _toggle_due(self) -> None:
        now = time.monotonic()
        for key, due in list(self._due.items()):
            md = self._mds.get(key[0]) or {}
            if (md.get("status") or {}).get("phase") not in ANALYSED:
                if self._unready.get(key):  # settled: its pods Ready at once, then left alone
                    self._set(key, ready=True)
                self._due[key] = math.inf
                continue
            if due > now:
                continue
            if self._set(key, ready=self._unready[key]):
                self.toggles += 1
                self.by_phase[phase_label(md)] += 1
            self._due[key] = time.monotonic() + self.rng.uniform(*self.interval)

    def _set(self, key: tuple[str, str], *, ready: bool) -> bool:
        """Patch the pod's status as its kubelet would when the readiness probe changes: the
        Ready and ContainersReady conditions and each container's `ready` (a strategic merge,
        so the other conditions and the container states stay as kwok wrote them)."""
        namespace, name = key
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        containers = self._containers[key]
        unready = {
            "status": "False",
            "reason": "ContainersNotReady",
            "message": f"containers with unready status: [{' '.join(containers)}]",
        }
        fields = {"status": "True", "reason": None, "message": None} if ready else unready
        body = {
            "status": {
                "conditions": [
                    {"type": kind, "lastTransitionTime": now, **fields}
                    for kind in ("Ready", "ContainersReady")
                ],
                "containerStatuses": [{"name": c, "ready": ready} for c in containers],
            }
        }
        try:
            self.core.patch_namespaced_pod_status(
                name,
                namespace,
                body,
                _content_type="application/strategic-merge-patch+json",
                _request_timeout=5,
            )
        except client.ApiException as error:
            if error.status == 404:  # scaled down or replaced meanwhile: nothing to flap
                self._due.pop(key, None)
                self._unready.pop(key, None)
                return False
            self.failed_calls[f"patch pod status: {error.status}"] += 1
            return False
        except Exception as error:
            self.failed_calls[f"patch pod status: {type(error).__name__}"] += 1
            return False
        self._unready[key] = not ready
        return True


@pytest.fixture
def fleet(api_client: client.ApiClient, kubectl: Kubectl, exporter: Exporter) -> Iterator[Fleet]:
    """The chaos fleet (two good, two bad canaries) with the raised failureLimit."""
    canary = dict(FAST_CANARY)
    analysis = model_deployment("any")["spec"]["canary"]["analysis"]
    canary["analysis"] = {**analysis, "failureLimit": FAILURE_LIMIT}
    made = Fleet(api_client, kubectl, exporter, roles=FLEET, canary=canary)
    yield made
    made.remove_namespaces()


def events_of(api_client: client.ApiClient, namespace: str, reason: str) -> list[tuple[str, int]]:
    """(message, times) of the Events of `reason` about the resource."""
    return [
        (event.message or "", event_count(event))
        for event in client.CoreV1Api(api_client).list_namespaced_event(namespace).items
        if event.involved_object.kind == "ModelDeployment" and event.reason == reason
    ]


def check_end_state(fleet: Fleet, before: dict[str, str], record: ScenarioRecord) -> None:
    """Each rollout ended as without the fault: outcome, history, weight, owned objects, one
    Event per transition (none lost, none repeated)."""
    for role in fleet.roles:
        md = fleet.get(role)
        namespace = fleet.namespace(role)
        got = outcome(md, NEXT, before[role.name])
        check_outcome(record, f"{role.name} {NEXT}", md, got, expected_outcome(role))
        for stray in orphans(fleet.api_client, namespace, md):
            record.found("orphans", f"{role.name}: {stray}")
        for running in stray_replicas(fleet.api_client, namespace, md):
            record.found("superseded revisions still running", f"{role.name}: {running}")
        record.rollouts += 1

    time.sleep(1)  # the last transition's Event is posted after its status write
    for role in fleet.roles:
        wanted = {"Promoted"} if role.promotes else {"RollingBack", "RolledBack"}
        counts = transition_events(fleet.api_client, fleet.namespace(role))
        for reason in TRANSITIONS:
            seen, due = counts[(reason, NEXT)], int(reason in wanted)
            if seen != due:
                kind = "duplicated events" if seen > due else "lost events"
                record.found(kind, f"{role.name}: {reason} x{seen}")


def check_ticks(fleet: Fleet, record: ScenarioRecord) -> None:
    """No tick that found a canary unready counted towards its promotion: a good canary's
    Failed ticks are all "canary is not ready" (its metrics pass), each announced once by an
    AnalysisFailed Event, and it passed each step exactly once (StepAdvanced 1/2 and 2/2,
    then Promoting) before it was promoted. A bad canary failed exactly failureLimit ticks."""
    for role in fleet.roles:
        namespace = fleet.namespace(role)
        analysis = fleet.get(role)["status"].get("analysis") or {}
        failed = analysis.get("failed", 0)
        announced = events_of(fleet.api_client, namespace, "AnalysisFailed")
        times = sum(n for _, n in announced)
        if role.promotes:
            record.outcomes["unready ticks counted Failed (good canaries)"] += failed
            blamed = sum(n for message, n in announced if message.startswith(UNREADY))
            if times != failed or blamed != failed:
                record.found(
                    "unready ticks miscounted",
                    f"{role.name}: analysis.failed {failed}, AnalysisFailed Events {times} "
                    f"({blamed} blaming readiness): {[m for m, _ in announced]}",
                )
            steps: Counter[int] = Counter()
            for message, n in events_of(fleet.api_client, namespace, "StepAdvanced"):
                for k in range(1, STEPS + 1):
                    if f"canary {NEXT} at step {k}/{STEPS}" in message:
                        steps[k] += n
            promoting = sum(
                n
                for message, n in events_of(fleet.api_client, namespace, "Promoting")
                if f"canary {NEXT} passed every step" in message
            )
            if any(steps[k] != 1 for k in range(1, STEPS + 1)) or promoting != 1:
                record.found(
                    "steps skipped or repeated",
                    f"{role.name}: StepAdvanced {dict(steps)}, Promoting x{promoting}",
                )
        else:
            record.outcomes["Failed ticks (bad canaries)"] += failed
            # The tick that reaches the limit rolls back instead of announcing AnalysisFailed.
            if failed != FAILURE_LIMIT or times != FAILURE_LIMIT - 1:
                record.found(
                    "unready ticks miscounted",
                    f"{role.name}: analysis.failed {failed}, AnalysisFailed Events {times}, "
                    f"failureLimit {FAILURE_LIMIT}",
                )


def test_flapping_canary_pods_change_no_outcome(
    fleet: Fleet,
    operator: OperatorProcess,
    chaos_results: Results,
    kubeconfig: Path,
) -> None:
    """Two good and two bad canaries are analysed while their pods flap between Ready and
    unready for FLAP_SECONDS: every rollout ends as without the fault, each good canary
    promoted once after both its steps and the bad ones rolled back once; nothing lost,
    repeated or left behind; the operator logs no traceback."""
    record = chaos_results.scenario(
        "pod-flapping",
        "canary pods flapping",
        f"every canary pod of 4 rollouts (2 good, 2 bad) toggled Ready/unready every "
        f"{FLAP_INTERVAL[0]:g}-{FLAP_INTERVAL[1]:g} s for {FLAP_SECONDS:g} s mid-analysis "
        f"(failureLimit {FAILURE_LIMIT})",
    )
    started = time.monotonic()
    watcher = config.new_client_from_config(config_file=str(kubeconfig))
    flapper = Flapper(fleet, watcher, random.Random(SEED))
    try:
        fleet.apply(FIRST, first=True)
        fleet.wait_settled(FIRST, 90)
        before = fleet.apply(NEXT)
        # From the first canary under analysis: good canaries (3 replicas) and bad ones (1)
        # become ready at different moments, and a good one may pass its steps before a bad
        # one starts. The flapper toggles the pods of whichever are being analysed.
        eventually(lambda: any(analysing(fleet, role) for role in fleet.roles), timeout=90)
        flapper.start()
        fleet.wait_settled(NEXT, SETTLE_TIMEOUT)
        flapper.stop()
        check_end_state(fleet, before, record)
        check_ticks(fleet, record)
        for role in fleet.roles:  # a promoted revision's PodsReady catches up within seconds

            def ready(role: Role = role) -> bool:
                return condition_of(fleet.get(role)["status"], "PodsReady").get("status") == "True"

            eventually(ready, timeout=10)
    finally:
        flapper.halt()
        record.injected = flapper.toggles
        record.by_phase.update(flapper.by_phase)
        record.outcomes["tracebacks in the operator log"] = traceback_count(operator.log)
        record.outcomes["pods made Ready again by another writer"] = len(flapper.undone)
        record.outcomes["seconds flapped"] = round(flapper.flapped_seconds)
        unready_seen = sum(
            n
            for counts in flapper.reported.values()
            for seen, n in counts.items()
            if seen.split(", ", 1)[0] in ANALYSED and "PodsReady=True" not in seen
        )
        record.outcomes["status samples with the canary reported not ready"] = unready_seen
        for role, counts in sorted(flapper.reported.items()):
            print(f"{role}: {dict(counts)}")  # what the operator reported, for the log
        if flapper.failed_calls:
            print(f"flapper calls that failed: {dict(flapper.failed_calls)}")
        if operator.process is not None and operator.process.poll() is not None:
            record.found("operator crashes (not our kills)", f"exit {operator.process.returncode}")
        record.seconds = round(time.monotonic() - started, 1)
        watcher.close()

    assert flapper.toggles, "the flapper toggled no pod: the canaries settled before it ran"
    assert not flapper.undone, f"another writer made pods Ready again: {flapper.undone}"
    assert unready_seen, "the operator never reported a canary not ready: the fault missed"
    assert not record.findings, "\n".join(record.findings)
    assert record.outcomes["tracebacks in the operator log"] == 0, operator.log
    record.passed = True
