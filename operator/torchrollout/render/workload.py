"""The pods of one revision: its TorchServe ConfigMap and its Deployment.

The init container runs `torchrollout archive build` (fetch, verify sha256, pack, smoke
test) into an emptyDir, so a broken model fails there and never reaches traffic. The
TorchServe container serves inference and metrics only: management is bound to localhost
and the model API is off (models load at start). Pods run as non-root with a read-only
root filesystem; spec strings are passed as arguments, never through a shell.
"""

from __future__ import annotations

import json
from typing import Any

from torchrollout.render import names
from torchrollout.spec.document import ModelDeployment, compute_revision

PVC_ROOT = "/mnt/pvc"
RUN_AS = 1000


def torchserve_properties(md: ModelDeployment) -> str:
    """TorchServe's config.properties for this ModelDeployment's revision."""
    model, runtime = md.spec.model, md.spec.runtime
    workers = runtime.workers_per_replica
    models = {
        md.model_name: {
            model.version: {
                "defaultVersion": True,
                "marName": f"{md.model_name}.mar",
                "minWorkers": workers,
                "maxWorkers": workers,
                "batchSize": model.batching.max_batch_size,
                "maxBatchDelay": model.batching.max_batch_delay_ms,
                "responseTimeout": 120,
            }
        }
    }
    lines = [
        f"inference_address=http://0.0.0.0:{names.INFERENCE_PORT}",
        f"management_address=http://127.0.0.1:{names.MANAGEMENT_PORT}",
        f"metrics_address=http://0.0.0.0:{names.METRICS_PORT}",
        "enable_model_api=false",
        "disable_token_authorization=true",
        "metrics_mode=prometheus",
        f"metrics_config={names.HANDLERS_DIR}/metrics.yaml",
        f"model_store={names.MODEL_STORE}",
        f"load_models={md.model_name}.mar",
        f"default_workers_per_model={workers}",
        "install_py_dep_per_model=false",
        f"models={json.dumps(models, separators=(',', ':'))}",
    ]
    return "\n".join(lines) + "\n"


def render_config_map(md: ModelDeployment) -> dict[str, Any]:
    revision = compute_revision(md.spec)
    data = {
        "config.properties": torchserve_properties(md),
        "model-config.json": json.dumps(md.spec.model.config, indent=2, sort_keys=True),
    }
    if md.spec.model.sample_input is not None:
        data["sample-input.json"] = json.dumps(md.spec.model.sample_input, indent=2)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": names.metadata(
            md, names.revision_name(md, revision), labels={names.REVISION_LABEL: revision}
        ),
        "data": data,
    }


def _local_path(uri: str) -> tuple[str, dict[str, Any] | None]:
    """The path the init container reads, and the volume a pvc:// source needs."""
    if uri.startswith("pvc://"):
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        volume = {
            "name": f"pvc-{claim}"[:63],
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        return f"pvc://{claim}/{path}", volume
    return uri, None


def _archive_args(md: ModelDeployment) -> list[str]:
    model = md.spec.model
    source, _ = _local_path(model.source.uri)
    args = [
        "archive",
        "build",
        "--source",
        source,
        "--handler",
        model.handler,
        "--config",
        f"{names.CONFIG_DIR}/model-config.json",
        "--name",
        md.model_name,
        "--version",
        model.version,
        "--output",
        names.MODEL_STORE,
        "--batch-size",
        str(model.batching.max_batch_size),
        "--max-batch-delay",
        str(model.batching.max_batch_delay_ms),
    ]
    if model.source.sha256:
        args += ["--sha256", model.source.sha256]
    if model.sample_input is not None:
        args += ["--sample-input", f"{names.CONFIG_DIR}/sample-input.json"]
    return args


_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/ping", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def render_deployment(md: ModelDeployment, *, replicas: int) -> dict[str, Any]:
    """The Deployment of the spec's revision, at `replicas`."""
    revision = compute_revision(md.spec)
    model, runtime = md.spec.model, md.spec.runtime
    name = names.revision_name(md, revision)
    pod_labels = names.labels(md, revision, model.version)
    mounts = [
        {"name": "models", "mountPath": names.MODEL_STORE},
        {"name": "config", "mountPath": names.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {}},
        {"name": "config", "configMap": {"name": name}},
        {"name": "tmp", "emptyDir": {}},
    ]
    init_mounts = list(mounts)
    _, pvc = _local_path(model.source.uri)
    if pvc is not None:
        volumes.append(pvc)
        claim = pvc["persistentVolumeClaim"]["claimName"]
        init_mounts.append(
            {"name": pvc["name"], "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True}
        )
    env = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "LOG_LOCATION", "value": "/tmp/logs"},
        {"name": "METRICS_LOCATION", "value": "/tmp/logs"},
        {"name": "TORCHROLLOUT_PVC_ROOT", "value": PVC_ROOT},
        {"name": "TORCHROLLOUT_HANDLERS_DIR", "value": names.HANDLERS_DIR},
    ]
    resources = runtime.resources.model_dump(by_alias=True)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": names.metadata(
            md, name, labels={names.REVISION_LABEL: revision, names.VERSION_LABEL: model.version}
        ),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": names.selector(md, revision)},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [
                        {
                            "name": "archive",
                            "image": runtime.image,
                            "command": ["torchrollout"],
                            "args": _archive_args(md),
                            "env": env,
                            "resources": resources,
                            "securityContext": _SECURITY,
                            "volumeMounts": init_mounts,
                        }
                    ],
                    "containers": [
                        {
                            "name": "torchserve",
                            "image": runtime.image,
                            "command": ["torchserve"],
                            "args": [
                                "--start",
                                "--foreground",
                                "--disable-token-auth",
                                "--ncs",
                                "--ts-config",
                                f"{names.CONFIG_DIR}/config.properties",
                                "--model-store",
                                names.MODEL_STORE,
                            ],
                            "env": env,
                            "ports": [
                                {
                                    "name": "http",
                                    "containerPort": names.INFERENCE_PORT,
                                    "protocol": "TCP",
                                },
                                {
                                    "name": "metrics",
                                    "containerPort": names.METRICS_PORT,
                                    "protocol": "TCP",
                                },
                            ],
                            "startupProbe": _probe(period=5, failures=60),
                            "readinessProbe": _probe(period=5, failures=3),
                            "livenessProbe": _probe(period=10, failures=3),
                            "resources": resources,
                            "securityContext": _SECURITY,
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
    }
    # The two containers share env, mounts and settings: give each its own copy, so a
    # caller editing one container never edits the other.
    copied: dict[str, Any] = json.loads(json.dumps(deployment))
    return copied
