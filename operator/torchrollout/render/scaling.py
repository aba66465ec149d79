"""The object that owns the stable revision's replicas under `spec.autoscaling`.

One engine owns them, so at most one object is rendered, named `NAME` and pointed at the
stable revision's Deployment `NAME-REVISION` (a promotion re-points it; no pod restarts):

- `hpa`: an autoscaling/v2 HorizontalPodAutoscaler on CPU and/or memory, with the spec's
  `behavior` passed through as it is;
- `keda`: a KEDA ScaledObject with one `prometheus` trigger on the signal's PromQL
  (`signal_query`), read from the Prometheus the operator itself uses;
- `prometheus`: nothing; the operator scales the revisions itself, on `signal_query` too.

`plan` adds what `render_autoscaler` returns; the operator reports it (AutoscalerReady) and
deletes the previous engine's object when the engine changes (`AUTOSCALER_KINDS`).
"""

from __future__ import annotations

from typing import Any

from torchrollout.render import names
from torchrollout.spec.checks import render_query
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.durations import format_duration
from torchrollout.spec.scaling import AutoscalingSpec

HPA_API = "autoscaling/v2"
KEDA_API = "keda.sh/v1alpha1"
# The kind each engine renders (none for `prometheus`): what to delete when it is replaced.
AUTOSCALER_KINDS: dict[str, tuple[str, str]] = {
    "hpa": (HPA_API, "HorizontalPodAutoscaler"),
    "keda": (KEDA_API, "ScaledObject"),
}
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring:9090"

# The handlers' request counter (metrics/templates.py reads the same histogram), and
# TorchServe's own queue-wait and request counters.
REQUESTS = "torchrollout_inference_latency_seconds_count"
QUEUE_LATENCY = "ts_queue_latency_microseconds"
INFERENCE_REQUESTS = "ts_inference_requests_total"
# rate() needs several scrapes inside its range: a minute smooths a 15 s scrape interval.
RATE_WINDOW = "1m"


def signal_query(
    autoscaling: AutoscalingSpec,
    *,
    namespace: str,
    name: str,
    revision: str,
    version: str,
    interval: str,
) -> str:
    """The PromQL of the scaling signal of one revision, compared with `signal_target`.

    requests-per-replica: the revision's TOTAL request rate (requests/s over all its
    replicas), not per replica: the caller divides by the replicas (KEDA does so with
    metricType AverageValue; the prometheus engine with its ready replicas).
    queue-latency: TorchServe's mean wait in its queue, in ms, over all the revision's
    replicas. query: the user's PromQL with `{{ namespace }}`, `{{ name }}`,
    `{{ revision }}`, `{{ version }}` and `{{ interval }}` (a PromQL range) filled in.
    """
    if autoscaling.signal == "query":
        assert autoscaling.query is not None  # the spec requires it with signal: query
        variables = {
            "namespace": namespace,
            "name": name,
            "revision": revision,
            "version": version,
            "interval": interval,
        }
        return render_query(autoscaling.query, variables)
    selector = f'{{namespace="{namespace}",revision="{revision}"}}'
    if autoscaling.signal == "queue-latency":
        waited = f"sum(rate({QUEUE_LATENCY}{selector}[{RATE_WINDOW}]))"
        requests = f"sum(rate({INFERENCE_REQUESTS}{selector}[{RATE_WINDOW}]))"
        return f"{waited} / clamp_min({requests}, 1e-9) / 1000"
    return f"sum(rate({REQUESTS}{selector}[{RATE_WINDOW}]))"


def _target_ref(md: ModelDeployment, stable: str) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.revision_name(md, stable)}


def render_hpa(md: ModelDeployment, *, stable: str) -> dict[str, Any] | None:
    """engine hpa: an HPA on the stable revision's Deployment, when CPU or memory targets
    are set."""
    scaling = md.spec.autoscaling
    if scaling is None or scaling.engine != "hpa":
        return None
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": resource,
                "target": {"type": "Utilization", "averageUtilization": target},
            },
        }
        for resource, target in (
            ("cpu", scaling.target_cpu_utilization),
            ("memory", scaling.target_memory_utilization),
        )
        if target is not None
    ]
    if not metrics:
        return None
    spec: dict[str, Any] = {
        "scaleTargetRef": _target_ref(md, stable),
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": metrics,
        # Null removes a behavior the spec no longer has (a merge patch deletes it).
        "behavior": scaling.behavior,
    }
    return {
        "apiVersion": HPA_API,
        "kind": "HorizontalPodAutoscaler",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": spec,
    }


def render_scaled_object(
    md: ModelDeployment, *, stable: str, prometheus: str
) -> dict[str, Any] | None:
    """engine keda: a ScaledObject on the stable revision's Deployment, with one Prometheus
    trigger at `prometheus` on the signal."""
    scaling = md.spec.autoscaling
    if scaling is None or scaling.engine != "keda":
        return None
    status = md.status
    version = (
        status.stable_version if status.stable_revision == stable else None
    ) or md.spec.model.version
    query = signal_query(
        scaling,
        namespace=md.metadata.namespace,
        name=md.metadata.name,
        revision=stable,
        version=version,
        interval=format_duration(scaling.interval_seconds),
    )
    # KEDA divides an AverageValue by the replicas: the total rate becomes per replica.
    per_replica = scaling.signal == "requests-per-replica"
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": names.metadata(md, md.metadata.name),
        "spec": {
            "scaleTargetRef": _target_ref(md, stable),
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue" if per_replica else "Value",
                    "metadata": {
                        "serverAddress": prometheus,
                        "query": query,
                        "threshold": f"{scaling.signal_target:g}",
                    },
                }
            ],
        },
    }


def render_autoscaler(
    md: ModelDeployment, *, stable: str, prometheus: str = DEFAULT_PROMETHEUS_URL
) -> dict[str, Any] | None:
    """The spec's engine's object, if it has one (prometheus has none)."""
    scaling = md.spec.autoscaling
    if scaling is not None and scaling.engine == "keda":
        return render_scaled_object(md, stable=stable, prometheus=prometheus)
    return render_hpa(md, stable=stable)
