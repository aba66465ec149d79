"""The one reader of user documents: limits, and messages that say what to fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.hostile import billion_laughs, make_hostile, nested
from torchrollout.archive.cli import _write_digest
from torchrollout.archive.errors import PublishError
from torchrollout.errors import SpecError
from torchrollout.spec.document import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    load_model_deployment,
    read_document,
    read_json,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policies" / "good-canary.yaml"


def refusal(path: Path, read: Callable[[Path], Any] = read_document) -> str:
    """The message `read` refuses `path` with; it is one line and starts with the path."""
    with pytest.raises(SpecError) as caught:
        read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message, message
    return message


Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Writes text or bytes to a file in tmp_path; returns its path."""

    def written(text: str | bytes, name: str = "doc.yaml") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return written


def test_a_valid_example_loads() -> None:
    assert load_model_deployment(EXAMPLE).metadata.name


def test_undecodable_bytes_are_named_with_their_offset(write: Write) -> None:
    message = refusal(write(b"ok: 1\n\xc3\x28"))
    assert "not UTF-8 text (byte 0xc3 at offset 6)" in message


def test_a_file_over_the_limit_is_not_read(write: Write) -> None:
    path = write(b"")
    with path.open("wb") as grown:
        grown.truncate(MAX_DOCUMENT_BYTES + 1)
    assert "larger than the 8 MiB limit" in refusal(path)


def test_nesting_up_to_the_limit_is_read(write: Write) -> None:
    assert read_document(write(nested(MAX_DEPTH))) is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deeper_nesting_is_refused(write: Write, depth: int) -> None:
    assert f"nested deeper than {MAX_DEPTH} levels" in refusal(write(nested(depth)))


def test_an_alias_counts_the_depth_of_its_anchor(write: Write) -> None:
    anchored = f"a: &deep {nested(MAX_DEPTH - 1)}\nb: [*deep]\n"
    assert "nested deeper" in refusal(write(anchored))


def test_a_few_aliases_are_fine(write: Write) -> None:
    text = "base: &base {cpu: 1}\none: *base\ntwo: *base\n"
    assert read_document(write(text))["two"] == {"cpu": 1}


def test_an_alias_bomb_is_refused(write: Write) -> None:
    assert "aliases expand" in refusal(write(billion_laughs()))


def test_an_alias_inside_its_own_anchor_is_refused(write: Write) -> None:
    assert "no anchor before it" in refusal(write("a: &loop [1, *loop]\n"))


def test_several_documents_are_refused(write: Write) -> None:
    assert "more than one YAML document" in refusal(write("a: 1\n---\nb: 2\n"))


def test_an_empty_file_is_refused(write: Write) -> None:
    assert "empty" in refusal(write("# only a comment\n"))


def test_a_syntax_error_names_line_and_column(write: Write) -> None:
    message = refusal(write("a: [1, 2\nb: 3\n"))
    assert "not valid YAML" in message
    assert "line 2" in message


@pytest.mark.parametrize("name", ["missing", "directory"])
def test_unreadable_paths_say_why(name: str, tmp_path: Path) -> None:
    path = make_hostile(tmp_path)[name]
    assert "cannot read" in refusal(path)


def test_json_is_read_with_the_same_limits(write: Write) -> None:
    assert read_json(write('{"a": [1, 2]}', "ok.json")) == {"a": [1, 2]}
    assert "nested deeper" in refusal(write(nested(MAX_DEPTH + 1), "deep.json"), read_json)
    assert "nested deeper" in refusal(write(nested(100_000), "deeper.json"), read_json)
    assert "not UTF-8" in refusal(write(b"\xff", "bytes.json"), read_json)
    assert "not valid JSON" in refusal(write("{'a': 1}", "quotes.json"), read_json)


def test_a_model_deployment_of_the_wrong_type_names_it(write: Write) -> None:
    with pytest.raises(SpecError) as caught:
        load_model_deployment(write("- a list\n"))
    assert "expected a mapping, got a list" in str(caught.value)


def test_a_full_disk_fails_the_digest_file_with_its_path() -> None:
    with pytest.raises(PublishError, match="/dev/full"):
        _write_digest(Path("/dev/full"), "0" * 64)
