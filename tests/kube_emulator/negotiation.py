"""Content negotiation: which representation the client accepts (JSON, YAML, Table,
PartialObjectMetadata) and how a request body is read (JSON or YAML; anything else, protobuf
included, is a 415 as a JSON-only API server would answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from .errors import bad_request, not_acceptable, unrecognized, unsupported_media_type

BODY_TYPES = ["application/json", "application/yaml"]


@dataclass(frozen=True)
class Representation:
    kind: str  # json, yaml, table, partial
    version: str = "v1"


def parse_accept(header: str) -> Representation:
    """Choose the first acceptable representation in the client's order of preference."""
    if not header.strip():
        return Representation("json")
    for part in header.split(","):
        media, *raw_params = [p.strip() for p in part.split(";")]
        params = dict(p.split("=", 1) for p in raw_params if "=" in p)
        shape = params.get("as")
        if media in ("application/json", "*/*", "application/*") and shape:
            if shape == "Table" and params.get("g") == "meta.k8s.io":
                return Representation("table", params.get("v", "v1"))
            if shape.startswith("PartialObjectMetadata") and params.get("g") == "meta.k8s.io":
                return Representation("partial", params.get("v", "v1"))
            continue
        if media in ("application/json", "*/*", "application/*"):
            return Representation("json")
        if media == "application/yaml":
            return Representation("yaml")
    raise not_acceptable(header)


def respond(
    data: Any,
    status: int = 200,
    *,
    rep: Representation | None = None,
    warnings: list[str] | None = None,
) -> web.Response:
    headers = {}
    if warnings:
        # RFC 7234 warn-text is a quoted-string: backslashes and quotes are escaped
        quoted = (w.replace("\\", "\\\\").replace('"', '\\"') for w in warnings)
        headers["Warning"] = ", ".join(f'299 - "{w}"' for w in quoted)
    if rep is not None and rep.kind == "yaml":
        return web.Response(
            text=yaml.safe_dump(data, sort_keys=False),
            status=status,
            content_type="application/yaml",
            headers=headers,
        )
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


async def read_body(
    request: web.Request, *, allow_empty: bool = False, kind: str | None = None
) -> Any:
    """The decoded body; ``kind`` (the object expected) words decoding errors as the server."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return None
        raise bad_request("the body of the request is empty")
    # Like the API server: no Content-Type means the first supported type, JSON.
    media = media_type(request) or "application/json"
    if media not in BODY_TYPES:
        raise unsupported_media_type(BODY_TYPES)
    try:
        body = json.loads(raw) if media == "application/json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        why = f"couldn't get version/kind; json parse error: {exc}"
        raise (bad_request(why) if kind is None else unrecognized(kind, why, raw)) from exc
    if kind is not None and not isinstance(body, dict):
        go_type = {list: "array", str: "string", bool: "bool"}.get(type(body), "number")
        why = (
            f"couldn't get version/kind; json parse error: json: cannot unmarshal {go_type} "
            'into Go value of type struct { APIVersion string "json:\\"apiVersion,omitempty'
            '\\""; Kind string "json:\\"kind,omitempty\\"" }'
        )
        raise unrecognized(kind, why, raw)
    return body
