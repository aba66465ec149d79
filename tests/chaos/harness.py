"""What the chaos scenarios share: a fleet of ModelDeployments rolled out together, a killer
that SIGKILLs an operator at random moments, the checks a rollout's end state must pass,
and the record of what was injected and found.

Everything is read back through the API as a user would: status, Events (with their
`count` and `series`), the owned objects. Nothing here reaches into the operator.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client

from tests.e2e.conftest import (
    BAD,
    GOOD,
    OWN_OPERATOR_PREFIX,
    ROOT,
    OperatorProcess,
    create_namespace,
    dump,
    get_md,
    model_deployment,
    play,
)
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter, Rates

RESULTS_PATH = ROOT / ".work" / "chaos-results.json"
NAME = "fraud"
# The e2e suite's fast policy (3 s ticks, steps [20, 60], failureLimit 2) with a longer
# progress deadline: an operator dead most of the time must not make "slow to look" into
# "canary not ready".
FAST_CANARY: dict[str, Any] = {"progressDeadlineSeconds": 90}
# Phases that last about a second: the killer aims at them when it sees them.
SHORT_PHASES = frozenset({"promoting", "rolling back"})
TERMINAL = frozenset({"Succeeded", "RolledBack", "Failed", "Paused"})
# The Events that announce a transition, and how their message names the version.
TRANSITIONS = {
    "Deployed": "version {version} serves all traffic",
    "Promoted": "version {version} promoted",
    "RollingBack": "rolling back {version}:",
    "RolledBack": "rolled back {version}:",
}
# Every object kind the operator renders beside its Deployments, and how to list it.
OWNED_KINDS: tuple[tuple[str, Callable[[client.ApiClient, str], list[Any]]], ...] = (
    ("Deployment", lambda c, ns: client.AppsV1Api(c).list_namespaced_deployment(ns).items),
    ("Service", lambda c, ns: client.CoreV1Api(c).list_namespaced_service(ns).items),
    ("ConfigMap", lambda c, ns: client.CoreV1Api(c).list_namespaced_config_map(ns).items),
    (
        "PodDisruptionBudget",
        lambda c, ns: client.PolicyV1Api(c).list_namespaced_pod_disruption_budget(ns).items,
    ),
    (
        "HorizontalPodAutoscaler",
        lambda c, ns: (
            client.AutoscalingV2Api(c).list_namespaced_horizontal_pod_autoscaler(ns).items
        ),
    ),
    (
        "NetworkPolicy",
        lambda c, ns: client.NetworkingV1Api(c).list_namespaced_network_policy(ns).items,
    ),
    ("Job", lambda c, ns: client.BatchV1Api(c).list_namespaced_job(ns).items),
)


# -- the record ------------------------------------------------------------------------


@dataclass
class ScenarioRecord:
    """One scenario: the faults it injected (per phase they hit) and what it found."""

    fault: str
    description: str
    injected: int = 0
    by_phase: Counter[str] = field(default_factory=Counter)
    rollouts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    passed: bool = False

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self)  # asdict turns a Counter's items into keys: take them as they are
        return {**fields, "by_phase": dict(self.by_phase), "outcomes": dict(self.outcomes)}

    def found(self, counter: str, detail: str) -> None:
        self.outcomes[counter] += 1
        self.findings.append(f"{counter}: {detail}")


@dataclass
class Results:
    """Every scenario of the session, by name; the file holds the last session's only."""

    scenarios: dict[str, ScenarioRecord] = field(default_factory=dict)

    def scenario(self, name: str, fault: str, description: str) -> ScenarioRecord:
        self.scenarios[name] = ScenarioRecord(fault, description)
        return self.scenarios[name]

    def write(self, path: Path) -> None:
        if not self.scenarios:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        written = {name: record.as_json() for name, record in self.scenarios.items()}
        path.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")


# -- reading the cluster ---------------------------------------------------------------


