"""What a kubelet would do with one container of a kwok pod: run it here, report its end.

kwok schedules and runs pods only on paper. For an archive build Job (which kwok leaves
Running, see tests/kube_cluster/cluster.py) the test runs the container's real command
(`torchrollout archive build ...`) on this machine with the container's environment, its
ConfigMap volume materialised in a folder and its emptyDirs as folders, then writes the pod's
terminated state as Kubernetes does: the termination-message file, or the tail of the log
when the container failed (`FallbackToLogsOnError`).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.conftest import BIN, ROOT
from torchrollout.render import names

# What the image holds, here: the handlers the Dockerfile copies in.
IMAGE_FILES = {names.HANDLERS_DIR: ROOT / "model-handlers"}


@dataclass(frozen=True)
class Ran:
    exit_code: int
    output: str
    message: str


def _volume_paths(
    core: client.CoreV1Api, namespace: str, pod: dict[str, Any], root: Path
) -> dict[str, Path]:
    """Each volume of the pod as a local folder: ConfigMaps written out, emptyDirs empty."""
    paths = {}
    for volume in pod["spec"].get("volumes") or []:
        folder = root / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            data = core.read_namespaced_config_map(volume["configMap"]["name"], namespace).data
            for key, value in (data or {}).items():
                (folder / key).write_text(value)
        paths[volume["name"]] = folder
    return paths


def run_container(
    api_client: client.ApiClient,
    namespace: str,
    pod: dict[str, Any],
    container: dict[str, Any],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
) -> Ran:
    """Run `container` of `pod` here; its mount paths map to local folders."""
    core = client.CoreV1Api(api_client)
    volumes = _volume_paths(core, namespace, pod, workdir / "volumes")
    mounts = dict(IMAGE_FILES)
    mounts.update({m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []})
    message_file = workdir / "termination-log"
    message_file.write_text("")
    mounts[container.get("terminationMessagePath", "/dev/termination-log")] = message_file

    def local(value: str) -> str:
        for path, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if value == path or value.startswith(path + "/"):
                return str(folder) + value[len(path) :]
        return value

    variables = {e["name"]: local(e["value"]) for e in container.get("env") or [] if "value" in e}
    done = subprocess.run(
        [str(BIN / container["command"][0]), *(local(a) for a in container.get("args") or [])],
        capture_output=True,
        text=True,
        env={**os.environ, **variables, **(env or {})},
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    message = message_file.read_text()
    if done.returncode != 0 and not message.strip():
        message = "\n".join(output.strip().splitlines()[-80:])[-4096:]
    return Ran(done.returncode, output, message)


def finish_pod(api_client: client.ApiClient, namespace: str, pod: dict[str, Any], ran: Ran) -> None:
    """Write the pod's end as its kubelet would: phase, and the container's terminated state."""
    succeeded = ran.exit_code == 0
    container = pod["spec"]["containers"][0]
    status = {
        "phase": "Succeeded" if succeeded else "Failed",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": ran.exit_code,
                        "reason": "Completed" if succeeded else "Error",
                        "message": ran.message,
                    }
                },
            }
        ],
    }
    client.CoreV1Api(api_client).patch_namespaced_pod_status(
        pod["metadata"]["name"], namespace, {"status": status}
    )
