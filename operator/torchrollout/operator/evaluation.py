"""Labeled evaluation traffic: samples of `canary.evaluation.datasetUri` sent to both revisions.

Accuracy can only be measured on requests that carry a ground-truth `label`. Each analysis
tick, `EvaluationSender` posts the next `samplesPerTick` lines of the dataset to
`NAME-canary` and to `NAME-stable` (the same lines to both, so they are judged on the same
questions); the handlers count labeled and correct predictions, and the next tick's
accuracy check reads them. Requests run on a small thread pool so a reconciliation never
waits for them; failures are counted, never raised.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from torchrollout.render import names
from torchrollout.spec.document import ModelDeployment

SERVICE_URL = "http://{service}.{namespace}.svc:{port}"
PVC_ROOT = Path("/mnt/pvc")


@dataclass(frozen=True)
class Sent:
    """What one batch of evaluation requests did."""

    requests: int
    failures: int


def read_dataset(uri: str, client: httpx.Client) -> list[dict[str, Any]]:
    """The labeled samples at `uri` (https, file or pvc path), one JSON object per line."""
    if uri.startswith(("https://", "http://")):
        text = client.get(uri).raise_for_status().text
    elif uri.startswith("pvc://"):
        text = (PVC_ROOT / uri.removeprefix("pvc://")).read_text()
    elif uri.startswith(("file://", "/")):
        text = Path(uri.removeprefix("file://")).read_text()
    else:
        raise ValueError(f"evaluation datasetUri {uri!r}: use https://, file:// or pvc://")
    samples = []
    for line in text.splitlines():
        if line.strip():
            sample = json.loads(line)
            if isinstance(sample, dict):
                samples.append(sample)
    return samples


class EvaluationSender:
    """Sends each tick's evaluation samples; `service_url` is the seam tests redirect."""

    def __init__(
        self,
        client: httpx.Client | None = None,
        *,
        service_url: str = SERVICE_URL,
        workers: int = 4,
        on_error: Callable[[str], None] = lambda _message: None,
    ) -> None:
        self.client = client or httpx.Client(timeout=10.0)
        self.service_url = service_url
        self.on_error = on_error
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluation")
        self._datasets: dict[str, list[dict[str, Any]]] = {}
        self._offsets: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def submit(self, md: ModelDeployment) -> Future[Sent]:
        """Send the next samples to both revisions in the background."""
        return self._pool.submit(self.send, md)

    def send(self, md: ModelDeployment) -> Sent:
        evaluation = md.spec.canary.evaluation
        if evaluation is None:
            return Sent(0, 0)
        try:
            samples = self._next_samples(md, evaluation.dataset_uri, evaluation.samples_per_tick)
        except (OSError, ValueError, httpx.HTTPError) as exc:
            self.on_error(f"evaluation dataset {evaluation.dataset_uri}: {exc}")
            return Sent(0, 0)
        failures = 0
        for service in (names.canary_service(md), names.stable_service(md)):
            base = self.service_url.format(
                service=service, namespace=md.metadata.namespace, port=names.SERVICE_PORT
            )
            url = f"{base}/predictions/{md.model_name}"
            for sample in samples:
                try:
                    self.client.post(url, json=sample).raise_for_status()
                except httpx.HTTPError:
                    failures += 1
        if failures:
            self.on_error(f"{failures} of {2 * len(samples)} evaluation requests failed")
        return Sent(2 * len(samples), failures)

    def _next_samples(self, md: ModelDeployment, uri: str, count: int) -> list[dict[str, Any]]:
        with self._lock:
            if uri not in self._datasets:
                self._datasets[uri] = read_dataset(uri, self.client)
            dataset = self._datasets[uri]
            if not dataset:
                raise ValueError("the dataset has no samples")
            key = (md.metadata.namespace, md.metadata.name)
            start = self._offsets.get(key, 0)
            self._offsets[key] = (start + count) % len(dataset)
        return [dataset[(start + i) % len(dataset)] for i in range(count)]

    def close(self) -> None:
        """Finish the batches already submitted (each request has a timeout), then stop."""
        self._pool.shutdown(wait=True)
        self.client.close()
