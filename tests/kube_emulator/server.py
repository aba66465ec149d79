"""The HTTP server and the harness: an aiohttp app over a :class:`Cluster`, run in its own
thread (:class:`KubeEmulator`) or as the main program (:func:`serve_forever`).

Middlewares turn :class:`ApiError` into Status responses, any other exception into a logged
500 Status (the emulator never crashes on bad input), apply injected faults, and keep a
bounded log of requests that tests can assert on (e.g. which patch type a client used).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from . import control, discovery
from .api import ApiHandler
from .cluster import Cluster, EmulatorConfig
from .deployments import parse_duration
from .errors import ApiError, internal
from .faults import FaultRule
from .negotiation import respond

logger = logging.getLogger("tests.kube_emulator")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(cluster: Cluster, request_log: deque[dict[str, Any]]) -> web.Application:

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        entry = {
            "method": request.method,
            "path": request.path_qs,
            "contentType": request.headers.get("Content-Type", ""),
            "status": 0,
        }
        if not request.path.startswith("/emulator/"):
            request_log.append(entry)
        try:
            response = await handler(request)
        except ApiError as exc:
            response = respond(exc.status(), exc.code)
        except web.HTTPNotFound:
            # A path outside the API (or in an unknown group): Go's http.NotFound.
            response = web.Response(status=404, text="404 page not found\n")
        except web.HTTPMethodNotAllowed as exc:
            response = respond(ApiError(405, "MethodNotAllowed", str(exc)).status(), 405)
        except Exception as exc:
            logger.exception("handler failed: %s %s", request.method, request.path_qs)
            failure = internal(f"{type(exc).__name__}: {exc}")
            response = respond(failure.status(), 500)
        entry["status"] = response.status
        return response

    @web.middleware
    async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/emulator/"):
            return await handler(request)
        method = "WATCH" if request.query.get("watch") in ("true", "1") else request.method
        for rule in cluster.faults.for_request(method, request.path):
            if rule.kind == "slow":
                await asyncio.sleep(rule.delay)
            else:
                raise rule.error()
        return await handler(request)

    app = web.Application(middlewares=[errors, faults])
    api = ApiHandler(cluster)

    async def version(request: web.Request) -> web.Response:
        return respond(discovery.KUBERNETES_VERSION)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def openapi_v2(request: web.Request) -> web.Response:
        if "protobuf" in request.headers.get("Accept", ""):
            # An empty protobuf message is a valid, empty OpenAPI v2 document.
            return web.Response(
                body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            )
        return respond(discovery.OPENAPI_V2_JSON)

    for path in ("/api", "/api/{tail:.*}", "/apis", "/apis/{tail:.*}"):
        app.router.add_route("*", path, api.handle)
    app.router.add_get("/version", version)
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, health)
    app.router.add_get("/openapi/v2", openapi_v2)
    control.add_routes(app, cluster, request_log)
    return app


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": "emulator"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a process polling for the file never reads half of it.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(yaml.safe_dump(config, sort_keys=False))
    partial.replace(path)
    return path


async def _start_site(
    cluster: Cluster, host: str, port: int, request_log: deque[dict[str, Any]]
) -> tuple[web.AppRunner, int]:
    app = build_app(cluster, request_log)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    await cluster.start()
    return runner, int(bound)


async def serve_forever(
    host: str, port: int, kubeconfig: Path | None, config: EmulatorConfig
) -> None:
    """The CLI's main loop: serve until cancelled (Ctrl-C / SIGTERM)."""
    cluster = Cluster(config)
    runner, bound = await _start_site(cluster, host, port, deque(maxlen=5000))
    url = f"http://{host}:{bound}"
    if kubeconfig is not None:
        write_kubeconfig(kubeconfig, url)
    logger.warning("Kubernetes API emulator serving on %s (kubeconfig: %s)", url, kubeconfig)
    try:
        await asyncio.Event().wait()
    finally:
        await cluster.stop()
        await runner.cleanup()


class DeploymentControls:
    """Harness handles on the fake Deployment controller."""

    def __init__(self, emulator: KubeEmulator) -> None:
        self._emulator = emulator

    def set_unready(self, namespace: str, name: str, unready: bool = True) -> None:
        deployments = self._emulator.cluster.deployments
        self._emulator.call(lambda: deployments.set_override(namespace, name, unready=unready))

    def set_flap(self, namespace: str, name: str, period: str | float) -> None:
        seconds = parse_duration(period) if isinstance(period, str) else float(period)
        deployments = self._emulator.cluster.deployments
        self._emulator.call(lambda: deployments.set_override(namespace, name, flap=seconds))

    def clear(self, namespace: str, name: str) -> None:
        deployments = self._emulator.cluster.deployments
        self._emulator.call(lambda: deployments.clear_override(namespace, name))

    def set_delay(self, seconds: float) -> None:
        self._emulator.call(lambda: self._emulator.cluster.set_deployment_delay(seconds))


class KubeEmulator:
    """An emulated API server on 127.0.0.1, served from a thread with its own event loop.

    Use :meth:`start` as a context manager. Every harness method is thread-safe: it runs on
    the emulator's loop and waits for the result.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kubeconfig_path: Path | None = None,
    ) -> None:
        self.cluster = Cluster(config)
        self.host = host
        self.port = port
        self.kubeconfig_path = kubeconfig_path
        self.deployments = DeploymentControls(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._request_log: deque[dict[str, Any]] = deque(maxlen=5000)
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls, *, port: int = 0, kubeconfig_path: Path | None = None, **config: Any
    ) -> Iterator[KubeEmulator]:
        emulator = cls(EmulatorConfig(**config), port=port, kubeconfig_path=kubeconfig_path)
        emulator.run_in_thread()
        try:
            yield emulator
        finally:
            emulator.shutdown()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run_in_thread(self) -> None:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the emulator did not start within 15 s")
        if self._error is not None:
            raise RuntimeError("the emulator failed to start") from self._error
        if self.kubeconfig_path is not None:
            write_kubeconfig(self.kubeconfig_path, self.url)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner, self.port = await _start_site(self.cluster, self.host, self.port, self._request_log)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.cluster.stop()
            await runner.cleanup()

    def shutdown(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the emulator's loop (where all state lives) and return its result."""
        assert self._loop is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    # --- harness API --------------------------------------------------------------------
    def set_fault(self, kind: str = "error", **rule: Any) -> FaultRule:
        new = FaultRule(kind=kind, **rule)
        return self.call(lambda: self.cluster.faults.add(new))

    def clear_faults(self) -> None:
        self.call(self.cluster.faults.clear)

    def drop_watches(self) -> int:
        return self.call(self.cluster.store.drop_watches)

    def set_history_size(self, size: int) -> None:
        self.call(lambda: self.cluster.set_history_size(size))

    def set_bookmark_interval(self, seconds: float) -> None:
        def change() -> None:
            self.cluster.config.bookmark_interval = seconds

        self.call(change)

    @property
    def resource_version(self) -> int:
        return self.call(lambda: self.cluster.store.rv)

    def watch_count(self) -> int:
        return self.call(lambda: len(self.cluster.store.subscriptions))

    def requests(self) -> list[dict[str, Any]]:
        """Recent API requests (method, path, contentType, status), oldest first."""
        return self.call(lambda: [dict(e) for e in self._request_log])

    def get_object(self, group: str, plural: str, namespace: str, name: str) -> Any:
        return self.call(lambda: self.cluster.store.get((group, plural), namespace, name))