def phase_label(md: dict[str, Any]) -> str:
    """Where a rollout stands, in the words of the lifecycle (for faults per phase)."""
    status = md.get("status") or {}
    phase = status.get("phase")
    wanted = md["spec"]["model"]["version"]
    if phase in {None, "Pending", "Building"} and not status.get("history"):
        return "first deploy"
    if phase == "Progressing":
        step = status.get("stepIndex")
        return "waiting for canary ready" if step is None else f"analysing step {step + 1}"
    if phase == "Promoting":
        return "promoting"
    if phase == "RollingBack":
        return "rolling back"
    if phase in {"Succeeded", "RolledBack"}:
        seen = {status.get("stableVersion"), status.get("canaryVersion")}
        history = status.get("history") or [{}]
        if wanted not in seen and history[-1].get("version") != wanted:
            return "new version not yet picked up"
        return "settled"
    return str(phase)


def analysing(fleet: Fleet, role: Role | None = None) -> bool:
    """Every canary of the fleet (or `role`'s) is mid-analysis (at any step: each stays one
    3 s tick at a step, so under load two canaries seldom share step 1)."""
    roles = fleet.roles if role is None else (role,)
    return all(phase_label(fleet.get(r)).startswith("analysing step") for r in roles)


def event_count(event: Any) -> int:
    """How many times an Event happened: its `count`, or its series' count when aggregated."""
    series = event.series.count if event.series is not None and event.series.count else 0
    return max(event.count or 1, series)


def transition_events(api_client: client.ApiClient, namespace: str) -> Counter[tuple[str, str]]:
    """(reason, version) -> how often a transition Event was posted about the resource."""
    counts: Counter[tuple[str, str]] = Counter()
    for event in client.CoreV1Api(api_client).list_namespaced_event(namespace).items:
        if event.involved_object.kind != "ModelDeployment" or event.reason not in TRANSITIONS:
            continue
        message = event.message or ""
        words = message.split()
        for word in words:
            version = word.rstrip(":")
            if TRANSITIONS[event.reason].format(version=version) in message:
                counts[(event.reason, version)] += event_count(event)
                break
    return counts


def orphans(api_client: client.ApiClient, namespace: str, md: dict[str, Any]) -> list[str]:
    """Objects of the resource (by label or name) that the live resource does not own."""
    uid = md["metadata"]["uid"]
    stray = []
    for kind, listing in OWNED_KINDS:
        for obj in listing(api_client, namespace):
            labels = obj.metadata.labels or {}
            ours = labels.get("torchrollout.io/deployment") == NAME or obj.metadata.name == NAME
            ours = ours or obj.metadata.name.startswith(f"{NAME}-")
            owners = {o.uid for o in obj.metadata.owner_references or []}
            if ours and uid not in owners:
                stray.append(f"{kind}/{obj.metadata.name}")
    return stray


def stray_replicas(api_client: client.ApiClient, namespace: str, md: dict[str, Any]) -> list[str]:
    """Deployments that still ask for pods though the status names them neither stable nor
    kept warm: a superseded or rolled-back canary must be scaled to zero or deleted."""
    status = md.get("status") or {}
    keep = {status.get("stableRevision"), (status.get("warmRevision") or {}).get("revision")}
    running = []
    for deployment in client.AppsV1Api(api_client).list_namespaced_deployment(namespace).items:
        revision = deployment.metadata.name.removeprefix(f"{NAME}-")
        if revision not in keep and deployment.spec.replicas:
            running.append(f"{deployment.metadata.name} ({deployment.spec.replicas} replicas)")
    return running


def traceback_count(log: Path) -> int:
    return log.read_text(errors="replace").count("Traceback (most recent call last)")


# -- the fleet -------------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    """One ModelDeployment of the fleet, and what every new version it gets serves."""

    name: str
    rates: Rates
    promotes: bool
    replicas: int = 1


# Good canaries run 3 replicas: at 60% the canary has 2, so promoting scales it up before
# the switch. Promoting and rolling back still settle within one reconcile on kwok's pods,
# so the killer seldom sees them in status; it aims at them when it does.
FLEET = (
    Role("good-a", GOOD, promotes=True, replicas=3),
    Role("good-b", GOOD, promotes=True, replicas=3),
    Role("bad-a", BAD, promotes=False),
    Role("bad-b", BAD, promotes=False),
)


def outcome(md: dict[str, Any], version: str, previous_stable: str) -> dict[str, Any]:
    """A settled rollout of `version`, in terms that do not depend on the version's name."""
    status = md.get("status") or {}
    names = {version: "new", previous_stable: "previous"}
    stable, canary = status.get("stableVersion"), status.get("canaryVersion")
    entries = [h for h in status.get("history", []) if h.get("version") == version]
    return {
        "phase": status.get("phase"),
        "stable": names.get(stable, stable),
        "canaryVersion": names.get(canary, canary) if canary else None,
        "canaryWeight": status.get("canaryWeight"),
        "history": ["promoted" if h.get("promotedAt") else "rolledBack" for h in entries],
    }


