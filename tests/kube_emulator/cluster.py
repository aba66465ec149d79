"""The emulated cluster's state and controllers, wired together, without any HTTP.

One :class:`Cluster` per emulator: the registry of kinds, the store, the write operations,
the garbage collector, the CRD registrar, the fake Deployment controller and the fault
injector. The HTTP layer (:mod:`.api`, :mod:`.server`) and the harness both drive this.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from .crds import CrdRegistrar
from .deployments import DeploymentController
from .faults import FaultInjector
from .lifecycle import GarbageCollector
from .operations import Operations
from .resources import Registry
from .store import Store

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


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
        self.crds = CrdRegistrar(self.store, self.registry)
        self.gc = GarbageCollector(self.store, self.ops, delay=self.config.gc_delay)
        self.deployments = DeploymentController(
            self.store, self.ops, delay=self.config.deployment_delay
        )
        self.faults = FaultInjector(seed=self.config.fault_seed)
        self._tasks: list[asyncio.Task[None]] = []
        ns_info = self.registry.lookup("", "v1", "namespaces")
        assert ns_info is not None
        for name in INITIAL_NAMESPACES:
            self.ops.create(
                ns_info, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )

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
