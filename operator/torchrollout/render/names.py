"""Names and labels of everything the operator creates for a ModelDeployment.

One place decides them, so renderers, routers, the operator and the chart's monitors agree:
a Deployment and a ConfigMap `NAME-REVISION` per revision, Services `NAME`, `NAME-stable`
and `NAME-canary`, and pods labelled with deployment, revision and version.
"""

from __future__ import annotations

from typing import Any

from torchrollout.spec.document import ModelDeployment

DEPLOYMENT_LABEL = "torchrollout.io/deployment"
REVISION_LABEL = "torchrollout.io/revision"
VERSION_LABEL = "torchrollout.io/version"
ROLE_LABEL = "torchrollout.io/role"
MANAGED_BY = {"app.kubernetes.io/managed-by": "torchrollout"}

INFERENCE_PORT = 8080
MANAGEMENT_PORT = 8081
METRICS_PORT = 8082
SERVICE_PORT = 80
HANDLERS_DIR = "/opt/torchrollout/model-handlers"
MODEL_STORE = "/models"
CONFIG_DIR = "/config"


def revision_name(md: ModelDeployment, revision: str) -> str:
    """The Deployment and ConfigMap of one revision."""
    return f"{md.metadata.name}-{revision}"


def stable_service(md: ModelDeployment) -> str:
    return f"{md.metadata.name}-stable"


def canary_service(md: ModelDeployment) -> str:
    return f"{md.metadata.name}-canary"


def selector(md: ModelDeployment, revision: str | None = None) -> dict[str, str]:
    """Pods of the whole ModelDeployment, or of one revision."""
    labels = {DEPLOYMENT_LABEL: md.metadata.name}
    if revision is not None:
        labels[REVISION_LABEL] = revision
    return labels


def labels(
    md: ModelDeployment, revision: str | None = None, version: str | None = None
) -> dict[str, str]:
    out = {"app.kubernetes.io/name": md.metadata.name, **MANAGED_BY, **selector(md, revision)}
    if version is not None:
        out[VERSION_LABEL] = version
    return out


def metadata(md: ModelDeployment, name: str, **extra: Any) -> dict[str, Any]:
    """Metadata of a child: its name and namespace, labels, and the owner reference."""
    owner = {
        "apiVersion": md.api_version,
        "kind": md.kind,
        "name": md.metadata.name,
        "uid": md.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    meta: dict[str, Any] = {
        "name": name,
        "namespace": md.metadata.namespace,
        "labels": labels(md),
        "ownerReferences": [owner] if md.metadata.uid else [],
    }
    for key, value in extra.items():
        meta[key] = {**meta.get(key, {}), **value} if isinstance(value, dict) else value
    if not meta["ownerReferences"]:
        del meta["ownerReferences"]
    return meta
