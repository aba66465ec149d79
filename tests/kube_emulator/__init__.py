"""A Kubernetes API emulator for tests: kopf, kubectl and the kubernetes client run against it
unmodified. See README.md in this folder for what is emulated and what is not.

Modules, from the bottom up:
    errors       Status objects and the ApiError every layer raises
    resources    the registry of served kinds (built-ins and CRD-defined)
    selectors    label and field selectors
    schema       structural schemas: pruning, defaulting, validation
    patch        JSON merge, JSON, strategic merge and apply patches
    objects      metadata rules, built-in defaults and known fields
    events       the validation of Events (both APIs)
    store        objects, the global resourceVersion, watch history and fan-out
    operations   create/update/patch semantics (with the two mixins below)
    scale        the /scale subresource
    deletion     delete, propagation policies, namespace termination
    crds         CRD validation, status and (un)registration
    lifecycle    garbage collection, namespace and CRD cleanup
    namespaces   what every namespace holds (root CA ConfigMap, default ServiceAccount)
    deployments  the fake Deployment controller
    faults       fault injection rules
    table        server-side Table printing
    discovery    /api, /apis, /version, OpenAPI stubs
    watch        watch streams
    cluster      all of the above wired together
    negotiation  Accept / Content-Type handling
    api          the REST surface over a Cluster
    control      /emulator/* control endpoints and their client
    server       the aiohttp app, the threaded harness and the CLI's loop
    fixtures     pytest fixtures (imported explicitly by conftests, not re-exported here)
"""

from __future__ import annotations

from .cluster import Cluster, EmulatorConfig
from .control import RemoteControl
from .deployments import FLAP_ANNOTATION, UNREADY_ANNOTATION
from .faults import FaultRule
from .server import KubeEmulator, write_kubeconfig

__all__ = [
    "FLAP_ANNOTATION",
    "UNREADY_ANNOTATION",
    "Cluster",
    "EmulatorConfig",
    "FaultRule",
    "KubeEmulator",
    "RemoteControl",
    "write_kubeconfig",
]
