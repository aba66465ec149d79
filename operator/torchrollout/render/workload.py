"""The pods of one revision: its TorchServe ConfigMap, its Deployment, its archive build Job.

Without an archive store, each pod's init container runs `torchrollout archive build`
(fetch, verify sha256, pack, smoke test) into an emptyDir, so a broken model fails there and
never reaches traffic. With a store, one Job per revision runs that build once and writes
the archive and its sha256 to the store; the pods' init container only runs `torchrollout
archive fetch`, which refuses an archive whose digest differs from the one the Job reported.
The TorchServe container serves inference and metrics only: management is bound to
localhost and the model API is off (models load at start). Pods run as non-root with a
read-only root filesystem; spec strings are passed as arguments, never through a shell.
`spec.runtime`'s pod settings (credentials, identity, placement, labels) apply to the
model pods and to the build Job's pod alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from torchrollout.render import names
from torchrollout.spec.document import ModelDeployment, compute_revision
from torchrollout.spec.status import ArchiveRecord

PVC_ROOT = "/mnt/pvc"
RUN_AS = 1000
GPU_RESOURCE = "nvidia.com/gpu"
TOKEN_ENV = "TORCHROLLOUT_HTTPS_TOKEN"
BUILD_COMPONENT = "archive-build"
COMPONENT_LABEL = "torchrollout.io/component"
ARCHIVE_OF_LABEL = "torchrollout.io/archive-of"
TERMINATION_LOG = "/dev/termination-log"


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
        f"number_of_gpu={runtime.gpus}",
        "install_py_dep_per_model=false",
        f"models={json.dumps(models, separators=(',', ':'))}",
    ]
    return "\n".join(lines) + "\n"


def render_config_map(md: ModelDeployment) -> dict[str, Any]:
    revision = compute_revision(md.spec)
    # As JSON, like the revision reads them: YAML may give dates, which the API server
    # would have stored as strings.
    model = md.spec.model.model_dump(mode="json", include={"config", "sample_input"})
    data = {
        "config.properties": torchserve_properties(md),
        "model-config.json": json.dumps(model["config"], indent=2, sort_keys=True),
    }
    if md.spec.model.sample_input is not None:
        data["sample-input.json"] = json.dumps(model["sample_input"], indent=2)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": names.metadata(
            md, names.revision_name(md, revision), labels={names.REVISION_LABEL: revision}
        ),
        "data": data,
    }


def _pvc_volume(uri: str, *, read_only: bool) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The volume and the mount a pvc:// URI needs, None for other URIs."""
    if not uri.startswith("pvc://"):
        return None
    claim = uri.removeprefix("pvc://").partition("/")[0]
    name = _pvc_volume_name(claim)
    volume = {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
    mount = {"name": name, "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": read_only}
    return volume, mount


def _pvc_volume_name(claim: str) -> str:
    """A volume name (a DNS label) for `claim`: `pvc-CLAIM` when that is one, else `pvc-`
    and a digest of the claim's name (a claim may be longer than a label, or hold dots)."""
    name = f"pvc-{claim}"
    if len(name) <= 63 and "." not in name:
        return name
    return f"pvc-{hashlib.sha256(claim.encode()).hexdigest()[:16]}"


def _build_args(md: ModelDeployment) -> list[str]:
    model = md.spec.model
    args = [
        "archive",
        "build",
        "--source",
        model.source.uri,
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


def _fetch_args(md: ModelDeployment, archive: ArchiveRecord) -> list[str]:
    return [
        "archive",
        "fetch",
        "--store",
        archive.store,
        "--name",
        md.model_name,
        "--revision",
        archive.revision,
        "--sha256",
        archive.sha256,
        "--output",
        names.MODEL_STORE,
    ]


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


def _base_env(md: ModelDeployment) -> list[dict[str, Any]]:
    """Our variables first, then the user's `runtime.env` (a user value wins: it comes last)."""
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "LOG_LOCATION", "value": "/tmp/logs"},
        {"name": "METRICS_LOCATION", "value": "/tmp/logs"},
        {"name": "TORCHROLLOUT_PVC_ROOT", "value": PVC_ROOT},
        {"name": "TORCHROLLOUT_HANDLERS_DIR", "value": names.HANDLERS_DIR},
    ]
    return env + [e.model_dump(by_alias=True, exclude_none=True) for e in md.spec.runtime.env]


def _builder_env(md: ModelDeployment) -> list[dict[str, Any]]:
    """The environment of whatever fetches the weights: the base one, plus an https token."""
    env = _base_env(md)
    token = md.spec.model.source.token_secret_ref
    if token is not None:
        env.append(
            {
                "name": TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}},
            }
        )
    return env


def _resources(md: ModelDeployment, *, gpus: bool) -> dict[str, Any]:
    resources: dict[str, Any] = md.spec.runtime.resources.model_dump(by_alias=True)
    if gpus and md.spec.runtime.gpus:
        resources["limits"] = {**resources["limits"], GPU_RESOURCE: str(md.spec.runtime.gpus)}
    return resources


