"""The chaos suite runs on the e2e suite's fixtures: the real control plane, the chart
installed, a Prometheus scraping the exporter. Each scenario runs operators of its own in
`own-op-*` namespaces, so an e2e session operator (when both suites share a run) leaves
them alone.

`pytest tests/chaos --soak N` multiplies the operator-kill scenario's kills (and its time
limit) by N; the option exists when the run names tests/chaos, whose conftest adds it. At
the end of the session what every scenario injected and what it found is written to
`.work/chaos-results.json`; `python -m tests.chaos.report` renders docs/reliability.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.chaos.harness import RESULTS_PATH, Fleet, Results
from tests.e2e.conftest import *  # noqa: F403
from tests.e2e.conftest import OPERATOR_NAMESPACE, OperatorProcess, start_operator
from tests.kube_cluster.cluster import ControlPlane
from torchrollout.local.prometheus import PrometheusServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        type=int,
        default=1,
        metavar="N",
        help="chaos suite: N times the operator kills of a CI run (tests/chaos)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A soak run gets its time: each chaos test's limit times N."""
    factor = int(config.getoption("--soak", 1))
    for item in items:
        limit = item.get_closest_marker("timeout")
        if factor > 1 and item.get_closest_marker("chaos") and limit is not None:
            item.add_marker(pytest.mark.timeout(limit.args[0] * factor))


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> int:
    factor = int(request.config.getoption("--soak"))
    assert factor >= 1, "--soak takes a whole number, 1 or more"
    return factor


@pytest.fixture(scope="session")
def chaos_results() -> Iterator[Results]:
    """Every scenario records into this; written as JSON when the session ends."""
    results = Results()
    yield results
    results.write(RESULTS_PATH)


@pytest.fixture
def operator(
    request: pytest.FixtureRequest,
    kube_cluster: ControlPlane,
    installed: str,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator as the chart's ServiceAccount, watching the namespaces of the scenario's
    `fleet` (a fixture of its module) only; the fleet is deleted while it still runs."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    workdir = tmp_path_factory.mktemp(f"chaos-{name}")
    token = kube_cluster.token_kubeconfig(installed, OPERATOR_NAMESPACE, workdir / "kubeconfig")
    args = [f"--namespace={namespace}" for namespace in fleet.namespaces]
    running = start_operator(token, prometheus, workdir, args=args, name=f"chaos-{name}")
    yield running
    fleet.delete()  # while the operator runs: it removes its finalizer
    time.sleep(1)
    running.stop()
