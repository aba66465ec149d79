"""What every namespace of a real cluster holds: the ``kube-root-ca.crt`` ConfigMap (the
root-CA publisher's) and the ``default`` ServiceAccount (the service-account controller's).

A store listener: when a namespace is added, or one of these objects is deleted while its
namespace is active, it creates them again, as those controllers of kube-controller-manager
do. It writes synchronously, so a namespace is populated by the time its creation returns
(a real cluster needs a moment; clients that depend on these objects wait for them).
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import ApiError
from .operations import Operations
from .resources import NAMESPACE_KEY
from .store import Store, WatchEvent

logger = logging.getLogger(__name__)

ROOT_CA = "kube-root-ca.crt"
DEFAULT_ACCOUNT = "default"
CONFIGMAP_KEY = ("", "configmaps")
SERVICE_ACCOUNT_KEY = ("", "serviceaccounts")
# The emulator serves plain HTTP: there is no CA, so the bundle is a clearly fake one.
ROOT_CA_BUNDLE = (
    "-----BEGIN CERTIFICATE-----\nZW11bGF0b3I6IG5vIFRMUywgbm8gQ0E=\n-----END CERTIFICATE-----\n"
)
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters."
)


def _root_ca() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ROOT_CA,
            "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
        },
        "data": {"ca.crt": ROOT_CA_BUNDLE},
    }


def _default_account() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DEFAULT_ACCOUNT}}


class NamespacePopulator:
    """Keeps the root CA ConfigMap and the default ServiceAccount in every active namespace."""

    def __init__(self, store: Store, ops: Operations) -> None:
        self.store = store
        self.ops = ops
        store.listeners.append(self._on_event)

    def _on_event(self, event: WatchEvent) -> None:
        meta = event.obj["metadata"]
        if event.key == NAMESPACE_KEY and event.type == "ADDED":
            self._ensure(meta["name"], CONFIGMAP_KEY, _root_ca())
            self._ensure(meta["name"], SERVICE_ACCOUNT_KEY, _default_account())
        elif event.type == "DELETED" and (event.key, meta["name"]) in (
            (CONFIGMAP_KEY, ROOT_CA),
            (SERVICE_ACCOUNT_KEY, DEFAULT_ACCOUNT),
        ):
            body = _root_ca() if event.key == CONFIGMAP_KEY else _default_account()
            self._ensure(meta.get("namespace") or "", event.key, body)

    def _ensure(self, namespace: str, key: tuple[str, str], body: dict[str, Any]) -> None:
        ns = self.store.get(NAMESPACE_KEY, "", namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return  # a terminating namespace is being emptied: nothing comes back
        if self.store.get(key, namespace, body["metadata"]["name"]) is not None:
            return
        info = self.ops.registry.lookup("", "v1", key[1])
        assert info is not None
        try:
            self.ops.create(info, namespace, body)
        except ApiError as exc:
            logger.debug("could not populate namespace %s: %s", namespace, exc)
