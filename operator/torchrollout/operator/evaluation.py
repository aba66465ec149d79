"""Labeled evaluation traffic: samples of `canary.evaluation.datasetUri` sent to both revisions.

Accuracy can only be measured on requests that carry a ground-truth `label`. Each analysis
tick, `EvaluationSender` posts the next `samplesPerTick` lines of the dataset to
`NAME-canary` and to `NAME-stable` (the same lines to both, so they are judged on the same
questions); the handlers count labeled and correct predictions, and the next tick's
accuracy check reads them. Requests run on a small thread pool so a reconciliation never
waits for them.

The dataset is read by the operator itself, through the archive package's sources:

    https://…        GET, with `Authorization: Bearer <token>` when `token_for(md)` gives one
                     (the operator's own, TORCHROLLOUT_EVALUATION_TOKEN)
    s3://bucket/key  boto3 with the operator's AWS_ENDPOINT_URL and credential chain
    file:///…, /…    a file the operator can read (rehearsal, tests)
    pvc://…          refused: the operator cannot mount a claim of the resource's namespace

When `evaluation.sha256` is set, bytes with another digest are not used. A loaded dataset is
cached per (uri, sha256); one that failed to load is read again on the next send.

Failures are data, not exceptions: `problem(md)` is the `EvaluationProblem` of the last send
for that resource (None once a send succeeds), for the reconciler to show as a condition;
`on_error` gets the same message, for the log.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

import httpx

from torchrollout.archive.errors import FetchError
from torchrollout.archive.fetch import open_source
from torchrollout.engine import CheckMeasurements, Measurement
from torchrollout.render import names
from torchrollout.spec.checks import ResolvedCheck, Template
from torchrollout.spec.document import ModelDeployment
from torchrollout.spec.resource import EvaluationSpec
from torchrollout.spec.status import Condition

SERVICE_URL = "http://{service}.{namespace}.svc:{port}"
MAX_DATASET_BYTES = 256 << 20  # the dataset is held in memory

Reason = Literal[
    "DatasetUnreachable",
    "DatasetUnsupported",
    "DigestMismatch",
    "DatasetEmpty",
    "DatasetInvalid",
    "RequestsFailed",
]


@dataclass(frozen=True)
class EvaluationProblem:
    """Why the last evaluation send of a resource did not fully happen, and what to fix."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class Sent:
    """What one batch of evaluation requests did."""

    requests: int
    failures: int


class DatasetError(Exception):
    """A dataset could not be used; carries the problem to report."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.problem = EvaluationProblem(reason, message)


def pvc_refused(uri: str) -> str:
    return (
        f"evaluation dataset {uri}: the operator reads the evaluation data itself and cannot "
        "mount a claim of your namespace; use s3:// or https:// (file:// works in a rehearsal)"
    )


def _read(uri: str, client: httpx.Client, token: str | None) -> tuple[bytes, str]:
    digest, parts, size = hashlib.sha256(), [], 0
    try:
        with open_source(uri, client=client, token=token) as stream:
            for chunk in stream.chunks:
                size += len(chunk)
                if size > MAX_DATASET_BYTES:
                    raise DatasetError(
                        "DatasetInvalid",
                        f"evaluation dataset {uri} is larger than {MAX_DATASET_BYTES >> 20} MiB, "
                        "which the operator would hold in memory: use a smaller sample",
                    )
                digest.update(chunk)
                parts.append(chunk)
    except FetchError as exc:
        cause = exc.message.removeprefix(f"{uri}: ")
        raise DatasetError(
            "DatasetUnreachable",
            f"evaluation dataset {uri} could not be read: {cause}; check the URI and that the "
            "operator can reach it with its credentials (the token Secret for https, its AWS "
            "credentials for s3)",
        ) from exc
    return b"".join(parts), digest.hexdigest()


def parse_dataset(uri: str, data: bytes) -> list[dict[str, Any]]:
    """JSON lines, one object per non-blank line; DatasetError naming the first bad line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            "DatasetInvalid", f"evaluation dataset {uri} is not UTF-8 text ({exc.reason})"
        ) from exc
    samples: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except ValueError as exc:
            problem = f"is not JSON ({exc})"
        else:
            if isinstance(sample, dict):
                samples.append(sample)
                continue
            problem = f"is a JSON {type(sample).__name__}, not an object"
        raise DatasetError(
            "DatasetInvalid",
            f"evaluation dataset {uri}: line {number} {problem}; write one JSON object per "
            'line, a request body with its label, e.g. {"input": [[0.1, 0.2]], "label": 1}',
        )
    if not samples:
        raise DatasetError(
            "DatasetEmpty",
            f"evaluation dataset {uri} has no samples: add JSON lines, one request body with "
            "its label per line",
        )
    return samples


