"""`torchrollout rehearse`: a real canary on one machine, judged by the operator's engine.

Parses options, validates the inputs (fast, before any server starts), runs the
rehearsal and maps what happened to an exit code. All the work is in
`torchrollout.rehearsal`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from torchrollout.errors import TorchrolloutError

PROMOTED, ROLLED_BACK, USAGE_ERROR = 0, 1, 2


def rehearse(
    stable: Annotated[Path, typer.Option(help="ModelDeployment YAML of the version serving now.")],
    canary: Annotated[
        Path, typer.Option(help="ModelDeployment YAML of the new version (its policy is used).")
    ],
    traffic: Annotated[
        Path,
        typer.Option(
            help="JSON lines, one request body each, replayed in a loop; a `label` makes "
            "accuracy measurable. Lines that are not JSON objects are skipped, counted and "
            "warned about; bodies the model rejects are sent and counted as 4xx."
        ),
    ],
    rate: Annotated[float, typer.Option(help="Requests per second, split by the weight.")] = 40.0,
    interval_override: Annotated[
        str | None,
        typer.Option(help="Replace the canary's spec.canary.interval, e.g. 5s."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write a JSON report: specs, ticks, outcome, timings.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG timeline: weight, checks, verdicts.")
    ] = None,
    prometheus_bin: Annotated[
        str, typer.Option(help="The prometheus executable (name on PATH or path).")
    ] = "prometheus",
    workdir: Annotated[
        Path | None,
        typer.Option(help="Keep the run's files (archives, server logs) in a folder here."),
    ] = None,
) -> None:
    """Roll out --canary over --stable on local TorchServes, judged on Prometheus.

    Builds both archives, starts a TorchServe per revision and a Prometheus on loopback,
    replays --traffic split by the canary weight, and runs the operator's engine and PromQL
    every interval until the canary is promoted or rolled back.

    Exit codes: 0 promoted; 1 rolled back (or paused, or undecided in time);
    2 invalid input or a server that would not start; 130 SIGINT; 143 SIGTERM.
    Every process and temporary folder is removed in all cases.
    """
    from torchrollout.rehearsal import session, signals
    from torchrollout.rehearsal.view import make_view

    options = session.Options(
        stable=stable,
        canary=canary,
        traffic=traffic,
        rate=rate,
        interval_override=interval_override,
        report=report,
        plot=plot,
        prometheus_bin=prometheus_bin,
        workdir=workdir,
    )
    errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def warn(text: str) -> None:
        errors.print(f"rehearse: warning: {text}", markup=False)

    try:
        with signals.interruptible():
            inputs = session.check_inputs(options, warn=warn)
            view = make_view(Console(highlight=False), inputs.pair)
            result = session.rehearse(options, inputs, view)
    except signals.Interrupted as stop:
        errors.print(f"rehearse: interrupted by {stop}; everything stopped", markup=False)
        raise typer.Exit(stop.exit_code) from None
    except TorchrolloutError as exc:  # SpecError, RehearsalError: input or infrastructure
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(USAGE_ERROR) from None
    raise typer.Exit(PROMOTED if result.outcome.promoted else ROLLED_BACK)
