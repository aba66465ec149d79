"""On the API emulator: injected 409 conflicts, 5xx answers, slow answers and cut watches at
random calls while four rollouts run at once, and the end states equal the fault-free run's.

The operator runs as a process against the emulator (tests/kube_emulator), as in
tests/e2e/emulator; the emulator's fake Deployment controller makes pods Ready after
`deployment_delay`. A first deploy and one round run without faults (the reference);
then every round runs with the faults switched on from before the new version is applied
until all four rollouts have settled, and is checked with the faults off: the outcome,
one history entry per transition (none lost, none repeated), transition Events not
repeated, every step announced once before a promotion, weight 0 after every rollback,
nothing left unowned, no superseded revision still running, the operator still running.

A fault never half-happens here: the emulator answers an injected error before it touches
its store, so a failed write did not happen (a real API server's 504 may come after the
write). Which fault fired on which request, and in which phase the resource it named was at
that moment, is recorded inside the emulator (a recording FaultInjector), so the test's own
reads, done in-process while the faults are on, neither consume nor dodge faults; only
its `kubectl apply` of each new version goes through them (and is retried).

Failures: a wrong outcome, a bad canary promoted, a history entry lost or repeated, a
transition Event repeated or lost, or still pending in `status.pendingEvents` after
EVENTS_WAIT (the operator comes back for an Event the API server refused within
seconds), an orphan, a superseded revision still running, the operator dead, any
traceback. Recorded, not failed on: rollbacks whose reason blames an unready canary. A
rollback applied (canary scaled to 0) whose status write failed is decided again on a new
tick, which finds the canary it scaled down not ready: the outcome is the same, the reason
differs from the fault-free run's.

`pytest tests/chaos --soak N` runs N times as many faulty rounds.
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.chaos.harness import (
    NAME,
    OWNED_KINDS,
    RESULTS_PATH,
    TRANSITIONS,
    Fleet,
    Results,
    Role,
    ScenarioRecord,
    check_outcome,
    event_count,
    expected_outcome,
    missing_transitions,
    outcome,
    phase_label,
    stray_replicas,
    traceback_count,
    transition_events,
)
from tests.e2e.conftest import CRD, GOOD, OperatorProcess, dump, model_deployment, play
from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.faults import FaultInjector, FaultRule
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter
from torchrollout.local.prometheus import PrometheusServer

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(480)]

SEED = 20261130
FIRST, FREE = "1.0.0", "2.0.0"
ROUNDS = 2  # faulty rounds in a CI run; --soak N runs N times as many
SETTLE_TIMEOUT = 180.0  # one round under faults: 30-90 s on 2 shared cores; fault-free 15 s
CONVERGE_TIMEOUT = 20.0  # faults off: what the operator still has to clean up
MD_KEY = ("torchrollout.io", "modeldeployments")
UNREADY = "canary is not ready"
UNREADY_BLAMED = "rollbacks that blame an unready canary"
# Transition Events missing at the end: those the status holds as pending are late (the
# operator posts them at its next look at the resource, TROUBLE_RECHECK on), the others lost.
EVENTS_WAIT = 25.0
LATE = f"events still pending after {EVENTS_WAIT:g} s"
KEPT_LOG = RESULTS_PATH.parent / "chaos-operator-api-faults.log"
# The kinds the emulator serves of those the operator renders (no NetworkPolicy, no Job:
# the operator makes them only when told to, and the emulator does not serve them).
EMULATED_KINDS = tuple(
    (k, listing) for k, listing in OWNED_KINDS if k not in {"NetworkPolicy", "Job"}
)
CHILDREN = "deployments|services|configmaps|poddisruptionbudgets|horizontalpodautoscalers"
ANY_CALL = ("GET", "POST", "PUT", "PATCH", "DELETE")  # GET is both reads and lists
# Errors hit the calls about the fleet's objects, not discovery: on the emulator, which
# serves no Pods, the operator's client looks up its discovery again on every reconcile
# that asks about a canary's pods, far more often than against a real API server.
IN_NS = "/namespaces/"
# What fires while a round runs, at a probability per matching request: conflicts on the
# operator's writes (status and children), server errors on any call, slow answers,
# refused and cut watch streams. The first matching rule of a kind that draws its
# probability fires, so the later rules of a kind fire a little less than they say.
FAULTS: tuple[dict[str, Any], ...] = (
    {
        "kind": "error",
        "status": 409,
        "probability": 0.1,
        "methods": ("PATCH", "PUT"),
        "path": rf"/modeldeployments/[^/]+/status$|/({CHILDREN})/[^/]+$",
    },
    {"kind": "error", "status": 500, "probability": 0.01, "methods": ANY_CALL, "path": IN_NS},
    {"kind": "error", "status": 503, "probability": 0.01, "methods": ANY_CALL, "path": IN_NS},
    {"kind": "error", "status": 504, "probability": 0.003, "methods": ANY_CALL, "path": IN_NS},
    {"kind": "error", "status": 429, "probability": 0.003, "methods": ANY_CALL, "path": IN_NS},
    {"kind": "error", "status": 503, "probability": 0.15, "methods": ("WATCH",)},
    {"kind": "slow", "delay": 1.0, "probability": 0.01},
    {"kind": "slow", "delay": 0.5, "probability": 0.02},
    {"kind": "slow", "delay": 0.2, "probability": 0.05},
    {"kind": "drop_watch", "delay": 1.5, "probability": 0.3},
    {"kind": "drop_watch", "delay": 3.0, "probability": 0.5},
    {"kind": "drop_watch", "delay": 6.0, "probability": 1.0},
)


# -- the emulator, recording each fault ------------------------------------------------


def fault_name(rule: FaultRule) -> str:
    if rule.kind == "error" and rule.methods == ("WATCH",):
        return f"{rule.status} to a watch"
    if rule.kind == "error":
        return f"{rule.status} {'on write' if rule.status == 409 else 'answer'}"
    if rule.kind == "slow":
        return f"slow {rule.delay:g} s"
    return "watch cut"


@dataclass(frozen=True)
class Fired:
    at: float
    fault: str
    method: str
    path: str
    phase: str


class RecordingInjector(FaultInjector):
    """The emulator's FaultInjector, noting every fault that fires and the phase of the
    rollout its request named (read from the store at that moment, on the emulator's loop)."""

    def __init__(self, emulator: KubeEmulator, seed: int) -> None:
        super().__init__(seed)
        self.store = emulator.cluster.store
        self.fired: list[Fired] = []

    def _fire(self, kinds: tuple[str, ...], method: str, path: str) -> FaultRule | None:
        rule = super()._fire(kinds, method, path)
        if rule is not None:
            fault = fault_name(rule)
            self.fired.append(Fired(time.time(), fault, method, path, self._phase(path)))
        return rule

    def _phase(self, path: str) -> str:
        found = re.search(r"/namespaces/([^/]+)", path)
        if found is None:
            return "no resource (discovery, cluster-wide)"
        md = self.store.get(MD_KEY, found.group(1), NAME)
        return "no resource" if md is None else phase_label(md)


@dataclass
class Faults:
    """The round's faults, switched on and off together."""

    emulator: KubeEmulator
    injector: RecordingInjector

    def on(self) -> None:
        rules = [FaultRule.from_dict(rule) for rule in FAULTS]

        def add() -> None:
            for rule in rules:
                self.injector.add(rule)

        self.emulator.call(add)
        self.emulator.drop_watches()  # the open streams too: their successors get the rules

    def off(self) -> list[FaultRule]:
        """Clears the rules; returns them with their `fired` counts."""

        def clear() -> list[FaultRule]:
            rules = list(self.injector.rules)
            self.injector.clear()
            return rules

        return self.emulator.call(clear)


@pytest.fixture
def fault_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEmulator]:
    kubeconfig = tmp_path_factory.mktemp("api-faults") / "kubeconfig"
    with KubeEmulator.start(
        kubeconfig_path=kubeconfig, bookmark_interval=1.0, deployment_delay=0.2
    ) as emulator:
        yield emulator


