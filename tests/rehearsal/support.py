"""Helpers shared by the rehearsal tests: resources written to disk, leftover detection."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

POLICY: dict[str, Any] = {
    "steps": [25, 50],
    "interval": "5s",
    "analysis": {
        "metrics": [
            {"template": "accuracy", "min": 0.85, "maxDropVsStable": 0.05},
            {"template": "error-rate", "max": 0.05},
        ],
        "minSamples": 20,
        "failureLimit": 2,
    },
}


def deployment(
    version: str,
    *,
    source: str = "models/model.pt",
    name: str = "market-trend",
    canary: dict[str, Any] | None = None,
    replicas: int = 3,
    traffic: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ModelDeployment document for the sequence classifier at `version`."""
    document: dict[str, Any] = {
        "apiVersion": "torchrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "rehearsal"},
        "spec": {
            "model": {
                "version": version,
                "source": {"uri": source},
                "handler": "sequence-classifier",
            },
            "runtime": {"replicas": replicas},  # 3: the replicas router gives 25% and 50%
            "canary": POLICY if canary is None else canary,
        },
    }
    if traffic is not None:
        document["spec"]["traffic"] = traffic
    return document


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def processes_using(folder: Path) -> list[str]:
    """Processes whose command line or working directory lies under `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            cwd = str((entry / "cwd").readlink())
        except OSError:  # exited meanwhile, or a zombie without a cwd
            continue
        cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace")
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(f"pid {entry.name} (cwd {cwd}): {cmdline[:300]}")
    return found


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
