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
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

from torchrollout.archive.errors import LoadError, UnsafeWeights, UsageError

FORMATS = ("state_dict", "torchscript", "export")


def sniff_format(path: Path) -> str:
    """One of FORMATS, from the file's zip entries."""
    if not zipfile.is_zipfile(path):
        return "state_dict"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise LoadError(f"{path.name}: corrupt zip container ({exc})") from exc
    tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "export"
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    return "state_dict"


def inspect_weights(path: Path, declared: str | None = None) -> str:
    """The weights' format; UnsafeWeights / LoadError if a state_dict cannot load safely."""
    fmt = declared or sniff_format(path)
    if fmt not in FORMATS:
        raise UsageError(f"config.format: expected one of {FORMATS}, got {fmt!r}")
    if fmt != "state_dict":
        # TorchScript and export archives hold TorchScript code / graphs, not pickled Python;
        # the handler's own load in the next step proves they are readable.
        return fmt
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy formats it still reads
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UnsafeWeights(
            f"{path.name}: refused by torch.load(weights_only=True), the file needs arbitrary "
            f"code to unpickle ({first})"
        ) from exc
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... on corrupt files
        raise LoadError(
            f"{path.name}: not a readable torch file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoadError(f"{path.name}: a state_dict file must hold a mapping of names to tensors")
    return fmt
