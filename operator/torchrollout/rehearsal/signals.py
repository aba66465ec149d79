"""Ctrl-C and SIGTERM during a rehearsal: one clean way out, never an orphaned server.

`interruptible()` makes SIGINT and SIGTERM raise `Interrupted` in the main thread, once:
the handler then ignores both, so a second Ctrl-C cannot break off the cleanup that the
first one started. Handlers are restored when the block ends.

`deferred()` guards starting a child process. An exception raised inside
`subprocess.Popen` after the fork leaves the child running with nobody holding its pid,
so a server interrupted there could not be stopped. Inside the block a first signal is
only remembered and raised when the block ends (the server is then known, and its stop
runs); a second signal raises at once, for a start that hangs. Outside `interruptible()`
(library use, tests) both are no-ops beyond what Python does by default.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException so that no `except Exception` eats it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@dataclass
class _State:
    active: bool = False
    deferring: bool = False
    pending: int | None = None


_state = _State()


def _raise(signum: int) -> None:
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # the cleanup must run to its end
    raise Interrupted(signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.deferring and _state.pending is None:
        _state.pending = signum
        return
    _raise(_state.pending or signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT/SIGTERM raise `Interrupted` (once) inside the block; handlers restored after."""
    previous = {sig: signal.signal(sig, _handler) for sig in _SIGNALS}
    _state.active, _state.pending = True, None
    try:
        yield
    finally:
        _state.active = _state.deferring = False
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a first signal until the block is done (see the module docstring)."""
    if not _state.active:
        yield
        return
    _state.deferring = True
    try:
        yield
    finally:
        _state.deferring = False
    if _state.pending is not None:
        _raise(_state.pending)
