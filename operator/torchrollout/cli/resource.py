"""Commands about the resource itself: `crd`, `validate`, `simulate`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
import yaml

from torchrollout.errors import FieldProblem, SpecError, TicksError
from torchrollout.render import SHARE_TOLERANCE, plan, replica_share, replicas_for_share
from torchrollout.simulation import (
    SIMULATION_START,
    load_resource,
    outcome_exit_code,
    parse_ticks,
    replay,
)
from torchrollout.spec.crd import render_crd
from torchrollout.spec.document import (
    ModelDeployment,
    compute_revision,
    load_model_deployment,
    read_document,
)

USAGE_ERROR = 2


class OutputFormat(StrEnum):
    JSON = "json"
    TABLE = "table"


def _row(summary: dict[str, Any]) -> str:
    verdicts = " ".join(f"{name}={verdict}" for name, verdict in summary["verdicts"].items())
    line = f"t={summary['t']:>6g}s  {summary['phase']:<12} weight={summary['canaryWeight']:>3}%"
    return f"{line}  {summary['reason']}" + (f"\n{'':>10}{verdicts}" if verdicts else "")


def crd() -> None:
    """Print the ModelDeployment CustomResourceDefinition (kubectl apply -f - takes it)."""
    typer.echo(yaml.safe_dump(render_crd(), sort_keys=False, width=100), nl=False)


def validate(
    files: Annotated[
        list[Path], typer.Argument(help="ModelDeployment YAML files.", show_default=False)
    ],
) -> None:
    """Check ModelDeployment files; print each one's revision, or what to fix."""
    invalid = 0
    for path in files:
        try:
            resource = load_model_deployment(path)
        except SpecError as exc:
            invalid += 1
            typer.echo(str(exc), err=True)
            continue
        revision = compute_revision(resource.spec)
        version = resource.spec.model.version
        typer.echo(f"{path}: ok, {resource.metadata.name} version {version} revision {revision}")
        for warning in _share_warnings(resource):
            typer.echo(f"{path}: warning: {warning}", err=True)
    raise typer.Exit(1 if invalid else 0)


def _share_warnings(resource: ModelDeployment) -> list[str]:
    """Steps the replicas router cannot give with the configured replicas (whole pods)."""
    if resource.spec.traffic.router != "replicas":
        return []
    replicas = _default_replicas(resource)
    coarse = [replica_share(replicas, step) for step in resource.spec.canary.steps]
    return [
        f"{share.describe()} at {replicas} stable replica{'s' if replicas != 1 else ''}; "
        f"{replicas_for_share(share.step)} would give {share.step}% within {SHARE_TOLERANCE} "
        "points, or use router gateway-api"
        for share in coarse
        if not share.honest
    ]


def render(
    file: Annotated[Path, typer.Option("--file", "-f", help="A ModelDeployment YAML.")],
    stable_replicas: Annotated[
        int | None,
        typer.Option(help="Replicas of the stable revision (default: runtime.replicas)."),
    ] = None,
) -> None:
    """Print the objects the operator would create for a ModelDeployment, as YAML."""
    try:
        resource = load_model_deployment(file)
    except SpecError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    replicas = stable_replicas or _default_replicas(resource)
    planned = plan(resource, stable_replicas=replicas)
    typer.echo(yaml.safe_dump_all(planned.objects, sort_keys=False, width=100), nl=False)


def _default_replicas(resource: ModelDeployment) -> int:
    scaling = resource.spec.autoscaling
    return scaling.min_replicas if scaling is not None else resource.spec.runtime.replicas


def simulate(
    file: Annotated[
        Path,
        typer.Option("--file", "-f", help="The ModelDeployment YAML (its status is the start)."),
    ],
    ticks: Annotated[
        Path, typer.Option("--ticks", help="JSON lines, one analysis tick each; - for stdin.")
    ],
    output: Annotated[
        OutputFormat,
        typer.Option("--output", "-o", help="json: one object per tick; table: for people."),
    ] = OutputFormat.JSON,
) -> None:
    """Replay ticks through the decision engine; print one JSON object per tick.

    Exit code: 0 when the last tick ends Succeeded, 1 when RolledBack or Failed,
    3 when the rollout is still undecided, 2 on invalid input.
    """
    lines = TickLines(ticks)
    try:
        document = read_document(file)
        if not isinstance(document, dict):
            problem = FieldProblem("", "expected a ModelDeployment (a YAML mapping)")
            raise SpecError([problem], source=str(file))
        resource = load_resource(document, source=str(file))
        phase = str(resource.status.phase)
        with lines:
            for outcome in replay(resource, parse_ticks(lines), start=SIMULATION_START):
                summary = outcome.summary()
                typer.echo(json.dumps(summary) if output is OutputFormat.JSON else _row(summary))
                phase = str(outcome.status.phase)
    except SpecError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    except TicksError as exc:
        typer.echo(f"{ticks}: {exc}", err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    except OSError as exc:
        typer.echo(f"{ticks}: cannot read: {exc.strerror}", err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    except RecursionError as exc:
        typer.echo(f"{ticks}: ticks line {lines.number}: nested too deeply", err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    raise typer.Exit(outcome_exit_code(phase))


class TickLines:
    """The lines of a ticks file (or stdin for -) as text; TicksError for one not UTF-8.

    `number` is the line read last, for errors raised while it is parsed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.number = 0
        self._stream: BinaryIO | None = None

    def __enter__(self) -> TickLines:
        stdin = typer.get_binary_stream("stdin")
        self._stream = stdin if str(self.path) == "-" else self.path.open("rb")
        return self

    def __exit__(self, *_: object) -> None:
        if self._stream is not None:
            self._stream.close()

    def __iter__(self) -> Iterator[str]:
        assert self._stream is not None, "use TickLines in a with block"
        for number, raw in enumerate(self._stream, start=1):
            self.number = number
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                byte = raw[exc.start]
                where = f"byte {byte:#04x} at column {exc.start + 1}"
                raise TicksError(
                    self.number, f"not UTF-8 text ({where}); save it as UTF-8"
                ) from exc
