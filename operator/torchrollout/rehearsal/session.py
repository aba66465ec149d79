"""One rehearsal from files to outcome, with every process, port and folder cleaned up.

`check_inputs` validates everything that needs no server (both YAMLs, the traffic file,
the prometheus binary, the output folders) so bad input fails in well under a second.
`rehearse` then runs the whole thing inside one `ExitStack`:

    work folder → archives → Prometheus → a TorchServe per revision → warm-up
    → load generator → live view → the rollout loop → report

Each resource registers its release on the stack before it is acquired, so leaving the
block for any reason (an outcome, an error, Ctrl-C) stops the view, the sender threads,
both TorchServes, Prometheus, and removes the work folder (kept only when the user named
one with --workdir). The caller runs it inside `signals.interruptible()`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrollout.local.prometheus import INSTALL_HINT
from torchrollout.metrics import PrometheusProvider
from torchrollout.rehearsal.loop import MonotonicClock, Outcome, RolloutLoop
from torchrollout.rehearsal.platform import LocalPlatform
from torchrollout.rehearsal.report import build_report
from torchrollout.rehearsal.resources import Pair, RehearsalError, load_pair
from torchrollout.rehearsal.servers import (
    build_archive_of,
    check_socket_path,
    start_servers,
    warm_up,
)
from torchrollout.rehearsal.traffic import LoadGenerator, Route, Router, Traffic, read_traffic
from torchrollout.rehearsal.view import View


@dataclass(frozen=True)
class Options:
    """The command line's choices."""

    stable: Path
    canary: Path
    traffic: Path
    rate: float = 40.0
    interval_override: str | None = None
    report: Path | None = None
    plot: Path | None = None
    prometheus_bin: str = "prometheus"
    workdir: Path | None = None


@dataclass(frozen=True)
class Inputs:
    """Validated inputs: the two revisions, the traffic, the prometheus executable."""

    pair: Pair
    traffic: Traffic
    prometheus: str


def check_inputs(options: Options, warn: Callable[[str], None]) -> Inputs:
    """Everything that can be checked without starting a server; RehearsalError/SpecError.

    Warnings (skipped traffic lines, no labels) go to `warn` as soon as they are known, so
    they are shown even when a later check fails.
    """
    if not options.rate > 0:
        raise RehearsalError(f"--rate must be a positive number of requests/s, got {options.rate}")
    pair = load_pair(options.stable, options.canary, interval_override=options.interval_override)
    traffic = read_traffic(options.traffic)
    if traffic.skipped:
        warn(
            f"{options.traffic}: skipped {traffic.skipped} lines that are not JSON objects "
            f"(first: {traffic.first_problem})"
        )
    if not traffic.labeled:
        warn(f"{options.traffic}: no line carries a label: accuracy cannot be measured")
    # The longest work folder name `_work_folder` makes: rehearsal- and 8 random characters.
    base = options.workdir if options.workdir is not None else Path(tempfile.gettempdir())
    check_socket_path(base.resolve() / "rehearsal-12345678" / "ts-0")
    executable = shutil.which(options.prometheus_bin)
    if executable is None:
        raise RehearsalError(
            f"the prometheus binary {options.prometheus_bin!r} was not found: {INSTALL_HINT}"
        )
    for label, path in (("--report", options.report), ("--plot", options.plot)):
        if path is not None and not path.resolve().parent.is_dir():
            raise RehearsalError(f"{label} {path}: the folder {path.parent} does not exist")
        if path is not None and path.is_dir():
            raise RehearsalError(f"{label} {path}: is a folder; give a file name")
    return Inputs(pair, traffic, executable)


@dataclass(frozen=True)
class Result:
    """The outcome and the report written for it."""

    outcome: Outcome
    report: dict[str, Any]


def _work_folder(options: Options, stack: ExitStack) -> Path:
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
        # A fresh folder per run inside the user's: an old run's Prometheus data or
        # TorchServe files must not mix with this one's. Kept, for its logs.
        return Path(tempfile.mkdtemp(prefix="rehearsal-", dir=options.workdir))
    folder = Path(tempfile.mkdtemp(prefix="rehearse-"))
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    return folder


def rehearse(options: Options, inputs: Inputs, view: View) -> Result:
    """Run the rehearsal; the caller wraps it in `interruptible()`."""
    pair, began = inputs.pair, time.monotonic()
    setup: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        setup[name] = now - since
        return now

    with ExitStack() as stack:
        workdir = _work_folder(options, stack)
        view.note(f"work folder {workdir}")
        mark = time.monotonic()
        archives = {}
        for side in (pair.stable, pair.canary):
            view.note(f"building the archive of version {side.version} ({side.path})")
            archives[side.revision] = build_archive_of(side, workdir / "archives")
        mark = lap("buildArchives", mark)
        servers = start_servers(
            pair,
            archives,
            workdir=workdir,
            prometheus_bin=inputs.prometheus,
            stack=stack,
            note=view.note,
        )
        mark = lap("startServers", mark)
        view.note("warming up both revisions")
        warm_up(pair, servers, inputs.traffic)
        lap("warmUp", mark)

        router = Router(servers.urls(), Route(pair.stable.revision))
        platform = LocalPlatform(router)
        stack.callback(platform.close)
        provider = PrometheusProvider(servers.prometheus.url)
        stack.callback(provider.close)
        model = pair.canary.resource.model_name
        generator = LoadGenerator(inputs.traffic, router, model_name=model, rate=options.rate)
        stack.callback(generator.stop)
        stack.callback(view.close)
        loop = RolloutLoop(pair, platform=platform, provider=provider, clock=MonotonicClock())
        loop.listener = view.decided
        generator.start(origin=time.monotonic())
        view.started(generator.stats)
        outcome = loop.run()
        generator.stop()
        view.finished(outcome)
        settings = {
            "rate": options.rate,
            "intervalOverride": options.interval_override,
            "traffic": str(options.traffic),
            "trafficLines": len(inputs.traffic.bodies),
            "labeledLines": inputs.traffic.labeled,
            "skippedLines": inputs.traffic.skipped,
            "workdir": str(workdir) if options.workdir is not None else None,
        }
        addresses = servers.addresses()
        traffic = generator.stats.snapshot()
    report = build_report(
        pair,
        outcome,
        settings=settings,
        traffic=traffic,
        servers=addresses,
        setup_seconds=setup,
        total_seconds=time.monotonic() - began,
    )
    if options.report is not None:
        try:
            options.report.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise RehearsalError(
                f"--report {options.report}: cannot write: {exc.strerror}"
            ) from exc
    if options.plot is not None:
        from torchrollout.rehearsal.plot import plot_report

        plot_report(report, options.plot)
    return Result(outcome, report)
