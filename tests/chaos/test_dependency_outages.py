"""The operator's dependencies fail mid-canary: the Kubernetes API server restarts, and
Prometheus goes away and comes back. Each scenario runs an operator of its own in
`own-op-*` namespaces, and proves that the rollouts end as they would without the fault.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.chaos.harness import (
    FAST_CANARY,
    TRANSITIONS,
    Fleet,
    Results,
    Role,
    ScenarioRecord,
    analysing,
    expected_outcome,
    outcome,
    phase_label,
    traceback_count,
    transition_events,
)
from tests.e2e.conftest import (
    BAD,
    GOOD,
    OPERATOR_NAMESPACE,
    OperatorProcess,
    model_deployment,
    start_operator,
)
from tests.kube_cluster.cluster import ControlPlane
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter
from torchrollout.local.prometheus import PrometheusServer, ScrapeTarget

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(240)]

GOOD_ROLE, BAD_ROLE = Role("good", GOOD, promotes=True), Role("bad", BAD, promotes=False)
FIRST, NEXT = "1.0.0", "2.0.0"


def start_own_operator(
    kube_cluster: ControlPlane,
    installed: str,
    prometheus: PrometheusServer,
    fleet: Fleet,
    workdir: Any,
) -> OperatorProcess:
    token = kube_cluster.token_kubeconfig(installed, OPERATOR_NAMESPACE, workdir / "kubeconfig")
    args = [f"--namespace={namespace}" for namespace in fleet.namespaces]
    return start_operator(token, prometheus, workdir, args=args, name="operator")


@pytest.fixture
def run_fleet(
    api_client: client.ApiClient, kubectl: Kubectl, exporter: Exporter
) -> Iterator[list[Fleet]]:
    """Fleets the test makes; their namespaces go when it ends."""
    made: list[Fleet] = []
    yield made
    for fleet in made:
        fleet.remove_namespaces()


def check_outcomes(fleet: Fleet, before: dict[str, str], record: ScenarioRecord) -> None:
    """Each rollout ended as without the fault, with one Event per transition."""
    for role in fleet.roles:
        got = outcome(fleet.get(role), NEXT, before[role.name])
        if got != expected_outcome(role):
            record.found("wrong outcomes", f"{role.name}: {got}")
        if not role.promotes and got["stable"] == "new":
            record.found("wrong promotions", f"{role.name} (a bad canary) was promoted")
        wanted = {"Promoted"} if role.promotes else {"RollingBack", "RolledBack"}

        def posted(namespace: str = fleet.namespace(role), reasons: set[str] = wanted) -> bool:
            counts = transition_events(fleet.api_client, namespace)
            return all(counts[(reason, NEXT)] for reason in reasons)

        eventually(posted, timeout=10)
        time.sleep(1)  # a duplicate would follow within a tick
        counts = transition_events(fleet.api_client, fleet.namespace(role))
        for reason in TRANSITIONS:
            seen, due = counts[(reason, NEXT)], int(reason in wanted)
            if seen != due:
                kind = "duplicated events" if seen > due else "lost events"
                record.found(kind, f"{role.name}: {reason} x{seen}")
        record.rollouts += 1


def finish(record: ScenarioRecord, operator: OperatorProcess, started: float) -> None:
    if operator.process is not None and operator.process.poll() is not None:
        record.found("operator crashes (not our kills)", f"exit {operator.process.returncode}")
    record.outcomes["tracebacks in the operator log"] = traceback_count(operator.log)
    record.seconds = round(time.monotonic() - started, 1)


def test_an_api_server_restart_mid_canary_changes_no_outcome(
    kube_cluster: ControlPlane,
    installed: str,
    prometheus: PrometheusServer,
    api_client: client.ApiClient,
    kubectl: Kubectl,
    exporter: Exporter,
    run_fleet: list[Fleet],
    chaos_results: Results,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The kube-apiserver is stopped and started again while a good and a bad canary are
    being analysed: the operator keeps running, reconnects, promotes the good one and rolls
    back the bad one, each once."""
    record = chaos_results.scenario(
        "apiserver-restart",
        "kube-apiserver restart",
        "the API server stopped and started mid-analysis of a good and a bad canary",
    )
    started = time.monotonic()
    fleet = Fleet(api_client, kubectl, exporter, roles=(GOOD_ROLE, BAD_ROLE))
    run_fleet.append(fleet)
    workdir = tmp_path_factory.mktemp("chaos-apiserver")
    operator = start_own_operator(kube_cluster, installed, prometheus, fleet, workdir)
    try:
        fleet.apply(FIRST, first=True)
        fleet.wait_settled(FIRST, 60)
        before = fleet.apply(NEXT)
        eventually(lambda: analysing(fleet), timeout=30, interval=0.1)
        record.by_phase.update(phase_label(fleet.get(role)) for role in fleet.roles)
        down = time.monotonic()
        kube_cluster.restart("kube-apiserver")
        record.injected += 1
        record.outcomes["API server outage ms"] = round(1000 * (time.monotonic() - down))
        fleet.wait_settled(NEXT, 120)
        check_outcomes(fleet, before, record)
        fleet.delete()
        time.sleep(1)
    finally:
        finish(record, operator, started)
        operator.stop()
    assert not record.findings, "\n".join(record.findings)
    record.passed = True


