"""The resource registry: which kinds the emulated API serves and how.

Built-in kinds are declared here once (those the operator and its tests touch); custom
resources are added and removed by :meth:`Registry.register_crd` when a CRD is created or
finally deleted. Discovery, routing, the Table printer and schema handling all read
:class:`ResourceInfo`; nothing else knows about plurals, short names or subresources.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
# The order the API server lists a custom resource's verbs in.
CUSTOM_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")


@dataclass(frozen=True)
class ScaleSpec:
    """Where a kind keeps its replica counts (the ``/scale`` subresource)."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = None


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    scale: ScaleSpec | None = None
    extra_subresources: tuple[str, ...] = ()
    # Only custom resources carry these: their structural schema and printer columns.
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    selectable_fields: tuple[str, ...] = ()
    crd_name: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are stored once per group+plural, whichever version served them."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def is_custom(self) -> bool:
        return self.crd_name is not None

    @property
    def verbs(self) -> tuple[str, ...]:
        if self.is_custom:
            return CUSTOM_VERBS
        if self.storage_key == ("", "namespaces"):  # no deletecollection of namespaces
            return tuple(v for v in VERBS if v != "deletecollection")
        return VERBS

    @property
    def subresources(self) -> tuple[str, ...]:
        names = list(self.extra_subresources)
        if self.status_subresource:
            names.append("status")
        if self.scale is not None:
            names.append("scale")
        return tuple(names)


def _core(plural: str, kind: str, **kwargs: Any) -> ResourceInfo:
    return ResourceInfo("", "v1", plural, kind.lower(), kind, **kwargs)


def _builtin(group: str, version: str, plural: str, kind: str, **kwargs: Any) -> ResourceInfo:
    return ResourceInfo(group, version, plural, kind.lower(), kind, **kwargs)


BUILTIN_RESOURCES: tuple[ResourceInfo, ...] = (
    _core(
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        status_subresource=True,
        extra_subresources=("finalize",),
    ),
    _core("configmaps", "ConfigMap", short_names=("cm",)),
    _core("secrets", "Secret"),
    _core("serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _core(
        "services", "Service", short_names=("svc",), categories=("all",), status_subresource=True
    ),
    _core("events", "Event", short_names=("ev",)),
    _builtin("events.k8s.io", "v1", "events", "Event", short_names=("ev",)),
    _builtin(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        status_subresource=True,
        scale=ScaleSpec(),
    ),
    _builtin(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        status_subresource=True,
        scale=ScaleSpec(),
    ),
    _builtin(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        status_subresource=True,
    ),
    _builtin(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        categories=("all",),
        status_subresource=True,
    ),
    _builtin(
        "autoscaling",
        "v1",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        categories=("all",),
        status_subresource=True,
    ),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease"),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        status_subresource=True,
    ),
)

# The preferred version of each built-in group (the first declared one otherwise).
PREFERRED_VERSIONS = {"autoscaling": "v2"}


class Registry:
    """All served resources, keyed by (group, version, plural)."""

    def __init__(self, resources: Iterable[ResourceInfo] = BUILTIN_RESOURCES) -> None:
        self._resources: dict[tuple[str, str, str], ResourceInfo] = {}
        self._preferred: dict[str, str] = dict(PREFERRED_VERSIONS)
        for info in resources:
            self.add(info)

    def add(self, info: ResourceInfo) -> None:
        self._resources[(info.group, info.version, info.plural)] = info
        self._preferred.setdefault(info.group, info.version)

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._resources.get((group, version, plural))

    def all(self) -> list[ResourceInfo]:
        return list(self._resources.values())

    def versions_of(self, group: str, plural: str) -> list[ResourceInfo]:
        return [r for r in self._resources.values() if (r.group, r.plural) == (group, plural)]

    def group_versions(self) -> dict[str, list[str]]:
        """Group name → served versions, preferred first (``""`` is the core group)."""
        groups: dict[str, list[str]] = {}
        for info in self._resources.values():
            versions = groups.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        for group, versions in groups.items():
            preferred = self._preferred.get(group)
            if preferred in versions:
                versions.remove(preferred)
                versions.insert(0, preferred)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [r for r in self._resources.values() if (r.group, r.version) == (group, version)]

    def by_kind(self, group: str, kind: str) -> ResourceInfo | None:
        for info in self._resources.values():
            if info.group == group and info.kind == kind:
                return info
        return None

    def register_crd(self, crd: dict[str, Any]) -> list[ResourceInfo]:
        """Serve every served version of a CRD (replacing what an older copy declared)."""
        self.unregister_crd(crd["metadata"]["name"])
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        infos = []
        versions = [v for v in spec.get("versions", []) if v.get("served", True)]
        # The storage version is the preferred one, as kubectl and kopf expect.
        versions.sort(key=lambda v: not v.get("storage", False))
        for version in versions:
            subresources = version.get("subresources") or {}
            scale = subresources.get("scale")
            info = ResourceInfo(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in subresources,
                scale=None
                if scale is None
                else ScaleSpec(
                    spec_replicas_path=scale.get("specReplicasPath", ".spec.replicas"),
                    status_replicas_path=scale.get("statusReplicasPath", ".status.replicas"),
                    label_selector_path=scale.get("labelSelectorPath"),
                ),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                selectable_fields=tuple(
                    f["jsonPath"].lstrip(".") for f in version.get("selectableFields") or ()
                ),
                crd_name=crd["metadata"]["name"],
            )
            self.add(info)
            infos.append(info)
        if infos:
            self._preferred.setdefault(spec["group"], infos[0].version)
        return infos

    def unregister_crd(self, crd_name: str) -> list[ResourceInfo]:
        removed = [r for r in self._resources.values() if r.crd_name == crd_name]
        for info in removed:
            del self._resources[(info.group, info.version, info.plural)]
        for info in removed:
            if not any(r.group == info.group for r in self._resources.values()):
                self._preferred.pop(info.group, None)
        return removed


# Storage keys of the built-in kinds that the emulator's own controllers react to.
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
DEPLOYMENT_KEY = ("apps", "deployments")
REPLICASET_KEY = ("apps", "replicasets")
