"""SIGKILL the operator at random moments while four rollouts run at once (200 times in a
CI run, 800 in a `--soak 4` run), and prove that what users see at the end is what a
fault-free run gives.

The design's restart contract: all state lives in `status`, so an operator killed at any
moment resumes where it was and never promotes or rolls back twice. Here two good and two
bad canaries roll out together, round after round (a new version each round), while a
killer thread kills the operator 0.2-2.0 s after each start: during the first deploy, while
a canary becomes ready, mid-analysis, while promoting and while rolling back.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.chaos.harness import (
    RESULTS_PATH,
    Fleet,
    Killer,
    Results,
    Role,
    ScenarioRecord,
    check_outcome,
    expected_outcome,
    missing_transitions,
    orphans,
    outcome,
    phase_label,
    stray_replicas,
    traceback_count,
    transition_events,
)
from tests.e2e.conftest import OperatorProcess
from tests.kube_emulator.fixtures import Kubectl
from tests.support.exporter import Exporter

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(1500)]

# Kills: rounds go on until KILLS, or until the rounds have had BUDGET seconds once at least
# FLOOR kills are in. A kill costs 2.8-5.6 s on 2 shared cores (measured: the operator's
# restart is 1.3-3.9 s of it, by the load), so the 200 kills of a CI run take 9-19 minutes;
# `pytest tests/chaos --soak 4` (all three times 4) makes 800.
KILLS, FLOOR, BUDGET = 200, 200, 600.0
SETTLE_TIMEOUT = 120.0  # one round under kills; a fault-free round takes about 12 s
SEED = 20261130
FIRST = "1.0.0"
KEPT_LOG = RESULTS_PATH.parent / "chaos-operator-sigkill.log"


@pytest.fixture
def fleet(api_client: client.ApiClient, kubectl: Kubectl, exporter: Exporter) -> Iterator[Fleet]:
    made = Fleet(api_client, kubectl, exporter)
    yield made
    made.remove_namespaces()


def check_round(
    fleet: Fleet,
    version: str,
    before: dict[str, str],
    expected: dict[str, dict[str, Any]],
    record: ScenarioRecord,
) -> None:
    """A settled round against the fault-free outcome, and the invariants in between."""
    record.rollouts += len(fleet.roles)
    for role in fleet.roles:
        md = fleet.get(role)
        namespace = fleet.namespace(role)
        got = outcome(md, version, before[role.name])
        check_outcome(record, f"{role.name} {version}", md, got, expected[role.name])
        for stray in orphans(fleet.api_client, namespace, md):
            record.found("orphans", f"{role.name}: {stray}")
        for running in stray_replicas(fleet.api_client, namespace, md):
            record.found("superseded revisions still running", f"{role.name}: {running}")


def check_events(
    fleet: Fleet, rounds: list[str], record: ScenarioRecord, kills: list[float]
) -> list[str]:
    """Exactly one Promoted (good) or one RollingBack and one RolledBack (bad) Event per
    version: counted at the end, so that a late duplicate would be seen too. Returns the
    Events never posted, each with how long after its transition's decision a kill came."""
    lost = []
    for role in fleet.roles:
        counts = transition_events(fleet.api_client, fleet.namespace(role))
        history = fleet.get(role)["status"].get("history", [])
        for version in rounds:
            for _, where in missing_transitions(record, role, version, FIRST, counts):
                lost.append(f"{where}{kill_after(history, version, kills)}")
    return lost


