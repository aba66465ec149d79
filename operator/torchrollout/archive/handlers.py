"""Where the built-in handlers live, and which files an archive needs for a handler name.

`model-handlers/` (at the repository root, or $TORCHROLLOUT_HANDLERS_DIR in an image) holds
one file per handler family plus the shared modules every handler imports and the TorchServe
`metrics.yaml` that declares the torchrollout_* metrics. `build.py` packs the handler file as
torch-model-archiver's `--handler` and the shared modules as `--extra-files`; a custom handler
(a .py URI) gets the same shared modules, so it may subclass the base.
"""

from __future__ import annotations

import os
from pathlib import Path

from torchrollout.archive.errors import UsageError
from torchrollout.spec.resource import BUILTIN_HANDLERS as BUILTIN_NAMES

HANDLERS_DIR_ENV = "TORCHROLLOUT_HANDLERS_DIR"

# One file per built-in handler, named after it: sequence-classifier -> sequence_classifier.py
BUILTIN_HANDLERS: dict[str, str] = {name: f"{name.replace('-', '_')}.py" for name in BUILTIN_NAMES}
SHARED_MODULES = (
    "torchrollout_base.py",
    "torchrollout_io.py",
    "torchrollout_models.py",
    "torchrollout_runtime.py",
)
METRICS_CONFIG = "metrics.yaml"
CONFIG_FILE = "torchrollout-config.json"  # read by torchrollout_base.TorchRolloutHandler


def handlers_dir() -> Path:
    """The model-handlers folder: $TORCHROLLOUT_HANDLERS_DIR, else the repository's."""
    configured = os.environ.get(HANDLERS_DIR_ENV)
    folder = (
        Path(configured) if configured else Path(__file__).resolve().parents[3] / "model-handlers"
    )
    if not (folder / SHARED_MODULES[0]).is_file():
        raise UsageError(f"no model handlers in {folder} (set ${HANDLERS_DIR_ENV})")
    return folder


def metrics_config() -> Path:
    """The metrics.yaml a TorchServe serving these handlers must be started with."""
    return handlers_dir() / METRICS_CONFIG


def builtin_handler(name: str) -> Path | None:
    """The file of a built-in handler, or None when `name` is not one (e.g. a URI)."""
    file_name = BUILTIN_HANDLERS.get(name)
    return None if file_name is None else handlers_dir() / file_name


def shared_files() -> list[Path]:
    """The modules and metrics config packed next to every handler."""
    folder = handlers_dir()
    return [folder / name for name in (*SHARED_MODULES, METRICS_CONFIG)]


def check_custom_handler(path: Path) -> None:
    """A custom handler must be a .py file whose module name does not shadow a shared one."""
    if path.suffix != ".py":
        raise UsageError(
            f"--handler: {path.name} is neither a built-in ({', '.join(BUILTIN_HANDLERS)}) "
            "nor a .py file"
        )
    if path.name in SHARED_MODULES or not path.stem.isidentifier():
        raise UsageError(f"--handler: {path.name} is not a usable module name")
