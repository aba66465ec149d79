"""The `torchrollout` command line: one typer app whose sub-commands live beside it.

Each command module parses its arguments, calls into the package and prints; none holds
logic of its own. Exit codes: 0 success, 1 the thing asked about failed (a rollout rolled
back, a file is invalid), 2 usage or infrastructure error.
"""

from __future__ import annotations

import typer

from torchrollout.archive.cli import app as archive_app
from torchrollout.cli import resource
from torchrollout.cli.operator_command import operator
from torchrollout.cli.rehearse_command import rehearse

app = typer.Typer(
    name="torchrollout",
    help="Roll out PyTorch models on TorchServe, judged on accuracy, latency and errors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(archive_app, name="archive")
app.command()(resource.crd)
app.command()(resource.validate)
app.command()(resource.render)
app.command()(resource.simulate)
app.command()(operator)
app.command()(rehearse)


def main() -> None:
    """Console-script entry point."""
    app()
