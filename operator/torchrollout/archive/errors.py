"""The archive builder's exceptions: one tree, each error naming the step that failed.

    ArchiveError               base; `.step` is the failing step, shown by the CLI
    ├── UsageError             step "config": bad arguments (unknown handler, unreadable config)
    ├── FetchError             step "fetch": the source could not be downloaded or read
    ├── DigestMismatch         step "verify": the bytes do not have the expected sha256
    │   └── ArchiveDigestMismatch  step "digest": an archive in the store is other bytes
    ├── UnsafeWeights          step "load": the weights need code to unpickle (weights_only)
    ├── UnsafeArchive          step "load": a zip member would land outside its folder, or is a link
    ├── LoadError              step "load": the weights do not load into the handler's model
    ├── PackError              step "pack": torch-model-archiver failed
    ├── SmokeTestFailed        step "smoke-test": the archive loaded but the sample input failed
    ├── PublishError           step "publish": a local result could not be written (--digest-file)
    └── StoreError             step "store": the archive store cannot be reached, read or written
        └── ArchiveMissing     step "store": no archive at the store path (its build is not done)

Third-party errors (httpx, botocore, torch, model_archiver, ts) are translated into these
where they are raised (`raise FetchError(...) from exc`), never further up.
"""

from __future__ import annotations


class ArchiveError(Exception):
    """Building an archive failed at `step`."""

    step = "build"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.step}: {self.message}"


class UsageError(ArchiveError):
    step = "config"


class FetchError(ArchiveError):
    step = "fetch"


class DigestMismatch(ArchiveError):
    step = "verify"

    def __init__(self, *, expected: str, actual: str, source: str) -> None:
        super().__init__(f"sha256 of {source} is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class UnsafeWeights(ArchiveError):
    step = "load"


class UnsafeArchive(ArchiveError):
    """An archive to extract names a member outside the target folder, or a symbolic link."""

    step = "load"


class LoadError(ArchiveError):
    step = "load"


class PackError(ArchiveError):
    step = "pack"


class SmokeTestFailed(ArchiveError):
    step = "smoke-test"


class PublishError(ArchiveError):
    step = "publish"


class ArchiveDigestMismatch(DigestMismatch):
    """An archive read from the store does not have the digest its build recorded."""

    step = "digest"

    def __init__(self, *, expected: str, actual: str, source: str) -> None:
        super().__init__(expected=expected, actual=actual, source=source)
        self.message = f"{source} has sha256 {actual}, expected {expected}"
        self.args = (self.message,)


class StoreError(ArchiveError):
    step = "store"


class ArchiveMissing(StoreError):
    """The archive is not (yet) in the store."""
