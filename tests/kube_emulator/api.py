"""The REST surface: paths, verbs, content negotiation and query parameters.

Parses ``/api/v1/...`` and ``/apis/{group}/{version}/...`` into a resource, namespace, name and
subresource; picks the operation by verb; reads bodies (JSON or YAML; protobuf gets a clean
415); renders objects, lists, Tables and PartialObjectMetadata as the client asked.
Semantics live in :mod:`.operations`; this module only translates HTTP.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import discovery
from .cluster import Cluster
from .errors import (
    Cause,
    bad_request,
    invalid,
    method_not_allowed,
    not_found_path,
)
from .negotiation import media_type, parse_accept, read_body, respond
from .objects import served
from .operations import WriteOptions
from .resources import ResourceInfo
from .selectors import (
    field_labels,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from .table import to_table
from .watch import serve_watch


@dataclass(frozen=True)
class Target:
    group: str
    version: str
    rest: tuple[str, ...]
    watch_prefix: bool = False


def _check_list_options(request: web.Request) -> None:
    """The ListOptions a real server refuses before listing anything."""
    version = request.query.get("resourceVersion")
    if version and not version.isdigit():
        raise bad_request(
            f'invalid resource version: resourceVersion: Invalid value: "{version}": '
            f'strconv.ParseUint: parsing "{version}": invalid syntax'
        )
    if request.query.get("resourceVersionMatch") and not version:
        message = "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        cause = Cause("FieldValueForbidden", "resourceVersionMatch", message)
        raise invalid("meta.k8s.io", "ListOptions", "", [cause])


class ApiHandler:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    @property
    def ops(self) -> Any:
        return self.cluster.ops

    async def handle(self, request: web.Request) -> web.StreamResponse:
        segments = tuple(s for s in request.path.split("/") if s)
        registry = self.cluster.registry
        if segments == ("api",):
            return respond(discovery.api_versions(request.host))
        if segments == ("apis",):
            return respond(discovery.api_group_list(registry))
        if segments[0] == "apis" and segments[1] not in registry.group_versions():
            # No handler serves an unknown group: Go's mux answers, in plain text.
            raise web.HTTPNotFound()
        if segments[0] == "apis" and len(segments) == 2:
            return respond(discovery.api_group(registry, segments[1]))
        if segments[0] == "api":
            group, version, rest = "", segments[1], segments[2:]
        else:
            group, version, rest = segments[1], segments[2], segments[3:]
        if not rest:
            resources = discovery.api_resource_list(registry, group, version)
            if resources is None:
                raise not_found_path()
            return respond(resources)
        watch_prefix = rest[0] == "watch"
        if watch_prefix:
            rest = rest[1:]
        return await self._resource_request(request, Target(group, version, rest, watch_prefix))

    async def _resource_request(self, request: web.Request, target: Target) -> web.StreamResponse:
        rest = target.rest
        namespace: str | None = None
        if (
            rest
            and rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise not_found_path()
        plural, name = rest[0], rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        info = self.cluster.registry.lookup(target.group, target.version, plural)
        if info is None or (namespace is not None and not info.namespaced):
            raise not_found_path()
        if info.namespaced and name is not None and namespace is None:
            raise not_found_path()
        if subresource is not None and subresource not in info.subresources:
            raise not_found_path()
        method = request.method
        watching = target.watch_prefix or request.query.get("watch") in ("true", "1")
        if name is None:
            if method == "GET":
                return await self._list(request, info, namespace, watching)
            if method == "POST" and (namespace is not None or not info.namespaced):
                return await self._create(request, info, namespace or "")
            if method == "DELETE" and "deletecollection" in info.verbs:
                return await self._delete_collection(request, info, namespace)
            raise method_not_allowed()
        ns = namespace or ""
        if watching and method == "GET":
            # a watch on one object is a field-selected watch on the collection
            return await self._list(request, info, namespace, True, only=name)
        if subresource == "scale":
            return await self._scale(request, info, ns, name)
        if subresource == "finalize":
            body = await read_body(request)
            return respond(self.ops.update(info, ns, name, body))
        if method == "GET":
            obj = served(self.ops.get(info, ns, name), info)
            return self._render_one(request, info, obj)
        if method == "PUT":
            body = await read_body(request, kind=info.kind)
            options = self._write_options(request)
            obj = self.ops.update(info, ns, name, body, subresource=subresource, options=options)
            return respond(obj, warnings=options.warnings)
        if method == "PATCH":
            options = self._write_options(request)
            obj, created = self.ops.patch(
                info,
                ns,
                name,
                media_type(request),
                await request.read(),
                subresource=subresource,
                options=options,
            )
            return respond(obj, 201 if created else 200, warnings=options.warnings)
        if method == "DELETE" and subresource is None:
            return await self._delete(request, info, ns, name)
        raise method_not_allowed()

    def _write_options(self, request: web.Request) -> WriteOptions:
        return WriteOptions(
            dry_run=request.query.get("dryRun") == "All",
            field_validation=request.query.get("fieldValidation", ""),
        )

    async def _create(
        self, request: web.Request, info: ResourceInfo, namespace: str
    ) -> web.Response:
        body = await read_body(request, kind=info.kind)
        options = self._write_options(request)
        obj = self.ops.create(info, namespace, body, options)
        return respond(obj, 201, warnings=options.warnings)

    def _matcher(self, request: web.Request, info: ResourceInfo, only: str | None) -> Any:
        labels = parse_label_selector(request.query.get("labelSelector"))
        field_text = request.query.get("fieldSelector", "")
        if only is not None:
            field_text = ",".join(filter(None, [field_text, f"metadata.name={only}"]))
        fields_ = parse_field_selector(field_text, field_labels(info))
        return lambda obj: labels_match(labels, obj) and fields_match(fields_, obj)

    def _renderer(self, request: web.Request, info: ResourceInfo) -> Any:
        rep = parse_accept(request.headers.get("Accept", ""))
        include = request.query.get("includeObject", "Metadata")
        if rep.kind == "table":
            return lambda obj: to_table(
                info,
                [served(obj, info)],
                resource_version=obj["metadata"]["resourceVersion"],
                include_object=include,
                table_version=rep.version,
            )
        if rep.kind == "partial":
            return lambda obj: {
                "kind": "PartialObjectMetadata",
                "apiVersion": f"meta.k8s.io/{rep.version}",
                "metadata": obj["metadata"],
            }
        return lambda obj: served(obj, info)

    def _render_one(
        self, request: web.Request, info: ResourceInfo, obj: dict[str, Any]
    ) -> web.Response:
        rep = parse_accept(request.headers.get("Accept", ""))
        if rep.kind in ("table", "partial"):
            return respond(self._renderer(request, info)(obj))
        return respond(obj, rep=rep)

    async def _list(
        self,
        request: web.Request,
        info: ResourceInfo,
        namespace: str | None,
        watching: bool,
        only: str | None = None,
    ) -> web.StreamResponse:
        match = self._matcher(request, info, only)
        render = self._renderer(request, info)
        if watching:
            return await serve_watch(
                request,
                cluster=self.cluster,
                info=info,
                namespace=namespace,
                match=match,
                render=render,
            )
        _check_list_options(request)
        store = self.cluster.store
        items = [obj for obj in store.items(info.storage_key, namespace) if match(obj)]
        metadata: dict[str, Any] = {"resourceVersion": str(store.rv)}
        items = self._paginate(request, items, metadata)
        rep = parse_accept(request.headers.get("Accept", ""))
        if rep.kind == "table":
            table = to_table(
                info,
                [served(o, info) for o in items],
                resource_version=str(store.rv),
                include_object=request.query.get("includeObject", "Metadata"),
                table_version=rep.version,
            )
            table["metadata"].update(metadata)
            return respond(table)
        if rep.kind == "partial":
            return respond(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": f"meta.k8s.io/{rep.version}",
                    "metadata": metadata,
                    "items": [render(o) for o in items],
                }
            )
        return respond(
            {
                "kind": f"{info.kind}List",
                "apiVersion": info.api_version,
                "metadata": metadata,
                "items": [served(o, info) for o in items],
            },
            rep=rep,
        )

    def _paginate(
        self, request: web.Request, items: list[dict[str, Any]], metadata: dict[str, Any]
    ) -> list[dict[str, Any]]:
        start = 0
        if token := request.query.get("continue"):
            try:
                start = int(json.loads(base64.b64decode(token))["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request(
                    f"invalid continue token: continue key is not valid: {exc}"
                ) from exc
        limit = int(request.query.get("limit") or 0)
        if limit <= 0:
            return items[start:]
        page = items[start : start + limit]
        if start + limit < len(items):
            metadata["continue"] = base64.b64encode(
                json.dumps({"start": start + limit}).encode()
            ).decode()
            metadata["remainingItemCount"] = len(items) - start - limit
        return page

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        body = await read_body(request, allow_empty=True)
        options = dict(body) if isinstance(body, dict) else {}
        query = request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            options["orphanDependents"] = query["orphanDependents"] == "true"
        return options

    async def _delete(
        self, request: web.Request, info: ResourceInfo, namespace: str, name: str
    ) -> web.Response:
        options = await self._delete_options(request)
        dry_run = request.query.get("dryRun") == "All" or options.get("dryRun") == ["All"]
        obj, gone = self.ops.delete(info, namespace, name, options, dry_run=dry_run)
        if gone:  # custom resources too; an object still held by finalizers is returned
            group = {"group": info.group} if info.group else {}  # omitempty
            details = {"name": name, **group, "kind": info.plural, "uid": obj["metadata"]["uid"]}
            return respond(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
            )
        return respond(obj)

    async def _delete_collection(
        self, request: web.Request, info: ResourceInfo, namespace: str | None
    ) -> web.Response:
        options = await self._delete_options(request)
        match = self._matcher(request, info, None)
        deleted = []
        for obj in self.cluster.store.items(info.storage_key, namespace):
            if match(obj):
                meta = obj["metadata"]
                result, _ = self.ops.delete(info, meta.get("namespace", ""), meta["name"], options)
                deleted.append(result)
        return respond(
            {
                "kind": f"{info.kind}List",
                "apiVersion": info.api_version,
                "metadata": {"resourceVersion": str(self.cluster.store.rv)},
                "items": deleted,
            }
        )

    async def _scale(
        self, request: web.Request, info: ResourceInfo, namespace: str, name: str
    ) -> web.Response:
        if request.method == "GET":
            return respond(self.ops.get_scale(info, namespace, name))
        options = self._write_options(request)
        if request.method == "PUT":
            body = await read_body(request, kind="Scale")
            return respond(self.ops.update_scale(info, namespace, name, body, options))
        if request.method == "PATCH":
            scale, _ = self.ops.patch(
                info,
                namespace,
                name,
                media_type(request),
                await request.read(),
                subresource="scale",
                options=options,
            )
            return respond(scale)
        raise method_not_allowed()
