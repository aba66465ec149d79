"""The shared base of every built-in handler: lifecycle, batching, inference, metrics.

TorchServe imports a handler file (e.g. `sequence_classifier.py`), instantiates its one class
(a subclass of `TorchRolloutHandler` or `ClassifierHandler`) and calls `initialize(context)`
once, then `handle(batch, context)` per batch. A family only says what an instance looks like
(`input_specs`, `check_instance`, `parse_label`), how to call the model (`forward`) and how to
turn outputs into answers (`postprocess`); everything else lives here:

- config: `torchrollout-config.json` packed in the archive (architecture, format, quantize,
  precision, classes, threshold, metrics on/off, torch_threads, max_instances);
- device: the GPU TorchServe assigned to the worker, else the CPU (one log line says why);
  inputs go to the model's device, outputs come back to the CPU in float32 for the answers;
- batching: one TorchServe batch holds several requests, each with one or many instances;
  instances of equal shape run through the model together, and each request gets its own
  answer. A bad request gets its own HTTP 400 via `context.set_response_status` while the
  others in the batch succeed; a batch of one bad request raises `PredictionException(msg, 400)`
  (the same status and message, through TorchServe's own error path);
- metrics: see `torchrollout_runtime.MetricsRecorder`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from torchrollout_io import (
    FieldSpec,
    Instance,
    InvalidInput,
    ParsedRequest,
    parse_class_label,
    parse_number_list,
    parse_request,
    shown,
)
from torchrollout_models import HEAD_PATTERN, build_model, head_sizes
from torchrollout_runtime import (
    ABS_ERROR_SUM,
    ANOMALIES,
    CONFIDENCE_SUM,
    CORRECT,
    HEAD_ABS_ERROR_SUM,
    HEAD_CORRECT,
    HEAD_LABELED,
    INVALID,
    LABELED,
    PREDICTIONS,
    MetricsRecorder,
    Placement,
    load_model,
    place,
    to_host,
)

CONFIG_FILE = "torchrollout-config.json"
BATCH_HEADER = "X-Torchrollout-Batch-Size"

logger = logging.getLogger(__name__)


@dataclass
class HeadOutcome:
    """How one labeled head of a multi-output answer did: right (classification) or how far
    off (regression, mean |prediction - label| over the head's outputs)."""

    correct: bool | None = None
    abs_error: float | None = None


@dataclass
class Outcome:
    """The answer for one instance, plus what the metrics need to know about it.

    `labeled` says whether the instance counts in the whole-model labeled/correct metrics
    (None: whenever it carried a label; a multi-output answer only when its label names every
    classification head); `heads` holds the labeled heads of a multi-output answer.
    """

    body: dict[str, Any]
    confidence: float | None = None
    correct: bool | None = None
    abs_error: float | None = None
    anomaly: bool | None = None
    labeled: bool | None = None
    heads: dict[str, HeadOutcome] = field(default_factory=dict)


def finite(answer: Any) -> bool:
    """Whether every number in an answer (nested dicts and lists) is finite."""
    if isinstance(answer, float):
        return math.isfinite(answer)
    if isinstance(answer, Mapping):
        return all(finite(v) for v in answer.values())
    if isinstance(answer, list):
        return all(finite(v) for v in answer)
    return True


def encode(answer: Mapping[str, Any]) -> bytes:
    """An answer as compact JSON bytes, which TorchServe sends as they are: left to it, a
    dict is dumped with indent=2 by Python's pure-Python encoder, several times slower and
    a third longer on the wire."""
    return json.dumps(answer, separators=(",", ":")).encode()


def error_body(message: str) -> dict[str, Any]:
    # Exactly what TorchServe answers for a PredictionException (its "type" included), so a
    # client sees one format for 400s whether its request was batched with others or not.
    return {"code": 400, "type": "InternalServerException", "message": message}


class TorchRolloutHandler:
    """Base handler; subclasses override the family hooks below."""

    family: ClassVar[str] = "base"

    def __init__(self) -> None:
        self.initialized = False
        self.config: dict[str, Any] = {}
        self.model: Any = None
        self.model_name = ""
        self.model_version = "unknown"
        self.specs: list[FieldSpec] = []
        self.max_instances = 256
        self.metrics = MetricsRecorder(None, "", "")
        self.placement = Placement(torch.device("cpu"), None)

    # ---- lifecycle -------------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        manifest = (context.manifest or {}).get("model", {})
        config_path = model_dir / CONFIG_FILE
        self.config = json.loads(config_path.read_text()) if config_path.exists() else {}
        self.model_name = str(context.model_name)
        self.model_version = str(manifest.get("modelVersion", "unknown"))
        # Tiny models lose more to thread hand-offs than they gain from intra-op parallelism.
        torch.set_num_threads(int(self.config.get("torch_threads", 1)))
        serialized = manifest.get("serializedFile")
        if not serialized:
            raise ValueError("the archive has no serialized weights file")
        self.placement = place(self.config, context.system_properties.get("gpu_id"))
        for note in self.placement.notes:
            logger.info("torchrollout model %s: %s", self.model_name, note)
        self.model = load_model(
            model_dir / serialized, self.config, self.build, self.placement.device
        )
        self.specs = self.input_specs()
        self.max_instances = int(self.config.get("max_instances", 256))
        cache = context.metrics if self.config.get("metrics", True) else None
        self.metrics = MetricsRecorder(cache, self.model_name, self.model_version)
        self.initialized = True

    def handle(self, data: list[Mapping[str, Any]], context: Any) -> list[Any]:
        start = time.perf_counter()
        parsed: list[ParsedRequest | InvalidInput] = []
        for row in data:
            try:
                parsed.append(
                    parse_request(
                        row,
                        specs=self.specs,
                        parse_label=self.parse_label,
                        check=self.check_instance,
                        max_instances=self.max_instances,
                    )
                )
            except InvalidInput as exc:
                parsed.append(exc)
        instances = [i for p in parsed if isinstance(p, ParsedRequest) for i in p.instances]
        outcomes = iter(self.run(instances))
        responses: list[Any] = []
        answered: list[tuple[Instance, Outcome]] = []
        for k, p in enumerate(parsed):
            if isinstance(p, ParsedRequest):
                mine = [next(outcomes) for _ in p.instances]
                blown = next((j for j, o in enumerate(mine) if not finite(o.body)), None)
                if blown is None:
                    answered.extend(zip(p.instances, mine, strict=True))
                    body = mine[0].body if p.single else {"predictions": [o.body for o in mine]}
                    responses.append(body)
                    continue
                refused = self.not_finite(p, blown)
                parsed[k] = refused
            else:
                refused = p
            responses.append(error_body(refused.message))
        self.record_metrics(
            context,
            parsed,
            [o for _, o in answered],
            [i for i, _ in answered],
            time.perf_counter() - start,
        )
        errors = [(k, p) for k, p in enumerate(parsed) if isinstance(p, InvalidInput)]
        if len(data) == 1 and errors:
            from ts.utils.util import PredictionException

            raise PredictionException(errors[0][1].message, 400)
        for k, exc in errors:
            context.set_response_status(400, exc.message, k)
        for k in range(len(data)):
            context.set_response_header(k, BATCH_HEADER, str(len(data)))
            context.set_response_content_type(k, "application/json")
        return [encode(r) for r in responses]

    def not_finite(self, request: ParsedRequest, k: int) -> InvalidInput:
        """The refusal of a request whose k-th answer holds NaN or Infinity: finite inputs
        far outside what the model was trained on can overflow float32 inside the forward,
        and JSON has no NaN (nor would the metrics' sums recover from one)."""
        path = "" if request.single else f"instances[{k}]"
        fields = ", ".join(f"{path}.{s.name}" if path else s.name for s in self.specs)
        return InvalidInput(
            fields,
            "the model's answer for these values is NaN or Infinity "
            "(are they far outside the range it was trained on?)",
            instances=len(request.instances),
        )

    # ---- inference -------------------------------------------------------------------
    def run(self, instances: Sequence[Instance]) -> list[Outcome]:
        """Outcomes in input order; instances of equal shapes share one forward pass."""
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for k, inst in enumerate(instances):
            groups.setdefault(inst.shape_key(), []).append(k)
        results: list[Outcome | None] = [None] * len(instances)
        device = self.placement.device
        with torch.inference_mode():
            for members in groups.values():
                group = [instances[k] for k in members]
                batch = {
                    name: torch.stack([i.tensors[name] for i in group]).to(device)
                    for name in group[0].tensors
                }
                with self.placement.autocast_context():
                    output = self.forward(batch)
                for k, outcome in zip(
                    members, self.postprocess(to_host(output), group), strict=True
                ):
                    results[k] = outcome
        return [r for r in results if r is not None]

    def record_metrics(
        self,
        context: Any,
        parsed: Sequence[ParsedRequest | InvalidInput],
        outcomes: Sequence[Outcome],
        instances: Sequence[Instance],
        seconds: float,
    ) -> None:
        m = self.metrics
        if not m.enabled:
            return
        rid = context.get_request_id(0)
        # One latency observation per request (valid or not): the handler's time for the
        # batch that request was in, which is what the request waited on inside the worker.
        for k in range(len(parsed)):
            m.observe_latency(seconds, context.get_request_id(k))
        invalid = sum(p.instances for p in parsed if isinstance(p, InvalidInput))
        if invalid:
            m.add(INVALID, invalid, rid)
        if not outcomes:
            return
        m.add(PREDICTIONS, len(outcomes), rid)
        confidences = [o.confidence for o in outcomes if o.confidence is not None]
        if confidences:
            m.add(CONFIDENCE_SUM, sum(confidences), rid)
        anomalies = [o.anomaly for o in outcomes if o.anomaly is not None]
        if anomalies:
            m.add(ANOMALIES, sum(anomalies), rid)
        labeled = [o for i, o in zip(instances, outcomes, strict=True) if i.labeled]
        whole = [o for o in labeled if o.labeled is not False]
        if whole:
            # Emitted even when zero, so accuracy reads 0 rather than "no data".
            m.add(LABELED, len(whole), rid)
            if any(o.correct is not None for o in whole):
                m.add(CORRECT, sum(bool(o.correct) for o in whole), rid)
            errors = [o.abs_error for o in whole if o.abs_error is not None]
            if errors:
                m.add(ABS_ERROR_SUM, sum(errors), rid)
        heads: dict[str, list[HeadOutcome]] = {}
        for o in labeled:
            for head, result in o.heads.items():
                heads.setdefault(head, []).append(result)
        for head, results in sorted(heads.items()):
            m.add_head(HEAD_LABELED, head, len(results), rid)
            if any(r.correct is not None for r in results):
                m.add_head(HEAD_CORRECT, head, sum(bool(r.correct) for r in results), rid)
            head_errors = [r.abs_error for r in results if r.abs_error is not None]
            if head_errors:
                m.add_head(HEAD_ABS_ERROR_SUM, head, sum(head_errors), rid)

    # ---- family hooks ----------------------------------------------------------------
    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        return build_model(arch)

    def input_specs(self) -> list[FieldSpec]:
        return [FieldSpec("input", self.input_shape())]

    def input_shape(self) -> tuple[int | None, ...]:
        """Shape of one instance's `input`: config `input.shape`, else [N, input_size]."""
        shape = self.config.get("input", {}).get("shape")
        if shape is not None:
            return tuple(None if d is None else int(d) for d in shape)
        return (None, int(self.architecture().get("input_size", 1)))

    def architecture(self) -> Mapping[str, Any]:
        arch = self.config.get("architecture", {})
        return arch if isinstance(arch, Mapping) else {}

    def check_instance(self, tensors: dict[str, torch.Tensor], path: str) -> None:
        """Cross-field rules (e.g. a graph's adjacency matches its node count)."""

    def parse_label(self, value: Any, field: str) -> Any:
        return value

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        return self.model(batch["input"])

    def postprocess(self, output: Any, instances: Sequence[Instance]) -> list[Outcome]:
        raise NotImplementedError


def class_answer(probs: torch.Tensor, classes: Sequence[str]) -> tuple[dict[str, Any], int, float]:
    """The answer for one probability vector: prediction (a name if configured), confidence."""
    index = int(probs.argmax())
    confidence = float(probs[index])
    prediction: Any = classes[index] if index < len(classes) else index
    body = {"prediction": prediction, "confidence": confidence, "probabilities": probs.tolist()}
    return body, index, confidence


class ClassifierHandler(TorchRolloutHandler):
    """Softmax classifiers, one head (logits tensor) or several named heads (a dict).

    A multi-output model names classification heads (`architecture.heads`, or `targets` for
    TorchScript / export weights) and may add regression heads
    (`architecture.regression_heads`: {head: outputs}). Its answer is
    {"outputs": {head: {prediction, confidence, probabilities} | {prediction: number}}};
    its label is {head: class | number}, naming any of the heads (the others are not
    counted). Confidence is the mean over classification heads; the instance counts in the
    whole-model accuracy when its label names every classification head, and is correct when
    every one is right. Each labeled head is also counted on its own (HEAD_* metrics).
    """

    def __init__(self) -> None:
        super().__init__()
        self.class_heads: list[str] = []
        self.regression_sizes: dict[str, int] = {}

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        arch = self.architecture()
        self.regression_sizes = head_sizes(arch, "regression_heads")
        names = arch.get("heads") or self.config.get("targets") or []
        self.class_heads = [str(t) for t in names if str(t) not in self.regression_sizes]
        for head in self.class_heads:
            if not HEAD_PATTERN.fullmatch(head):
                raise ValueError(f"targets: head name {head!r} must match {HEAD_PATTERN.pattern}")

    def classes(self, target: str | None = None) -> list[str]:
        names = self.config.get("classes", [])
        if isinstance(names, Mapping):
            names = names.get(target or "", [])
        return [str(n) for n in names]

    def class_count(self, target: str | None = None) -> int | None:
        arch = self.architecture()
        heads = arch.get("heads")
        if target is not None and isinstance(heads, Mapping) and target in heads:
            return int(heads[target])
        count = arch.get("num_classes", arch.get("num_actions"))
        return int(count) if count is not None else (len(self.classes(target)) or None)

    def targets(self) -> list[str] | None:
        """Every head of a multi-output model (classification first); None for one head."""
        heads = [*self.class_heads, *self.regression_sizes]
        return heads or None

    def parse_label(self, value: Any, field: str) -> Any:
        heads = self.targets()
        if heads is None:
            return parse_class_label(value, field, self.classes(), self.class_count())
        if not isinstance(value, dict):
            raise InvalidInput(field, f"expected an object with a label per head, of {heads}")
        unknown = [h for h in value if h not in heads]
        if unknown:
            raise InvalidInput(
                field, f"unknown head {shown(unknown[0])}; the model's heads: {heads}"
            )
        label: dict[str, Any] = {}
        for head, given in value.items():
            if given is None:
                continue  # a head left out, as when its key is missing
            path = f"{field}.{head}"
            if head in self.regression_sizes:
                label[head] = parse_number_list(given, path, self.regression_sizes[head])
            else:
                label[head] = parse_class_label(
                    given, path, self.classes(head), self.class_count(head)
                )
        if not label:
            raise InvalidInput(field, f"expected an object with a label for some of {heads}")
        return label

    def postprocess(self, output: Any, instances: Sequence[Instance]) -> list[Outcome]:
        if isinstance(output, Mapping):
            return self.multi_output(output, instances)
        probs_all = torch.softmax(output, dim=-1)
        outcomes = []
        for k, inst in enumerate(instances):
            body, index, confidence = class_answer(probs_all[k], self.classes())
            correct = (index == inst.label) if inst.labeled else None
            outcomes.append(Outcome(body, confidence=confidence, correct=correct))
        return outcomes

    def multi_output(
        self, output: Mapping[str, torch.Tensor], instances: Sequence[Instance]
    ) -> list[Outcome]:
        values = {t: v for t, v in output.items() if t in self.regression_sizes}
        probs = {t: torch.softmax(v, dim=-1) for t, v in output.items() if t not in values}
        outcomes = []
        for k, inst in enumerate(instances):
            label = inst.label if isinstance(inst.label, Mapping) else {}
            body: dict[str, Any] = {}
            heads: dict[str, HeadOutcome] = {}
            confidences = []
            for t, p in probs.items():
                body[t], index, confidence = class_answer(p[k], self.classes(t))
                confidences.append(confidence)
                if t in label:
                    heads[t] = HeadOutcome(correct=index == label[t])
            for t, v in values.items():
                predicted = v[k].reshape(-1)
                body[t] = {
                    "prediction": predicted.tolist() if predicted.numel() > 1 else float(predicted)
                }
                if t in label:
                    target = torch.tensor(label[t], dtype=torch.float64)  # as the regressor
                    error = float((predicted.double() - target).abs().mean())
                    heads[t] = HeadOutcome(abs_error=error)
            whole = bool(probs) and all(t in heads for t in probs)
            outcomes.append(
                Outcome(
                    {"outputs": body},
                    confidence=sum(confidences) / len(confidences) if confidences else None,
                    correct=all(bool(heads[t].correct) for t in probs) if whole else None,
                    labeled=whole,
                    heads=heads,
                )
            )
        return outcomes