def load_dataset(
    uri: str, *, sha256: str | None, client: httpx.Client, token: str | None = None
) -> list[dict[str, Any]]:
    """The labeled samples at `uri`, checked against `sha256`; DatasetError if unusable."""
    scheme = urlparse(uri).scheme
    if scheme == "pvc":
        raise DatasetError("DatasetUnsupported", pvc_refused(uri))
    if scheme not in ("https", "http", "s3", "file", ""):
        raise DatasetError(
            "DatasetUnsupported",
            f"evaluation dataset {uri}: unsupported scheme {scheme!r}; use s3:// or https://",
        )
    data, actual = _read(uri, client, token)
    if sha256 is not None and actual != sha256.lower():
        raise DatasetError(
            "DigestMismatch",
            f"evaluation dataset {uri} has sha256 {actual}, expected {sha256.lower()} "
            "(canary.evaluation.sha256): set the digest of the dataset you mean, or put that "
            "dataset back",
        )
    return parse_dataset(uri, data)


def _key(md: ModelDeployment) -> tuple[str, str]:
    return (md.metadata.namespace, md.metadata.name)


class EvaluationSender:
    """Sends each tick's evaluation samples; `service_url` is the seam tests redirect.

    `token_for(md)` gives the bearer token for an https dataset (None: send none); the
    operator gives its own (the chart mounts it from a Secret of the operator's namespace).
    """

    def __init__(
        self,
        client: httpx.Client | None = None,
        *,
        service_url: str = SERVICE_URL,
        workers: int = 4,
        on_error: Callable[[str], None] = lambda _message: None,
        token_for: Callable[[ModelDeployment], str | None] = lambda _md: None,
    ) -> None:
        self.client = client or httpx.Client(timeout=10.0)
        self.service_url = service_url
        self.on_error = on_error
        self.token_for = token_for
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluation")
        self._datasets: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        self._offsets: dict[tuple[str, str], int] = {}
        self._problems: dict[tuple[str, str], EvaluationProblem] = {}
        self._lock = threading.Lock()

    def submit(self, md: ModelDeployment) -> Future[Sent]:
        """Send the next samples to both revisions in the background."""
        return self._pool.submit(self.send, md)

    def problem(self, md: ModelDeployment) -> EvaluationProblem | None:
        """What went wrong in the last send for `md`; None when it succeeded (or none ran)."""
        with self._lock:
            return self._problems.get(_key(md))

    def forget(self, md: ModelDeployment) -> None:
        """Drop what is kept for a deleted resource (its offset and problem)."""
        with self._lock:
            self._offsets.pop(_key(md), None)
            self._problems.pop(_key(md), None)

    def send(self, md: ModelDeployment) -> Sent:
        evaluation = md.spec.canary.evaluation
        if evaluation is None:
            self._settle(md, None)
            return Sent(0, 0)
        try:
            samples = self._next_samples(md, evaluation)
        except DatasetError as exc:
            self._settle(md, exc.problem)
            return Sent(0, 0)
        failures, first = 0, ""
        for service in (names.canary_service(md), names.stable_service(md)):
            base = self.service_url.format(
                service=service, namespace=md.metadata.namespace, port=names.SERVICE_PORT
            )
            url = f"{base}/predictions/{md.model_name}"
            for sample in samples:
                try:
                    self.client.post(url, json=sample).raise_for_status()
                except httpx.HTTPStatusError as exc:
                    failures += 1
                    body = " ".join(exc.response.text.split())[:200]
                    first = first or f"{url} answered HTTP {exc.response.status_code}: {body}"
                except httpx.HTTPError as exc:
                    failures += 1
                    first = first or f"{url}: {type(exc).__name__}: {exc}"
        sent = Sent(2 * len(samples), failures)
        if not failures:
            self._settle(md, None)
            return sent
        message = (
            f"{failures} of {sent.requests} evaluation requests with samples of "
            f"{evaluation.dataset_uri} failed (first: {first.strip()}); check that "
            f"{names.canary_service(md)} and {names.stable_service(md)} serve model "
            f"{md.model_name} and accept the dataset's request bodies"
        )
        self._settle(md, EvaluationProblem("RequestsFailed", message))
        return sent

    def _settle(self, md: ModelDeployment, problem: EvaluationProblem | None) -> None:
        with self._lock:
            if problem is None:
                self._problems.pop(_key(md), None)
            else:
                self._problems[_key(md)] = problem
        if problem is not None:
            self.on_error(problem.message)

    def _token(self, md: ModelDeployment, uri: str) -> str | None:
        if urlparse(uri).scheme != "https":
            return None
        try:
            return self.token_for(md)
        except Exception as exc:  # the operator's Secret reader: any failure is reported
            raise DatasetError(
                "DatasetUnreachable",
                f"evaluation dataset {uri}: its bearer token could not be read "
                f"({type(exc).__name__}: {exc}); check the token Secret the spec names",
            ) from exc

    def _dataset(self, md: ModelDeployment, evaluation: EvaluationSpec) -> list[dict[str, Any]]:
        cache_key = (evaluation.dataset_uri, evaluation.sha256)
        with self._lock:
            cached = self._datasets.get(cache_key)
        if cached is not None:
            return cached
        # Loaded outside the lock: a slow source must not hold up other resources' sends.
        dataset = load_dataset(
            evaluation.dataset_uri,
            sha256=evaluation.sha256,
            client=self.client,
            token=self._token(md, evaluation.dataset_uri),
        )
        with self._lock:
            self._datasets[cache_key] = dataset
        return dataset

    def _next_samples(
        self, md: ModelDeployment, evaluation: EvaluationSpec
    ) -> list[dict[str, Any]]:
        dataset = self._dataset(md, evaluation)
        count = evaluation.samples_per_tick
        with self._lock:
            start = self._offsets.get(_key(md), 0) % len(dataset)
            self._offsets[_key(md)] = (start + count) % len(dataset)
        return [dataset[(start + i) % len(dataset)] for i in range(count)]

    def close(self) -> None:
        """Finish the batches already submitted (each request has a timeout), then stop."""
        self._pool.shutdown(wait=True)
        self.client.close()


# Checks that count labeled evaluation traffic.
LABELED_TEMPLATES = frozenset({Template.ACCURACY, Template.MEAN_ABSOLUTE_ERROR})


def without_labels(
    measured: dict[str, CheckMeasurements],
    checks: list[ResolvedCheck],
    problem: EvaluationProblem,
) -> dict[str, CheckMeasurements]:
    """Measurements with every label-based check an Error: without labeled traffic they say
    nothing about the model, so onError applies, never a Failed or Inconclusive tick."""
    failed = Measurement.error(f"evaluation data unavailable: {problem.message}")
    labeled = {c.name for c in checks if c.template in LABELED_TEMPLATES}
    return {
        name: CheckMeasurements(canary=failed, stable=failed) if name in labeled else m
        for name, m in measured.items()
    }


def evaluation_condition(problem: EvaluationProblem | None) -> Condition:
    """EvaluationReady: labeled traffic went out, or why it could not."""
    if problem is None:
        return Condition(type="EvaluationReady", status="True", reason="Sent")
    return Condition(
        type="EvaluationReady", status="False", reason=problem.reason, message=problem.message
    )
