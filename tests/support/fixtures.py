"""Session-wide builders for the handler and archive tests: example models and archives.

Imported by the conftest files of tests/handlers and tests/archive. Everything is written
under pytest's session temp dir; nothing lands in the repository.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.models import REPO
from torchrollout.archive.build import BuildRequest, BuildResult, build_archive


def make_examples(folder: Path) -> Path:
    """Run examples/models/make_models.py (trained v1/v2/v3 models) into `folder`."""
    spec = importlib.util.spec_from_file_location(
        "make_models", REPO / "examples" / "models" / "make_models.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--output", str(folder)])
    return folder


@dataclass(frozen=True)
class Example:
    """One trained example version: its files as make_models.py wrote them."""

    family: str
    version: str
    folder: Path

    @property
    def weights(self) -> Path:
        return self.folder / "model.pt"

    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.folder / "config.json").read_text())  # type: ignore[no-any-return]

    @property
    def sample(self) -> Any:
        return json.loads((self.folder / "sample.json").read_text())

    def traffic(self) -> list[dict[str, Any]]:
        lines = (self.folder.parent / "traffic.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def example(root: Path, family: str, version: str) -> Example:
    return Example(family, version, root / family / version)


def build(
    *,
    weights: Path,
    handler: str,
    config: dict[str, Any],
    name: str,
    version: str,
    output: Path,
    sample: Any | None = None,
    batch_size: int | None = None,
    max_batch_delay_ms: int | None = None,
) -> BuildResult:
    return build_archive(
        BuildRequest(
            source=str(weights),
            name=name,
            version=version,
            handler=handler,
            output=output,
            config=config,
            sample_input=sample,
            batch_size=batch_size,
            max_batch_delay_ms=max_batch_delay_ms,
        )
    )
