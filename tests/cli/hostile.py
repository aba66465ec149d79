"""Files no command should choke on, one per class of bad input."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

HUGE_BYTES = 50 * 1024 * 1024


def billion_laughs(levels: int = 10, fanout: int = 9) -> str:
    """YAML whose aliases expand to fanout**levels scalars from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*l{level - 1}"] * fanout)
        lines.append(f"l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    """A flow sequence `depth` levels deep."""
    return "[" * depth + "]" * depth


def zip_bytes() -> bytes:
    """A small zip archive of random bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("weights.bin", random.Random(0).randbytes(4096))
    return buffer.getvalue()


def make_hostile(folder: Path) -> dict[str, Path]:
    """Each hostile input class, by name, as a path in `folder` (`missing` is not created)."""
    paths = {
        name: folder / name
        for name in (
            "missing",
            "directory",
            "empty",
            "not-utf8",
            "binary",
            "deep",
            "several",
            "bomb",
            "huge",
        )
    }
    paths["directory"].mkdir()
    paths["empty"].write_bytes(b"")
    paths["not-utf8"].write_bytes(b"\xff\xfe\x00bad")
    paths["binary"].write_bytes(zip_bytes())
    paths["deep"].write_text(nested(5000))
    paths["several"].write_text("a: 1\n---\nb: 2\n")
    paths["bomb"].write_text(billion_laughs())
    with paths["huge"].open("wb") as huge:
        huge.truncate(HUGE_BYTES)
    return paths