def kill_after(history: list[dict[str, Any]], version: str, kills: list[float]) -> str:
    """The first kill from the second the status names as the decision's (it has no finer
    resolution): the kill that most likely came between the status write and the Event."""
    entry = next((h for h in history if h.get("version") == version), {})
    decided = entry.get("promotedAt") or entry.get("rolledBackAt")
    if decided is None:
        return ""
    at = datetime.fromisoformat(decided)
    after = [kill for kill in kills if kill >= at.timestamp()]
    if not after:
        return f" (decided at {decided}, no kill after)"
    killed = datetime.fromtimestamp(min(after), tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    return f" (decided at {decided}, killed at {killed})"


def roll(
    fleet: Fleet,
    version: str,
    expected: dict[str, dict[str, Any]],
    record: ScenarioRecord,
    killer: Killer,
) -> None:
    before = fleet.apply(version)
    fleet.wait_settled(version, SETTLE_TIMEOUT)
    killer.check()
    check_round(fleet, version, before, expected, record)


def test_sigkilled_operator_loses_and_repeats_no_transition(
    fleet: Fleet,
    operator: OperatorProcess,
    chaos_results: Results,
    soak: int,
    kubeconfig: Path,
) -> None:
    """Under a SIGKILL every few seconds, every round ends as without faults: the good canaries
    promoted once, the bad ones rolled back once (never promoted), one history entry and
    one Event per transition, weight 0 after every rollback, nothing left unowned and no
    superseded revision still running; the operator never dies on its own."""
    record = chaos_results.scenario(
        "operator-sigkill",
        "operator SIGKILL",
        "4 rollouts at once (2 good, 2 bad canaries), killed 0.2-2.0 s after each start",
    )
    started = time.monotonic()
    watcher = config.new_client_from_config(config_file=str(kubeconfig))
    md_api = client.CustomObjectsApi(watcher)

    namespaces = set(fleet.namespaces)

    def phases() -> dict[str, str]:
        listed = md_api.list_cluster_custom_object(
            "torchrollout.io", "v1alpha1", "modeldeployments", _request_timeout=2
        )
        return {
            f"{md['metadata']['namespace']} {md['spec']['model']['version']}": phase_label(md)
            for md in listed["items"]
            if md["metadata"]["namespace"] in namespaces
        }

    killer = Killer(operator, phases, random.Random(SEED))
    target, budget = KILLS * soak, BUDGET * soak
    rounds: list[str] = []
    lost_events: list[str] = []
    try:
        # The first deploy, under kills: every resource serves 1.0.0, deployed once.
        killer.start()
        fleet.apply(FIRST, first=True)
        fleet.wait_settled(FIRST, SETTLE_TIMEOUT)
        deployed = {r.name: expected_outcome(Role(r.name, r.rates, True)) for r in fleet.roles}
        check_round(fleet, FIRST, dict.fromkeys(deployed, ""), deployed, record)

        # A round without faults: what every later round must equal.
        killer.pause()
        before = fleet.apply("2.0.0")
        fleet.wait_settled("2.0.0", SETTLE_TIMEOUT)
        free = {r.name: outcome(fleet.get(r), "2.0.0", before[r.name]) for r in fleet.roles}
        designed = {role.name: expected_outcome(role) for role in fleet.roles}
        assert free == designed, "the fault-free round is not what the design says"
        check_round(fleet, "2.0.0", before, free, record)
        rounds.append("2.0.0")

        killer.resume()
        number = 3
        rounds_started = time.monotonic()

        def more() -> bool:
            spent = time.monotonic() - rounds_started
            return killer.kills < target and (killer.kills < FLOOR * soak or spent < budget)

        while more():
            version = f"{number}.0.0"
            roll(fleet, version, free, record, killer)
            rounds.append(version)
            number += 1
        killer.pause()
        lost_events = check_events(fleet, [FIRST, *rounds], record, killer.kill_times)
    finally:
        killer.stop()
        watcher.close()
        record.injected = killer.kills
        record.outcomes["kills aimed at a short phase"] = killer.targeted
        record.by_phase.update(killer.by_phase)
        for exit_ in killer.unexpected_exits:
            record.found("operator crashes (not our kills)", exit_)
        record.outcomes["tracebacks in the operator log"] = traceback_count(operator.log)
        record.outcomes["rounds"] = len(rounds) + 1
        if killer.restart_seconds:
            restart = sum(killer.restart_seconds) / len(killer.restart_seconds)
            record.outcomes["mean restart ms"] = round(1000 * restart)
        for where in lost_events:
            record.found("lost events", where)
        record.seconds = round(time.monotonic() - started, 1)
        KEPT_LOG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(operator.log, KEPT_LOG)  # evidence for what the record says

    assert not record.findings, "\n".join(record.findings)
    assert record.outcomes["tracebacks in the operator log"] == 0, operator.log
    record.passed = True
