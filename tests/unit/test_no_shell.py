"""No code the operator or the model handlers run hands a command line to a shell: a spec
string with `;`, `$(...)` or a backquote can only ever be one argument of one program."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    [*(ROOT / "operator" / "torchrollout").rglob("*.py"), *(ROOT / "model-handlers").glob("*.py")]
)
SPAWNERS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}
SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
}


def shell_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name = node.func.attr
        if (owner, name) in SHELL_CALLS:
            found.append(f"line {node.lineno}: {owner}.{name}")
        elif owner in {"subprocess", "asyncio"} and name in SPAWNERS | {"create_subprocess_shell"}:
            shell = any(
                k.arg == "shell"
                and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                for k in node.keywords
            )
            text = bool(node.args) and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
            if shell or text or name == "create_subprocess_shell":
                found.append(f"line {node.lineno}: {owner}.{name} through a shell")
    return found


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_line_reaches_a_shell(source: Path) -> None:
    assert shell_uses(ast.parse(source.read_text(), str(source))) == []


def test_the_check_sees_a_shell() -> None:
    """The scan finds each way of reaching a shell, so a pass above means something."""
    code = (
        "import os, subprocess\n"
        "os.system('x')\n"
        "subprocess.run('ls -l', check=True)\n"
        "subprocess.Popen(['ls'], shell=True)\n"
        "subprocess.run(['ls'], shell=False)\n"
    )
    assert len(shell_uses(ast.parse(code))) == 3
