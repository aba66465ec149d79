"""The emulated cluster's state and controllers, wired together, without any HTTP.

One :class:`Cluster` per emulator: the registry of kinds, the store, the write operations,
the garbage collector, the CRD registrar, the fake Deployment controller, what populates
every namespace, and the fault injector; it starts with the namespaces and the ``kubernetes``
Service a new cluster has. The HTTP layer (:mod:`.api`, :mod:`.server`) and the harness both
drive this.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from .crds import CrdRegistrar
from .deployments import DeploymentController
from .faults import FaultInjector
from .lifecycle import GarbageCollector
from .namespaces import NamespacePopulator
from .operations import Operations
from .resources import Registry
from .store import Store

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# The API server's own Service, which every cluster has in "default".
KUBERNETES_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "kubernetes",
        "labels": {"component": "apiserver", "provider": "kubernetes"},
    },
    "spec": {
        "clusterIP": "10.96.0.1",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
    },
}


@dataclass
class EmulatorConfig:
    """Knobs a test may turn; every one can also be changed while running."""

    history_size: int = 10_000  # watch events kept; older resourceVersions get 410 Gone
    bookmark_interval: float = 5.0  # seconds between BOOKMARK events on idle watches
    deployment_delay: float = 0.3  # seconds before the fake controller reports readiness
    gc_delay: float = 0.05  # seconds the garbage collector lets a burst of writes settle
    fault_seed: int | None = None


class Cluster:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.registry = Registry()
        self.store = Store(history_size=self.config.history_size)
        self.ops = Operations(self.store, self.registry)
        self.crds = CrdRegistrar(self.store, self.registry, self.ops)
        self.gc = GarbageCollector(self.store, self.ops, delay=self.config.gc_delay)
        self.deployments = DeploymentController(
            self.store, self.ops, delay=self.config.deployment_delay
        )
        self.faults = FaultInjector(seed=self.config.fault_seed)
        self.namespaces = NamespacePopulator(self.store, self.ops)
        self._tasks: list[asyncio.Task[None]] = []
        ns_info = self.registry.lookup("", "v1", "namespaces")
        assert ns_info is not None
        for name in INITIAL_NAMESPACES:
            self.ops.create(
                ns_info, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        service_info = self.registry.lookup("", "v1", "services")
        assert service_info is not None
        self.ops.create(service_info, "default", KUBERNETES_SERVICE)

    async def start(self) -> None:
        self.deployments.attach(asyncio.get_running_loop())
        self._tasks.append(asyncio.create_task(self.gc.run(), name="emulator-gc"))

    async def stop(self) -> None:
        self.store.drop_watches()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def set_history_size(self, size: int) -> None:
        self.config.history_size = size
        self.store.history_size = size
        self.store.compact()

    def set_deployment_delay(self, delay: float) -> None:
        self.config.deployment_delay = delay
        self.deployments.delay = delay