def _pod_spec(
    md: ModelDeployment,
    revision: str,
    *,
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """A pod spec with the sandboxing every pod gets and `spec.runtime`'s pod settings."""
    runtime = md.spec.runtime
    for container in containers + init_containers:
        if runtime.env_from:
            container["envFrom"] = [
                e.model_dump(by_alias=True, exclude_none=True) for e in runtime.env_from
            ]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if init_containers:
        pod["initContainers"] = init_containers
    pod["containers"] = containers
    pod["volumes"] = volumes
    if runtime.service_account_name:
        pod["serviceAccountName"] = runtime.service_account_name
    if runtime.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in runtime.image_pull_secrets]
    if runtime.node_selector:
        pod["nodeSelector"] = dict(runtime.node_selector)
    if runtime.tolerations:
        pod["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in runtime.tolerations
        ]
    if runtime.affinity:
        pod["affinity"] = runtime.affinity
    if runtime.topology_spread_constraints:
        pod["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": names.selector(md, revision)}}
            | c.model_dump(by_alias=True, exclude_none=True)
            for c in runtime.topology_spread_constraints
        ]
    if runtime.priority_class_name:
        pod["priorityClassName"] = runtime.priority_class_name
    return pod


def _pod_metadata(md: ModelDeployment, labels: dict[str, str]) -> dict[str, Any]:
    runtime = md.spec.runtime
    meta: dict[str, Any] = {"labels": {**runtime.pod_labels, **labels}}
    if runtime.pod_annotations:
        meta["annotations"] = dict(runtime.pod_annotations)
    return meta


def render_deployment(
    md: ModelDeployment, *, replicas: int, archive: ArchiveRecord | None = None
) -> dict[str, Any]:
    """The Deployment of the spec's revision, at `replicas`.

    With `archive` (the revision's archive in the store) the init container fetches and
    verifies it; without, it builds the archive itself.
    """
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
    pvc = _pvc_volume(archive.store if archive else model.source.uri, read_only=True)
    if pvc is not None:
        volumes.append(pvc[0])
        init_mounts.append(pvc[1])
    if archive is not None:
        init_args, init_env = _fetch_args(md, archive), _base_env(md)
    else:
        init_args, init_env = _build_args(md), _builder_env(md)
    init = {
        "name": "archive",
        "image": runtime.image,
        "command": ["torchrollout"],
        "args": init_args,
        "env": init_env,
        "resources": _resources(md, gpus=False),
        "securityContext": _SECURITY,
        "volumeMounts": init_mounts,
    }
    torchserve = {
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
        "env": _base_env(md),
        "ports": [
            {"name": "http", "containerPort": names.INFERENCE_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": names.METRICS_PORT, "protocol": "TCP"},
        ],
        "startupProbe": _probe(period=5, failures=60),
        "readinessProbe": _probe(period=5, failures=3),
        "livenessProbe": _probe(period=10, failures=3),
        "resources": _resources(md, gpus=True),
        "securityContext": _SECURITY,
        "volumeMounts": mounts,
    }
    pod = _pod_spec(md, revision, containers=[torchserve], init_containers=[init], volumes=volumes)
    pod["terminationGracePeriodSeconds"] = 30
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
            "template": {"metadata": _pod_metadata(md, pod_labels), "spec": pod},
        },
    }
    return _copied(deployment)


def archive_job_labels(md: ModelDeployment, revision: str) -> dict[str, str]:
    """Labels of a build Job and its pod: not the Services' selector, so it gets no traffic."""
    return {
        "app.kubernetes.io/name": md.metadata.name,
        **names.MANAGED_BY,
        COMPONENT_LABEL: BUILD_COMPONENT,
        ARCHIVE_OF_LABEL: md.metadata.name,
        names.REVISION_LABEL: revision,
    }


def render_archive_job(md: ModelDeployment, *, store: str) -> dict[str, Any]:
    """The Job that builds the spec's revision's archive once, into `store`.

    It runs the same `torchrollout archive build` as the init container, with the same image,
    sandbox and pod settings, and writes the archive's sha256 to its termination message;
    on failure Kubernetes puts the tail of its log there instead.
    """
    revision = compute_revision(md.spec)
    runtime = md.spec.runtime
    name = names.revision_name(md, revision)
    mounts = [
        {"name": "config", "mountPath": names.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "output", "mountPath": names.MODEL_STORE},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": name}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "output", "emptyDir": {}},
    ]
    # The store is written; a source on the same claim shares its (writable) volume.
    claims = [
        pvc
        for pvc in (
            _pvc_volume(store, read_only=False),
            _pvc_volume(md.spec.model.source.uri, read_only=True),
        )
        if pvc is not None
    ]
    for volume, mount in claims:
        if volume["name"] not in {v["name"] for v in volumes}:
            volumes.append(volume)
            mounts.append(mount)
    build = {
        "name": "build",
        "image": runtime.image,
        "command": ["torchrollout"],
        "args": [
            *_build_args(md),
            "--store",
            store,
            "--revision",
            revision,
            "--digest-file",
            TERMINATION_LOG,
        ],
        "env": _builder_env(md),
        "resources": _resources(md, gpus=False),
        "securityContext": _SECURITY,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    labels = archive_job_labels(md, revision)
    pod = _pod_spec(md, revision, containers=[build], init_containers=[], volumes=volumes)
    pod["restartPolicy"] = "Never"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": names.metadata(md, name, labels=labels),
        "spec": {
            # A build that fails on its own (exit 1: a bad source or model, 2: bad options)
            # fails again if retried: fail at once. A killed or evicted pod is tried again.
            "backoffLimit": 2,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "build",
                            "operator": "In",
                            "values": [1, 2],
                        },
                    }
                ]
            },
            "activeDeadlineSeconds": 3600,
            "template": {"metadata": _pod_metadata(md, labels), "spec": pod},
        },
    }
    return _copied(job)


def _copied(obj: dict[str, Any]) -> dict[str, Any]:
    # Containers share env, mounts and settings: give each its own copy, so a caller
    # editing one container never edits the other.
    copied: dict[str, Any] = json.loads(json.dumps(obj))
    return copied