def expected_outcome(role: Role) -> dict[str, Any]:
    """What a fault-free run gives: a good canary is promoted, a bad one rolled back (and
    the status still names it as the canary that was rolled back)."""
    return {
        "phase": "Succeeded" if role.promotes else "RolledBack",
        "stable": "new" if role.promotes else "previous",
        "canaryVersion": None if role.promotes else "new",
        "canaryWeight": 0,
        "history": ["promoted" if role.promotes else "rolledBack"],
    }


def missing_transitions(
    record: ScenarioRecord, role: Role, version: str, first: str, counts: Counter[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The transition Events of one round of `role` against what it posts once each (Deployed
    for the `first` version, Promoted for a good canary, RollingBack and RolledBack for a bad
    one): a repeat is recorded; returns (reason, where) of each one missing."""
    wanted = {"Promoted"} if role.promotes else {"RollingBack", "RolledBack"}
    if version == first:
        wanted = {"Deployed"}
    missing = []
    for reason in TRANSITIONS:
        seen = counts[(reason, version)]
        where = f"{role.name} {version}: {reason} x{seen}"
        if seen > (reason in wanted):
            record.found("duplicated events", where)
        elif seen < (reason in wanted):
            missing.append((reason, where))
    return missing


def check_outcome(
    record: ScenarioRecord,
    where: str,
    md: dict[str, Any],
    got: dict[str, Any],
    want: dict[str, Any],
) -> None:
    """A settled rollout (`got`, from `outcome`) against the fault-free one (`want`): the same
    outcome, a bad canary never promoted, one history entry for the version and no version
    twice in history, weight 0."""
    if got != want:
        said = (md.get("status") or {}).get("message")
        record.found("wrong outcomes", f"{where}: {got} != {want} ({said})")
    if want["stable"] != "new" and (got["stable"] == "new" or "promoted" in got["history"]):
        record.found("wrong promotions", f"{where} (a bad canary) was promoted")
    if not got["history"]:
        record.found("lost transitions", f"{where}: no history entry")
    if len(got["history"]) > 1:
        record.found("duplicated transitions", f"{where}: history {got['history']}")
    versions = Counter(h["version"] for h in (md.get("status") or {}).get("history", []))
    for repeated in sorted(v for v, n in versions.items() if n > 1):
        record.found("duplicated transitions", f"{where}: {repeated} twice in history")
    if got["canaryWeight"] != 0:
        record.found("weight not 0 when settled", f"{where}: {got['canaryWeight']}")


@dataclass
class Fleet:
    """Several ModelDeployments, one per `own-op-*` namespace, rolled out at once."""

    api_client: client.ApiClient
    kubectl: Kubectl
    exporter: Exporter
    roles: tuple[Role, ...] = FLEET
    canary: dict[str, Any] = field(default_factory=lambda: dict(FAST_CANARY))
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def __post_init__(self) -> None:
        self.md_api = client.CustomObjectsApi(self.api_client)
        for role in self.roles:
            create_namespace(self.api_client, self.namespace(role))

    def namespace(self, role: Role) -> str:
        return f"{OWN_OPERATOR_PREFIX}{self.run}-{role.name}"

    @property
    def namespaces(self) -> list[str]:
        return [self.namespace(role) for role in self.roles]

    def get(self, role: Role) -> dict[str, Any]:
        return get_md(self.md_api, self.namespace(role), NAME)

    def apply(self, version: str, *, first: bool = False) -> dict[str, str]:
        """Every resource gets `version` (a first deploy serves GOOD everywhere); returns
        each role's stable version before."""
        before = {}
        for role in self.roles:
            namespace = self.namespace(role)
            before[role.name] = "" if first else self.get(role)["status"]["stableVersion"]
            runtime = {"replicas": role.replicas}
            body = model_deployment(namespace, version, canary=self.canary, runtime=runtime)
            play(self.exporter, namespace, body, GOOD if first else role.rates)
            self.kubectl.apply(dump(body))
        return before

    def settled(self, role: Role, version: str) -> bool:
        try:
            status = self.get(role).get("status") or {}
        except (client.ApiException, urllib3.exceptions.HTTPError):
            return False  # an API server just restarted may answer 429 or reset a connection
        if status.get("phase") not in TERMINAL:
            return False
        history = status.get("history") or [{}]
        return status.get("stableVersion") == version or history[-1].get("version") == version

    def wait_settled(self, version: str, timeout: float) -> None:
        def every() -> bool:
            return all(self.settled(role, version) for role in self.roles)

        try:
            eventually(every, timeout=timeout, interval=0.25)
        except AssertionError:
            statuses = {r.name: (self.get(r).get("status") or {}) for r in self.roles}
            short = {
                n: {k: s.get(k) for k in ("phase", "stableVersion", "canaryVersion", "message")}
                for n, s in statuses.items()
            }
            raise AssertionError(f"not settled on {version} in {timeout:.0f} s: {short}") from None

    def delete(self) -> None:
        for namespace in self.namespaces:
            self.md_api.delete_namespaced_custom_object(
                "torchrollout.io", "v1alpha1", namespace, "modeldeployments", NAME
            )

    def remove_namespaces(self) -> None:
        core = client.CoreV1Api(self.api_client)
        for namespace in self.namespaces:
            core.delete_namespace(namespace)


# -- the killer ------------------------------------------------------------------------


@dataclass
class Killer:
    """A thread that SIGKILLs `operator` a uniform random 0.2-2.0 s after it is ready, notes
    the phase of every resource at that moment, and starts it again.

    Promoting and rolling back last about a second, too short for random moments to hit
    often: when a resource is seen entering one of those phases (`phases` is polled while
    the killer waits), the kill comes then instead, once per resource, version and phase.
    """

    operator: OperatorProcess
    phases: Callable[[], dict[str, str]]  # resource and version -> phase_label
    rng: random.Random
    delay: tuple[float, float] = (0.2, 2.0)
    poll: float = 0.25
    kills: int = 0
    targeted: int = 0
    by_phase: Counter[str] = field(default_factory=Counter)
    unexpected_exits: list[str] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    kill_times: list[float] = field(default_factory=list)  # wall clock, to compare with status
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._active = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._hit: set[tuple[str, str]] = set()
        self._thread = threading.Thread(target=self._run, name="operator-killer", daemon=True)

    def start(self) -> None:
        self._active.set()
        self._thread.start()

    def pause(self) -> None:
        """Stop killing; returns once the operator runs (a kill in flight is finished)."""
        self._active.clear()
        self._idle.wait(timeout=60)
        self.check()

    def resume(self) -> None:
        self._active.set()

    def stop(self) -> None:
        self._stop.set()
        self._active.set()
        self._thread.join(timeout=60)

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the killer failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._active.wait()
                seen = self._wait()
                if seen is None or not self._active.is_set():
                    continue
                self._idle.clear()
                try:
                    self._kill_and_restart(seen)
                finally:
                    self._idle.set()
        except BaseException as error:
            self.error = error

    def _read(self) -> dict[str, str]:
        try:
            return self.phases()
        except Exception:  # the API was slow to answer: the kill still counts
            return {"?": "unknown (status not read)"}

    def _wait(self) -> dict[str, str] | None:
        """Wait out a random delay, or less when a short phase shows up; None when stopped."""
        deadline = time.monotonic() + self.rng.uniform(*self.delay)
        minimum = time.monotonic() + self.delay[0]
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(self.poll, left)):
                return None
            if time.monotonic() < minimum:
                continue
            seen = self._read()
            fresh = {(k, v) for k, v in seen.items() if v in SHORT_PHASES} - self._hit
            if fresh:
                self._hit |= fresh
                self.targeted += 1
                return seen
        return None if self._stop.is_set() else self._read()

    def _kill_and_restart(self, seen: dict[str, str]) -> None:
        process = self.operator.process
        if process is not None and process.poll() is not None:
            self.unexpected_exits.append(f"exited with {process.returncode} before kill")
        self.kill_times.append(time.time())
        self.operator.kill()
        self.kills += 1
        self.by_phase.update(seen.values())
        started = time.monotonic()
        self.operator.start()
        self.restart_seconds.append(time.monotonic() - started)
