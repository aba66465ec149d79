"""What a person (or a CI log) sees while a rehearsal runs.

`LiveView` (a terminal) redraws one panel a few times a second with rich: phase, step,
weight, elapsed time, each check's canary and stable values against its threshold with
its verdict, the counters against their limits, and the requests sent per status class.
`PlainView` (stdout is not a terminal) prints a line per setup step and per decision
instead. Both end with one verdict line. `make_view` picks one.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from torchrollout.rehearsal.loop import Outcome, TickRecord
from torchrollout.rehearsal.resources import Pair
from torchrollout.rehearsal.traffic import TrafficStats
from torchrollout.spec.checks import ResolvedCheck
from torchrollout.spec.status import CheckStatus, Verdict

_VERDICT_STYLE = {
    Verdict.SUCCESSFUL: "green",
    Verdict.FAILED: "bold red",
    Verdict.INCONCLUSIVE: "yellow",
    Verdict.ERROR: "magenta",
}


class View(Protocol):
    """Progress sink of a rehearsal."""

    def note(self, text: str) -> None: ...

    def started(self, stats: TrafficStats) -> None: ...

    def decided(self, record: TickRecord) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if unit == "ms" else f"{value:.4g}"


def traffic_line(stats: TrafficStats) -> str:
    total: Counter[str] = stats.totals()
    sent = sum(total.values())
    return (
        f"sent {sent} (2xx {total['2xx']}, 4xx {total['4xx']}, 5xx {total['5xx']}"
        + (f", failed {total['failed']}" if total["failed"] else "")
        + ")"
    )


def verdict_line(outcome: Outcome) -> str:
    """The last line of a rehearsal: what happened to the canary, and why."""
    word = {
        "promoted": "PROMOTED",
        "rolled-back": "ROLLED BACK",
        "timeout": "UNDECIDED",
        "paused": "PAUSED",
    }.get(outcome.reason, outcome.reason.upper())
    return f"{word} after {outcome.elapsed:.1f}s: {outcome.message}"


def _position(pair: Pair, record: TickRecord | None) -> str:
    steps = pair.canary.spec.canary.steps
    if record is None:
        return "waiting"
    step = "-" if record.step_index is None else f"{record.step_index + 1}/{len(steps)}"
    return f"{record.phase}  step {step}  canary {record.canary_share}%"


class PlainView:
    """One line per setup step and per decision; for CI logs."""

    def __init__(self, console: Console, pair: Pair, checks: list[ResolvedCheck]) -> None:
        self.console = console
        self.pair = pair
        self.units = {c.name: c.unit for c in checks}
        self.stats: TrafficStats | None = None

    def _print(self, text: str) -> None:
        # No markup and no wrapping: each line stays one greppable line in a CI log.
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        self._print(f"rehearse: {text}")

    def started(self, stats: TrafficStats) -> None:
        self.stats = stats
        self.note("canary started")

    def decided(self, record: TickRecord) -> None:
        line = f"t={record.t:6.1f}s  {_position(self.pair, record)}"
        if record.verdict is not None:
            checks = "; ".join(self._check(record, c) for c in record.checks)
            line += f"  tick {record.verdict}: {checks}"
        if self.stats is not None:
            line += f"  | {traffic_line(self.stats)}"
        self._print(line)
        for event in record.events:
            self._print(f"          {event.reason}: {event.message}")

    def _check(self, record: TickRecord, check: CheckStatus) -> str:
        unit = self.units.get(check.name, "")
        stable = check.stable_value
        if stable is None:
            stable = record.baselines.get(check.name)
        return (
            f"{check.name}={_value(check.value, unit)} (stable {_value(stable, unit)}, "
            f"{check.threshold}) {check.verdict}"
        )

    def finished(self, outcome: Outcome) -> None:
        self._print(verdict_line(outcome))

    def close(self) -> None:
        pass


class LiveView(PlainView):
    """A panel redrawn in place on a terminal; setup notes and events scroll above it."""

    def __init__(self, console: Console, pair: Pair, checks: list[ResolvedCheck]) -> None:
        super().__init__(console, pair, checks)
        self.checks = checks
        self.last: TickRecord | None = None
        self.last_analysis: TickRecord | None = None
        self.began = 0.0
        self.live: Live | None = None

    def started(self, stats: TrafficStats) -> None:
        self.stats = stats
        self.began = time.monotonic()
        self.live = Live(get_renderable=self._render, console=self.console, refresh_per_second=4)
        self.live.start()

    def decided(self, record: TickRecord) -> None:
        self.last = record
        if record.verdict is not None:
            self.last_analysis = record
        for event in record.events:
            style = "red" if event.type == "Warning" else "cyan"
            self.console.print(
                Text(f"t={record.t:5.1f}s {event.reason}: {event.message}", style=style)
            )

    def _render(self) -> Group:
        pair, record = self.pair, self.last
        elapsed = time.monotonic() - self.began if self.began else 0.0
        title = Text.assemble(
            ("rehearsing ", "bold"),
            f"{pair.namespace}/{pair.name}: {pair.stable.version} → {pair.canary.version}   ",
            (_position(pair, record), "bold cyan"),
            f"   elapsed {elapsed:5.1f}s",
        )
        table = Table(expand=False, show_edge=False)
        for column in ("check", "threshold", "canary", "stable", "samples", "verdict"):
            table.add_column(column)
        tick = self.last_analysis
        results = {c.name: c for c in tick.checks} if tick is not None else {}
        for check in self.checks:
            result = results.get(check.name)
            if result is None:
                table.add_row(check.name, check.describe_threshold(), "-", "-", "-", "waiting")
                continue
            stable = result.stable_value
            if stable is None and tick is not None:
                stable = tick.baselines.get(check.name)
            table.add_row(
                check.name,
                result.threshold,
                _value(result.value, check.unit),
                _value(stable, check.unit),
                "-" if result.samples is None else str(result.samples),
                Text(str(result.verdict), style=_VERDICT_STYLE[result.verdict]),
            )
        policy = pair.canary.spec.canary.analysis
        counters = Text(
            f"failed {record.failed if record else 0}/{policy.failure_limit}   "
            f"inconclusive {record.inconclusive if record else 0}/{policy.inconclusive_limit}   "
            f"errors in a row {record.consecutive_errors if record else 0}/"
            f"{policy.consecutive_error_limit}"
        )
        sent = Text(traffic_line(self.stats) if self.stats is not None else "")
        message = Text(record.message if record else "", style="dim")
        return Group(title, table, counters, sent, message)

    def finished(self, outcome: Outcome) -> None:
        self.close()
        style = "bold green" if outcome.promoted else "bold red"
        self.console.print(Text(verdict_line(outcome), style=style))

    def close(self) -> None:
        live, self.live = self.live, None
        if live is not None:
            live.stop()


def make_view(console: Console, pair: Pair) -> View:
    """A live panel on a terminal, plain lines otherwise."""
    checks = pair.canary.spec.canary.analysis.resolved_checks()
    if console.is_terminal:
        return LiveView(console, pair, checks)
    return PlainView(console, pair, checks)
