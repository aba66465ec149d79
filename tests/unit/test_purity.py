"""The engine and the resource model never read the clock.

import-linter keeps `time` out of them; `datetime` must stay importable for types, so
this test makes sure nothing there calls now(), utcnow() or today().
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "torchrollout"
PURE = sorted([*(PACKAGE / "engine").glob("*.py"), *(PACKAGE / "spec").glob("*.py")])
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_clock_reads(path: Path) -> None:
    calls = [
        node.func.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in CLOCK_CALLS
    ]
    assert calls == []
