"""Model archives: fetch weights, verify them, pack a TorchServe .mar, smoke-test it, serve it.

Modules: `fetch` (sources, sha256), `weights` (format, safety), `handlers` (where the built-in
handlers live), `build` (the step-by-step build), `store` (the archive store: one build per
revision, fetched and verified by every pod), `smoke` (in-process load + sample run),
`torchserve` (start / stop a real TorchServe on loopback), `cli` (`torchrollout archive`),
`errors` (the exception tree). No module imports torch, ts or model_archiver at import time
(they are imported inside the functions that need them), so the CLI starts fast.
"""

from __future__ import annotations

from torchrollout.archive.errors import (
    ArchiveDigestMismatch,
    ArchiveError,
    ArchiveMissing,
    DigestMismatch,
    FetchError,
    LoadError,
    PackError,
    PublishError,
    SmokeTestFailed,
    StoreError,
    UnsafeArchive,
    UnsafeWeights,
    UsageError,
)

__all__ = [
    "ArchiveDigestMismatch",
    "ArchiveError",
    "ArchiveMissing",
    "DigestMismatch",
    "FetchError",
    "LoadError",
    "PackError",
    "PublishError",
    "SmokeTestFailed",
    "StoreError",
    "UnsafeArchive",
    "UnsafeWeights",
    "UsageError",
]
