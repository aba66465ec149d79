"""The docs say only what the project has: links resolve, commands exist, reasons are real.

Fast and offline. Checks every Markdown file in `docs/` (and the README's links):
- each relative link names a file that exists, and an anchor names a heading of it
  (GitHub's slugs);
- each `kubectl torchrollout COMMAND` and `torchrollout COMMAND [SUB]` written in code
  exists in the typer apps;
- each condition reason written `Type=Status/Reason`, and each CamelCase word in backticks
  in troubleshooting.md, is a string the operator's source writes.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main

from torchrollout.cli import app as torchrollout_app
from torchrollout.cli.kubectl_plugin import app as plugin_app
from torchrollout.spec.status import Phase, Verdict

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))
LINKED_FILES = [*DOC_FILES, ROOT / "README.md"]
SOURCE = ROOT / "operator" / "torchrollout"

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
# A command at the start of a code span or line, or after a pipe, `;`, `&&` or `$`.
COMMAND = re.compile(
    r"(?:^|[|;&($]\s*)(kubectl\s+)?torchrollout\s+([a-z][a-z-]*(?:\|[a-z][a-z-]*)*)"
    r"(?:\s+([a-z][a-z-]*))?"
)
CONDITION = re.compile(r"\b([A-Z][A-Za-z]+)=(True|False|Unknown)(?:/([A-Z][A-Za-z]+))?")
CAMEL_WORD = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+$|^[A-Z][a-z]+$")


def _prose_and_code(path: Path) -> tuple[list[str], list[str]]:
    """The file's lines outside fenced blocks, and the lines inside them."""
    prose: list[str] = []
    code: list[str] = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"`|\*\*|__", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = _prose_and_code(path)
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose:
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> Iterator[str]:
    prose, _ = _prose_and_code(path)
    for line in prose:
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                yield target


def inline_code(path: Path) -> Iterator[str]:
    prose, _ = _prose_and_code(path)
    for line in prose:
        yield from INLINE_CODE.findall(line)


def code_snippets(path: Path) -> Iterator[str]:
    yield from inline_code(path)
    yield from _prose_and_code(path)[1]


def _commands(command: object) -> dict[str, object]:
    """A typer app's sub-commands by name (typer ships its own click: read it by duck type)."""
    commands = getattr(command, "commands", None)
    return dict(commands) if isinstance(commands, dict) else {}


TORCHROLLOUT = _commands(typer.main.get_command(torchrollout_app))
PLUGIN = _commands(typer.main.get_command(plugin_app))


def _source_strings() -> set[str]:
    """Every string constant in the operator's package (f-string parts included), and the
    reasons it builds from enums: `Analysis{verdict}`, and a phase as a reason."""
    strings: set[str] = set()
    for file in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    strings.update(f"Analysis{verdict}" for verdict in Verdict)
    strings.update(str(phase) for phase in Phase)
    return strings


SOURCE_STRINGS = _source_strings()


def test_docs_exist() -> None:
    names = {p.name for p in DOC_FILES}
    assert {
        "README.md",
        "install.md",
        "first-rollout.md",
        "policies-and-checks.md",
        "routers.md",
        "autoscaling.md",
        "metrics.md",
        "observability.md",
        "gitops.md",
        "troubleshooting.md",
        "security.md",
        "upgrading.md",
    } <= names


@pytest.mark.parametrize("path", LINKED_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved.relative_to(ROOT)}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_commands_exist(path: Path) -> None:
    unknown = []
    for snippet in code_snippets(path):
        for plugin, names, sub in COMMAND.findall(snippet.strip()):
            for name in names.split("|"):
                known = PLUGIN if plugin else TORCHROLLOUT
                prefix = "kubectl torchrollout" if plugin else "torchrollout"
                command = known.get(name)
                if command is None:
                    unknown.append(f"{prefix} {name}: in {snippet.strip()!r}")
                elif sub and _commands(command) and sub not in _commands(command):
                    unknown.append(f"{prefix} {name} {sub}: in {snippet.strip()!r}")
    assert not unknown, "\n".join(unknown)


def test_commands_are_found() -> None:
    """The command pattern itself finds what the docs write (so the test above checks)."""
    found = {
        (bool(p), n, s)
        for text in (
            "kubectl torchrollout status NAME -n NS",
            "torchrollout crd | kubectl apply --server-side -f -",
            "kubectl torchrollout retry|promote|abort NAME",
            "torchrollout archive build --source x",
        )
        for p, n, s in COMMAND.findall(text)
    }
    assert found == {
        (True, "status", ""),
        (False, "crd", ""),
        (True, "retry|promote|abort", ""),
        (False, "archive", "build"),
    }
    assert not COMMAND.findall("helm install torchrollout charts/torchrollout")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_condition_reasons_exist(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    unknown = sorted(
        {
            word
            for type_, _, reason in CONDITION.findall(text)
            for word in (type_, reason)
            if word and word not in SOURCE_STRINGS
        }
    )
    assert not unknown, f"not in operator/torchrollout: {unknown}"


def test_troubleshooting_reasons_exist() -> None:
    words = {
        word
        for snippet in inline_code(DOCS / "troubleshooting.md")
        for word in re.split(r"[=/,\s]+", snippet)
        if CAMEL_WORD.match(word)
    }
    assert len(words) > 40  # the table names the operator's reasons
    unknown = sorted(words - SOURCE_STRINGS)
    assert not unknown, f"not in operator/torchrollout: {unknown}"
