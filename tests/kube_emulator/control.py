"""The emulator's own control plane: ``/emulator/...`` endpoints and a client for them.

These let a test drive an emulator it did not start in-process (``python -m
tests.kube_emulator`` in a subprocess): inject faults, drop watches, shrink the watch history
to force 410s, keep a Deployment unready or flapping, and read the request log.

    POST   /emulator/faults                 {"kind": "error", "status": 503, "probability": 0.5,
                                             "methods": ["PATCH"], "path": "/status$", "times": 3}
    DELETE /emulator/faults
    POST   /emulator/watches/drop
    PATCH  /emulator/config                 {"historySize": 5, "bookmarkInterval": 1,
                                             "deploymentDelay": 0.1}
    PUT    /emulator/deployments/{ns}/{name} {"unready": true} | {"flap": "2s"}
    DELETE /emulator/deployments/{ns}/{name}
    GET    /emulator/state, /emulator/requests
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from aiohttp import web

from .cluster import Cluster
from .deployments import parse_duration
from .errors import bad_request
from .faults import FaultRule


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )


async def _body(request: web.Request) -> Any:
    try:
        return await request.json() if await request.read() else {}
    except ValueError as exc:
        raise bad_request(f"invalid JSON: {exc}") from exc


def state(cluster: Cluster, request_log: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    store = cluster.store
    return {
        "resourceVersion": store.rv,
        "compactedResourceVersion": store.compacted_rv,
        "historySize": cluster.config.history_size,
        "bookmarkInterval": cluster.config.bookmark_interval,
        "deploymentDelay": cluster.config.deployment_delay,
        "watches": len(store.subscriptions),
        "faults": [rule.to_dict() for rule in cluster.faults.rules],
    }


def add_routes(app: web.Application, cluster: Cluster, request_log: Any) -> None:
    async def get_state(request: web.Request) -> web.Response:
        return _json(state(cluster))

    async def get_requests(request: web.Request) -> web.Response:
        return _json(list(request_log))

    async def add_faults(request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            rules = [FaultRule.from_dict(r) for r in (body if isinstance(body, list) else [body])]
        except (TypeError, ValueError) as exc:
            raise bad_request(f"invalid fault rule: {exc}") from exc
        for rule in rules:
            cluster.faults.add(rule)
        return _json([r.to_dict() for r in cluster.faults.rules], 201)

    async def clear_faults(request: web.Request) -> web.Response:
        cluster.faults.clear()
        return _json([])

    async def drop_watches(request: web.Request) -> web.Response:
        return _json({"dropped": cluster.store.drop_watches()})

    async def patch_config(request: web.Request) -> web.Response:
        body = await _body(request)
        if "historySize" in body:
            cluster.set_history_size(int(body["historySize"]))
        if "bookmarkInterval" in body:
            cluster.config.bookmark_interval = float(body["bookmarkInterval"])
        if "deploymentDelay" in body:
            cluster.set_deployment_delay(float(body["deploymentDelay"]))
        return _json(state(cluster))

    async def put_deployment(request: web.Request) -> web.Response:
        body = await _body(request)
        flap = body.get("flap")
        cluster.deployments.set_override(
            request.match_info["namespace"],
            request.match_info["name"],
            unready=body.get("unready"),
            flap=None if flap is None else parse_duration(str(flap)),
        )
        return _json({"ok": True})

    async def delete_deployment(request: web.Request) -> web.Response:
        cluster.deployments.clear_override(
            request.match_info["namespace"], request.match_info["name"]
        )
        return _json({"ok": True})

    app.router.add_get("/emulator/state", get_state)
    app.router.add_get("/emulator/requests", get_requests)
    app.router.add_post("/emulator/faults", add_faults)
    app.router.add_delete("/emulator/faults", clear_faults)
    app.router.add_post("/emulator/watches/drop", drop_watches)
    app.router.add_patch("/emulator/config", patch_config)
    app.router.add_put("/emulator/deployments/{namespace}/{name}", put_deployment)
    app.router.add_delete("/emulator/deployments/{namespace}/{name}", delete_deployment)


class RemoteControl:
    """A blocking client of the control endpoints, for an emulator in another process."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read() or b"null")

    def state(self) -> dict[str, Any]:
        return dict(self._call("GET", "/emulator/state"))

    def add_fault(self, **rule: Any) -> list[dict[str, Any]]:
        return list(self._call("POST", "/emulator/faults", rule))

    def clear_faults(self) -> None:
        self._call("DELETE", "/emulator/faults")

    def drop_watches(self) -> int:
        return int(self._call("POST", "/emulator/watches/drop")["dropped"])

    def configure(self, **config: Any) -> dict[str, Any]:
        return dict(self._call("PATCH", "/emulator/config", config))

    def set_deployment(self, namespace: str, name: str, **override: Any) -> None:
        self._call("PUT", f"/emulator/deployments/{namespace}/{name}", override)

    def clear_deployment(self, namespace: str, name: str) -> None:
        self._call("DELETE", f"/emulator/deployments/{namespace}/{name}")

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/emulator/requests"))
