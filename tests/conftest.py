"""Session fixtures shared by more than one test folder.

Defined here once so a session that runs both the handler and the archive tests trains the
example models once. torch is imported only when a fixture runs, so tests that need no
model start fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _inductor_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.support.models import keep_inductor_cache_in

    keep_inductor_cache_in(tmp_path_factory.mktemp("inductor"))


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained example models (examples/models/make_models.py), once per session."""
    from tests.support.fixtures import make_examples

    return make_examples(tmp_path_factory.mktemp("examples"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.kube_cluster.fixtures import STARTUP_KEY

    started = terminalreporter.config.stash.get(STARTUP_KEY, None)
    if started is not None:
        terminalreporter.write_line(f"real control plane started in {started:.1f} s")
