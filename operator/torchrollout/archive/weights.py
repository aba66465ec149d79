"""Tell a weights file's format and refuse unsafe ones, before anything is packed.

Called by `build.py` in its "load" step. The format is sniffed from the names inside the zip
container torch writes (the same rule as `model-handlers/torchrollout_runtime.py`, which the
serving side uses; the two are kept apart because the handlers must not import this package):

    torchscript  `<dir>/code/...` and `<dir>/constants.pkl`
    export       `<dir>/archive_format` or `<dir>/models/...` (a torch.export .pt2)
    state_dict   anything else, including a legacy (non-zip) torch.save pickle

A state_dict file is opened with `torch.load(weights_only=True)`: whatever that refuses (a
pickle that would construct arbitrary objects or run code) is `UnsafeWeights`, and a file it
cannot read at all is `LoadError`. torch is imported lazily, so the CLI starts fast.

An export file needs more: `torch.export.load` itself unpickles parts of a .pt2 with
`weights_only=False` (pickled weights and constants, and the sample inputs when a safe load
of them fails), `pickle.loads` its opaque objects and loads AOTInductor shared libraries.
So a .pt2 holding AOTInductor or opaque/custom-object records is refused outright, and the
rest is loaded once here with TORCH_FORCE_WEIGHTS_ONLY_LOAD set, which makes every torch.load
inside weights-only: a pickle that needs code fails here, before the handler (which loads the
same bytes in the smoke test and in TorchServe) ever sees it. TorchScript files are read by
TorchScript's own unpickler, which builds no Python objects; the handler's load checks them.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torchrollout.archive.errors import LoadError, UnsafeWeights, UsageError

FORMATS = ("state_dict", "torchscript", "export")
FORCE_WEIGHTS_ONLY_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_NO_WEIGHTS_ONLY_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
# Records of a .pt2 (below its root folder, torch 2.13's layout) that torch.export.load would
# run as native code (AOTInductor) or unpickle with plain pickle (opaque / custom objects).
EXPORT_CODE_RECORDS = (
    "data/aotinductor/",
    "data/constants/opaque_obj_",
    "data/constants/custom_obj_",
)


def _tails(path: Path) -> set[str]:
    """The names inside a zip container, below its root folder (empty for a non-zip file)."""
    if not zipfile.is_zipfile(path):
        return set()
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise LoadError(f"{path.name}: corrupt zip container ({exc})") from exc
    return {name.split("/", 1)[1] if "/" in name else name for name in names}


def sniff_format(path: Path) -> str:
    """One of FORMATS, from the file's zip entries."""
    tails = _tails(path)
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "export"
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    return "state_dict"


def inspect_weights(path: Path, declared: str | None = None) -> str:
    """The weights' format; UnsafeWeights / LoadError if they cannot load safely."""
    fmt = declared or sniff_format(path)
    if fmt not in FORMATS:
        raise UsageError(f"config.format: expected one of {FORMATS}, got {fmt!r}")
    if fmt == "torchscript":
        # TorchScript archives hold TorchScript code and tensors, read by TorchScript's own
        # unpickler; the handler's own load in the next step proves they are readable.
        return fmt
    if fmt == "export":
        _check_export(path)
        return fmt
    _check_state_dict(path)
    return fmt


def _refused(path: Path, exc: pickle.UnpicklingError) -> UnsafeWeights:
    # torch's message is advice around one line naming what the pickle wanted (a GLOBAL);
    # that line is the reason, the advice (to load with weights_only=False) is not given.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if "GLOBAL" in line), lines[-1] if lines else "")
    return UnsafeWeights(
        f"{path.name}: refused by torch.load(weights_only=True), the file needs arbitrary "
        f"code to unpickle ({reason or type(exc).__name__}); save plain tensors (a state_dict, "
        "or torch.export without pickled objects), not Python objects"
    )


def _unreadable(path: Path, exc: Exception) -> LoadError:
    return LoadError(f"{path.name}: not a readable torch file ({type(exc).__name__}: {exc})")


def _check_state_dict(path: Path) -> None:
    """UnsafeWeights unless the file loads weights-only as a mapping of names to tensors."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy formats it still reads
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from exc
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... on corrupt files
        raise _unreadable(path, exc) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoadError(f"{path.name}: a state_dict file must hold a mapping of names to tensors")


def _check_export(path: Path) -> None:
    """UnsafeWeights when loading the .pt2 would run code or unpickle more than tensors."""
    code = sorted(t for t in _tails(path) if t.startswith(EXPORT_CODE_RECORDS))
    if code:
        raise UnsafeWeights(
            f"{path.name}: holds {code[0]}, which torch.export.load would run as native code "
            "or unpickle as arbitrary objects; export the model without AOTInductor packages "
            "or opaque / custom objects"
        )
    import torch

    try:
        with _weights_only_everywhere(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.load(str(path))
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from exc
    except Exception as exc:
        raise _unreadable(path, exc) from exc


@contextmanager
def _weights_only_everywhere() -> Iterator[None]:
    """Every torch.load inside is weights-only, whatever its call site passes.

    torch reads TORCH_FORCE_WEIGHTS_ONLY_LOAD on each call (and refuses to load when
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set too, so that one is lifted meanwhile).
    """
    saved = {
        name: os.environ.pop(name, None)
        for name in (FORCE_WEIGHTS_ONLY_ENV, FORCE_NO_WEIGHTS_ONLY_ENV)
    }
    os.environ[FORCE_WEIGHTS_ONLY_ENV] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
