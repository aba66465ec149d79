"""Discovery documents: /api, /apis, group versions, /version and the OpenAPI stubs.

Built from the :class:`Registry`, so CRDs appear and disappear with their resources. The
aggregated discovery format (apidiscovery.k8s.io/v2) is not offered: clients that ask for it
get the legacy documents with a plain ``application/json`` type and fall back, as they do
against older servers. OpenAPI: ``/openapi/v2`` is an empty document (kubectl then finds no
schema for any kind and skips client-side validation instead of failing); ``/openapi/v3`` is
absent, so kubectl does not expect server-side field validation metadata.
"""

from __future__ import annotations

from typing import Any

from .resources import Registry, ResourceInfo

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "37",
    "emulationMajor": "1",
    "emulationMinor": "37",
    "gitVersion": "v1.37.0-torchrollout-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
OPENAPI_V2_JSON = {
    "swagger": "2.0",
    "info": {"title": "Kubernetes (emulated)", "version": "v1.37.0"},
    "paths": {},
    "definitions": {},
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [
        _group(name, versions)
        for name, versions in sorted(registry.group_versions().items())
        if name  # the core group is served under /api, not /apis
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, name: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(name)
    if not name or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _resource_entries(info: ResourceInfo) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": info.plural,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        main["shortNames"] = list(info.short_names)
    if info.categories:
        main["categories"] = list(info.categories)
    entries = [main]
    for sub in info.subresources:
        entry: dict[str, Any] = {
            "name": f"{info.plural}/{sub}",
            "singularName": "",
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": ["get", "patch", "update"],
        }
        if sub == "scale":
            entry.update(group="autoscaling", version="v1", kind="Scale")
        if sub == "finalize":
            entry["verbs"] = ["update"]
        entries.append(entry)
    return entries


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    infos = registry.in_group_version(group, version)
    if not infos:
        return None
    resources = [
        entry for info in sorted(infos, key=lambda i: i.plural) for entry in _resource_entries(info)
    ]
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
