"""Compare two runs' answers to the same requests, e.g. fp32 on the CPU against bf16 or a GPU.

Used by tests/handlers/test_devices.py and bench/gpu_check.py. Numbers must agree within a
tolerance; classes (and anomaly flags) must be equal, except at a near tie, where the
reference's two best probabilities (or its score and threshold) are within the tolerance
and rounding may fairly pick the other side.
"""

from __future__ import annotations

from typing import Any


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol * max(1.0, abs(a))
    return bool(a == b)


def _near_tie(reference: dict[str, Any], tol: float) -> bool:
    if "probabilities" in reference:
        best = sorted(reference["probabilities"], reverse=True)
        return len(best) > 1 and best[0] - best[1] <= tol
    if "score" in reference:
        return abs(reference["score"] - reference["threshold"]) <= tol * reference["threshold"]
    return False


def differences(reference: Any, other: Any, tol: float, path: str = "") -> list[str]:
    """Where `other` differs from `reference` beyond `tol` (relative above 1), as
    `path: reference != other` lines; empty when they agree."""
    if isinstance(reference, dict) and isinstance(other, dict):
        if set(reference) != set(other):
            return [f"{path}: keys {sorted(reference)} != {sorted(other)}"]
        tie = _near_tie(reference, tol)
        found = []
        for key, value in reference.items():
            if tie and key in ("prediction", "action", "anomaly"):
                continue  # rounding may pick the other class at a tie
            found += differences(value, other[key], tol, f"{path}.{key}")
        return found
    if isinstance(reference, list) and isinstance(other, list) and len(reference) == len(other):
        if all(isinstance(v, float) for v in reference):
            return [] if _close(reference, other, tol) else [f"{path}: {reference} != {other}"]
        found = []
        for k, (a, b) in enumerate(zip(reference, other, strict=True)):
            found += differences(a, b, tol, f"{path}[{k}]")
        return found
    return [] if _close(reference, other, tol) else [f"{path}: {reference!r} != {other!r}"]