@pytest.fixture
def injector(fault_emulator: KubeEmulator) -> RecordingInjector:
    recording = RecordingInjector(fault_emulator, SEED)
    fault_emulator.cluster.faults = recording  # the middlewares look it up on every request
    return recording


@pytest.fixture
def emulator_kubectl(
    fault_emulator: KubeEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Kubectl:
    assert fault_emulator.kubeconfig_path is not None
    kubectl = Kubectl(fault_emulator.kubeconfig_path, tmp_path_factory.mktemp("kubectl-cache"))
    kubectl("apply", "-f", str(CRD))
    return kubectl


@pytest.fixture
def emulator_client(fault_emulator: KubeEmulator) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(fault_emulator.kubeconfig_path))
    yield api
    api.close()


# -- the fleet on the emulator ---------------------------------------------------------


@dataclass
class EmulatedFleet(Fleet):
    """harness.Fleet on the emulator: waits read the store in-process (no faults, none
    consumed), and each new version is applied with kubectl, again until it goes through."""

    emulator: KubeEmulator | None = None
    apply_retries: int = field(default=0)

    def peek(self, role: Role) -> dict[str, Any]:
        assert self.emulator is not None
        store, namespace = self.emulator.cluster.store, self.namespace(role)
        found = self.emulator.call(lambda: copy.deepcopy(store.get(MD_KEY, namespace, NAME)))
        assert found is not None, f"{namespace}/{NAME} is gone"
        return dict(found)

    def apply(self, version: str, *, first: bool = False) -> dict[str, str]:
        before = {}
        for role in self.roles:
            namespace = self.namespace(role)
            before[role.name] = "" if first else self.peek(role)["status"]["stableVersion"]
            runtime = {"replicas": role.replicas}
            body = model_deployment(namespace, version, canary=self.canary, runtime=runtime)
            play(self.exporter, namespace, body, GOOD if first else role.rates)
            text = dump(body)

            def applied(text: str = text) -> bool:
                done = self.kubectl("apply", "-f", "-", input=text, check=False)
                self.apply_retries += done.returncode != 0
                return done.returncode == 0

            eventually(applied, timeout=60, interval=0.2)
        return before

    def settled(self, role: Role, version: str) -> bool:
        status = self.peek(role).get("status") or {}
        if status.get("phase") not in {"Succeeded", "RolledBack", "Failed", "Paused"}:
            return False
        history = status.get("history") or [{}]
        return status.get("stableVersion") == version or history[-1].get("version") == version

    def wait_settled(self, version: str, timeout: float) -> None:
        try:
            eventually(
                lambda: all(self.settled(r, version) for r in self.roles),
                timeout=timeout,
                interval=0.25,
            )
        except AssertionError:
            keys = ("phase", "stableVersion", "canaryVersion", "message")
            short = {
                r.name: {k: (self.peek(r).get("status") or {}).get(k) for k in keys}
                for r in self.roles
            }
            raise AssertionError(f"not settled on {version} in {timeout:.0f} s: {short}") from None