def test_a_prometheus_outage_mid_analysis_gives_error_ticks_not_failures(
    kube_cluster: ControlPlane,
    installed: str,
    api_client: client.ApiClient,
    kubectl: Kubectl,
    exporter: Exporter,
    run_fleet: list[Fleet],
    chaos_results: Results,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prometheus stops while a good canary is analysed: the ticks say Error (the backend is
    unreachable), never Failed, so the model is not blamed; when Prometheus is back on the
    same address the analysis resumes and the canary is promoted once."""
    record = chaos_results.scenario(
        "prometheus-outage",
        "Prometheus stopped and restarted",
        "Prometheus down for 2 analysis ticks mid-analysis of a good canary",
    )
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("chaos-prometheus")
    target = ScrapeTarget(exporter.address, honor_labels=True)
    with PrometheusServer([target], workdir=workdir / "prometheus") as own:
        own.wait_for_targets()
        analysis = model_deployment("any")["spec"]["canary"]["analysis"]
        canary = dict(FAST_CANARY)
        canary["analysis"] = {**analysis, "consecutiveErrorLimit": 10}
        fleet = Fleet(api_client, kubectl, exporter, roles=(GOOD_ROLE,), canary=canary)
        run_fleet.append(fleet)
        operator = start_own_operator(kube_cluster, installed, own, fleet, workdir)
        try:
            fleet.apply(FIRST, first=True)
            fleet.wait_settled(FIRST, 60)
            before = fleet.apply(NEXT)
            eventually(lambda: analysing(fleet), timeout=30, interval=0.1)
            record.by_phase.update(phase_label(fleet.get(role)) for role in fleet.roles)
            port = own.port
            own.stop()
            record.injected += 1
            seen: dict[str, int] = {"errors": 0, "failed": 0}

            def error_ticks() -> bool:
                tick = fleet.get(GOOD_ROLE)["status"].get("analysis") or {}
                seen["errors"] = max(seen["errors"], tick.get("consecutiveErrors", 0))
                seen["failed"] = max(seen["failed"], tick.get("failed", 0))
                verdicts = {check["verdict"] for check in tick.get("checks", [])}
                assert "Failed" not in verdicts, tick
                return seen["errors"] >= 2 and verdicts == {"Error"}

            eventually(error_ticks, timeout=30, interval=0.2)
            record.outcomes["Error ticks seen during the outage"] = seen["errors"]
            if seen["failed"]:
                record.found("Failed ticks during the outage", f"{seen['failed']} failed")
            # The same address again, as a restarted Prometheus Service would have.
            monkeypatch.setattr("torchrollout.local.prometheus.free_port", lambda: port)
            own.start()
            own.wait_for_targets()
            fleet.wait_settled(NEXT, 90)
            check_outcomes(fleet, before, record)
            fleet.delete()
            time.sleep(1)
        finally:
            finish(record, operator, started)
            operator.stop()
    assert not record.findings, "\n".join(record.findings)
    record.passed = True
