"""The errors torchrollout raises, in one tree.

    TorchrolloutError
    ├── SpecError            a ModelDeployment (or a file meant to be one) is invalid;
    │                        carries each problem as (field path, message)
    ├── TicksError           a `simulate` ticks file has a malformed line
    └── PrometheusError      only for misuse of the provider (a bad base URL); outcomes
                             of a query are never raised, they are Measurements

Third-party errors (pydantic, httpx, yaml) are translated where they enter, with
`raise Ours(...) from exc`, so callers catch these and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class TorchrolloutError(Exception):
    """Base of every error torchrollout raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with a resource: where, and what to do about it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(TorchrolloutError):
    """A ModelDeployment is invalid; `problems` names each field and the fix."""

    def __init__(self, problems: Sequence[FieldProblem], *, source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where}invalid ModelDeployment\n{lines}")


class TicksError(TorchrolloutError):
    """A line of a ticks file for `torchrollout simulate` cannot be used."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"ticks line {line}: {message}")


class PrometheusError(TorchrolloutError):
    """The Prometheus provider was configured wrongly (query outcomes are never raised)."""