@pytest.fixture
def fleet(
    fault_emulator: KubeEmulator,
    emulator_client: client.ApiClient,
    emulator_kubectl: Kubectl,
    exporter: Exporter,
) -> EmulatedFleet:
    return EmulatedFleet(emulator_client, emulator_kubectl, exporter, emulator=fault_emulator)


@pytest.fixture
def operator(
    fault_emulator: KubeEmulator,
    prometheus: PrometheusServer,
    fleet: EmulatedFleet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    from tests.e2e.conftest import start_operator

    assert fault_emulator.kubeconfig_path is not None
    workdir = tmp_path_factory.mktemp("api-faults-operator")
    args = [f"--namespace={namespace}" for namespace in fleet.namespaces]
    running = start_operator(
        fault_emulator.kubeconfig_path, prometheus, workdir, args=args, name="api-faults"
    )
    yield running
    fault_emulator.clear_faults()
    fleet.delete()  # while the operator runs: it removes its finalizer
    time.sleep(1)
    running.stop()


# -- the checks ------------------------------------------------------------------------


def orphans(api_client: client.ApiClient, namespace: str, md: dict[str, Any]) -> list[str]:
    """harness.orphans over the kinds the emulator serves."""
    uid, stray = md["metadata"]["uid"], []
    for kind, listing in EMULATED_KINDS:
        for obj in listing(api_client, namespace):
            labels = obj.metadata.labels or {}
            ours = labels.get("torchrollout.io/deployment") == NAME or obj.metadata.name == NAME
            ours = ours or obj.metadata.name.startswith(f"{NAME}-")
            if ours and uid not in {o.uid for o in obj.metadata.owner_references or []}:
                stray.append(f"{kind}/{obj.metadata.name}")
    return stray


def check_round(
    fleet: EmulatedFleet,
    version: str,
    before: dict[str, str],
    expected: dict[str, dict[str, Any]],
    record: ScenarioRecord,
) -> None:
    """A settled round, read through the API with the faults off, against the fault-free
    outcome; what the operator may still be cleaning up gets CONVERGE_TIMEOUT."""
    record.rollouts += len(fleet.roles)
    for role in fleet.roles:
        md = fleet.get(role)
        namespace = fleet.namespace(role)
        got = outcome(md, version, before[role.name])
        where = f"{role.name} {version}"
        check_outcome(record, where, md, got, expected[role.name])
        promotes = expected[role.name]["stable"] == "new"
        message = md["status"].get("message") or ""
        if not promotes and UNREADY in message:
            # A rollback applied (the canary scaled to 0) whose status write failed is decided
            # again on a new tick, which finds the canary it scaled down not ready.
            record.outcomes[UNREADY_BLAMED] += 1
            record.findings.append(f"{UNREADY_BLAMED}: {where}: {message}")

        def clean(namespace: str = namespace, role: Role = role) -> bool:
            live = fleet.get(role)
            return not orphans(fleet.api_client, namespace, live) and not stray_replicas(
                fleet.api_client, namespace, live
            )

        try:
            eventually(clean, timeout=CONVERGE_TIMEOUT, interval=0.5)
        except AssertionError:
            live = fleet.get(role)
            for stray in orphans(fleet.api_client, namespace, live):
                record.found("orphans", f"{where}: {stray}")
            for running in stray_replicas(fleet.api_client, namespace, live):
                record.found("superseded revisions still running", f"{where}: {running}")


def step_events(api_client: client.ApiClient, namespace: str) -> Counter[tuple[str, str]]:
    """(version, "k/N") -> how often StepAdvanced said the canary entered step k of N."""
    counts: Counter[tuple[str, str]] = Counter()
    for event in client.CoreV1Api(api_client).list_namespaced_event(namespace).items:
        if event.involved_object.kind != "ModelDeployment" or event.reason != "StepAdvanced":
            continue
        found = re.search(r"canary (\S+) at step (\d+/\d+)", event.message or "")
        if found is not None:
            counts[(found.group(1), found.group(2))] += event_count(event)
    return counts


def pending(md: dict[str, Any], reason: str, text: str) -> bool:
    """Whether the status still holds the Event, decided and not yet posted."""
    waiting = (md.get("status") or {}).get("pendingEvents") or []
    return any(p.get("reason") == reason and text in (p.get("message") or "") for p in waiting)


def check_events(
    fleet: EmulatedFleet, rounds: list[str], record: ScenarioRecord
) -> tuple[list[str], list[str]]:
    """Exactly one Promoted (good) or one RollingBack and one RolledBack (bad) Event per
    version, and one StepAdvanced per step of a promoted version (a promotion comes after
    every step's Successful tick). Counted at the end: a late duplicate is seen too.
    Returns the Events missing, not duplicated: those the status still holds as pending
    (late), and the others (lost)."""
    steps = len(fleet.canary.get("steps") or model_deployment("any")["spec"]["canary"]["steps"])
    lost: list[str] = []
    late: list[str] = []
    for role in fleet.roles:
        namespace = fleet.namespace(role)
        counts = transition_events(fleet.api_client, namespace)
        stepped = step_events(fleet.api_client, namespace)
        md = fleet.get(role)
        for version in rounds:
            for reason, where in missing_transitions(record, role, version, FIRST, counts):
                text = TRANSITIONS[reason].format(version=version)
                (late if pending(md, reason, text) else lost).append(where)
            if version == FIRST:
                continue
            for step in range(1, steps + 1):
                seen = stepped[(version, f"{step}/{steps}")]
                where = f"{role.name} {version}: StepAdvanced {step}/{steps} x{seen}"
                if seen > 1:
                    record.found("duplicated events", where)
                elif seen == 0 and role.promotes:
                    text = f"canary {version} at step {step}/{steps}"
                    (late if pending(md, "StepAdvanced", text) else lost).append(where)
    return lost, late


def events_posted(fleet: EmulatedFleet, rounds: list[str]) -> bool:
    """Every transition Event due is there."""
    return check_events(fleet, rounds, ScenarioRecord("", "")) == ([], [])


def traceback_causes(log: Path) -> Counter[str]:
    """The exception each logged traceback (a chain counts once) ended in."""
    causes: Counter[str] = Counter()
    record: list[str] = []
    for line in [*log.read_text(errors="replace").splitlines(), "[end"]:
        if line.startswith("[") and record:
            if any(r.startswith("Traceback (most recent call last)") for r in record):
                last = next(r for r in reversed(record) if r and not r.startswith(" "))
                causes[last.split(":")[0].strip()] += 1
            record = []
        record.append(line)
    return causes


# -- the scenario ----------------------------------------------------------------------


def test_api_faults_at_random_calls_lose_and_repeat_no_transition(
    fault_emulator: KubeEmulator,
    injector: RecordingInjector,
    fleet: EmulatedFleet,
    operator: OperatorProcess,
    chaos_results: Results,
    soak: int,
) -> None:
    """Under 409s on its writes, 5xx answers, slow answers and cut watches at random calls,
    every round ends as without faults: good canaries promoted once after every step,
    bad ones rolled back once (never promoted), one history entry per transition, no
    transition Event twice, weight 0 after every rollback, nothing unowned, no superseded
    revision running, and the operator never dies."""
    record = chaos_results.scenario(
        "api-faults",
        "API errors, slow answers and cut watches (emulator)",
        "4 rollouts at once (2 good, 2 bad canaries) on the API emulator: 409 on status and "
        "child writes, 5xx/429 at random calls, slow answers 0.2-1 s, watches refused or cut "
        "after 1.5-6 s",
    )
    started = time.monotonic()
    faults = Faults(fault_emulator, injector)
    rounds: list[str] = []
    lost_events: list[str] = []  # not posted, and not pending either: a failure
    late_events: list[str] = []  # still pending in the status
    try:
        fleet.apply(FIRST, first=True)
        fleet.wait_settled(FIRST, SETTLE_TIMEOUT)
        deployed = {r.name: expected_outcome(Role(r.name, r.rates, True)) for r in fleet.roles}
        check_round(fleet, FIRST, dict.fromkeys(deployed, ""), deployed, record)

        # A round without faults: what every later round must equal.
        before = fleet.apply(FREE)
        fleet.wait_settled(FREE, SETTLE_TIMEOUT)
        free = {r.name: outcome(fleet.get(r), FREE, before[r.name]) for r in fleet.roles}
        designed = {role.name: expected_outcome(role) for role in fleet.roles}
        assert free == designed, "the fault-free round is not what the design says"
        check_round(fleet, FREE, before, free, record)
        rounds.append(FREE)
        record.outcomes["fault-free round s"] = round(time.monotonic() - started)

        for number in range(3, 3 + ROUNDS * soak):
            version = f"{number}.0.0"
            faults.on()
            began = time.monotonic()
            try:
                before = fleet.apply(version)
                fleet.wait_settled(version, SETTLE_TIMEOUT)
                took = round(time.monotonic() - began)
                slowest = record.outcomes["slowest faulty round s"]
                record.outcomes["slowest faulty round s"] = max(slowest, took)
            finally:
                faults.off()
            rounds.append(version)
            check_round(fleet, version, before, free, record)

        with contextlib.suppress(AssertionError):  # counted and reported below
            eventually(
                lambda: events_posted(fleet, [FIRST, *rounds]), timeout=EVENTS_WAIT, interval=1
            )
        time.sleep(1)  # a duplicate would follow within a tick
        lost_events, late_events = check_events(fleet, [FIRST, *rounds], record)
    finally:
        fired = Counter(f.fault for f in injector.fired)
        record.injected = sum(fired.values())
        record.by_phase.update(f.phase for f in injector.fired)
        for fault, count in fired.items():
            record.outcomes[f"fired: {fault}"] = count
        record.outcomes["fired on the operator's status writes"] = sum(
            f.path.endswith("/status") and f.method in {"PATCH", "PUT"} for f in injector.fired
        )
        record.outcomes["fired on Event posts"] = sum(
            f.path.endswith("/events") and f.method == "POST" for f in injector.fired
        )
        record.outcomes["faulty rounds"] = max(0, len(rounds) - 1)
        record.outcomes["kubectl apply retried"] = fleet.apply_retries
        process = operator.process
        if process is not None and process.poll() is not None:
            record.found("operator crashes (not our kills)", f"exit {process.returncode}")
        record.outcomes["tracebacks in the operator log"] = traceback_count(operator.log)
        for cause, count in traceback_causes(operator.log).items():
            record.findings.append(f"traceback in the operator log: {cause} x{count}")
        record.outcomes[UNREADY_BLAMED] += 0  # listed when none, too
        record.outcomes["lost events"] += 0
        for where in lost_events:
            record.found("lost events", where)
        record.outcomes[LATE] += 0
        for where in late_events:
            record.found(LATE, where)
        record.seconds = round(time.monotonic() - started, 1)
        KEPT_LOG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(operator.log, KEPT_LOG)  # evidence for what the record says

    problems = [f for f in record.findings if not f.startswith(UNREADY_BLAMED)]
    assert not problems, "\n".join(problems)
    assert not traceback_causes(operator.log), f"tracebacks in {KEPT_LOG}"
    record.passed = True
