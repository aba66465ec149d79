"""The shared base of every built-in handler: lifecycle, batching, inference, metrics.

TorchServe imports a handler file (e.g. `sequence_classifier.py`), instantiates its one class
(a subclass of `TorchRolloutHandler` or `ClassifierHandler`) and calls `initialize(context)`
once, then `handle(batch, context)` per batch. A family only says what an instance looks like
(`input_specs`, `check_instance`, `parse_label`), how to call the model (`forward`) and how to
turn outputs into answers (`postprocess`); everything else lives here:

- config: `torchrollout-config.json` packed in the archive (architecture, format, quantize,
  classes, threshold, metrics on/off, torch_threads, max_instances);
- batching: one TorchServe batch holds several requests, each with one or many instances;
  instances of equal shape run through the model together, and each request gets its own
  answer. A bad request gets its own HTTP 400 via `context.set_response_status` while the
  others in the batch succeed; a batch of one bad request raises `PredictionException(msg, 400)`
  (the same status and message, through TorchServe's own error path);
- metrics: see `torchrollout_runtime.MetricsRecorder`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    parse_request,
)
from torchrollout_models import build_model
from torchrollout_runtime import (
    ABS_ERROR_SUM,
    ANOMALIES,
    CONFIDENCE_SUM,
    CORRECT,
    INVALID,
    LABELED,
    PREDICTIONS,
    MetricsRecorder,
    load_model,
)

CONFIG_FILE = "torchrollout-config.json"
BATCH_HEADER = "X-Torchrollout-Batch-Size"


@dataclass
class Outcome:
    """The answer for one instance, plus what the metrics need to know about it."""

    body: dict[str, Any]
    confidence: float | None = None
    correct: bool | None = None
    abs_error: float | None = None
    anomaly: bool | None = None


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
        self.model = load_model(model_dir / serialized, self.config, self.build)
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
        all_outcomes: list[Outcome] = []
        for p in parsed:
            if isinstance(p, InvalidInput):
                responses.append(error_body(p.message))
                continue
            mine = [next(outcomes) for _ in p.instances]
            all_outcomes.extend(mine)
            responses.append(mine[0].body if p.single else {"predictions": [o.body for o in mine]})
        self.record_metrics(context, parsed, all_outcomes, instances, time.perf_counter() - start)
        errors = [(k, p) for k, p in enumerate(parsed) if isinstance(p, InvalidInput)]
        if len(data) == 1 and errors:
            from ts.utils.util import PredictionException

            raise PredictionException(errors[0][1].message, 400)
        for k, exc in errors:
            context.set_response_status(400, exc.message, k)
        for k in range(len(data)):
            context.set_response_header(k, BATCH_HEADER, str(len(data)))
        return responses

    # ---- inference -------------------------------------------------------------------
    def run(self, instances: Sequence[Instance]) -> list[Outcome]:
        """Outcomes in input order; instances of equal shapes share one forward pass."""
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for k, inst in enumerate(instances):
            groups.setdefault(inst.shape_key(), []).append(k)
        results: list[Outcome | None] = [None] * len(instances)
        with torch.inference_mode():
            for members in groups.values():
                group = [instances[k] for k in members]
                batch = {
                    name: torch.stack([i.tensors[name] for i in group]) for name in group[0].tensors
                }
                for k, outcome in zip(
                    members, self.postprocess(self.forward(batch), group), strict=True
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
        labeled = [(i, o) for i, o in zip(instances, outcomes, strict=True) if i.labeled]
        if labeled:
            # Emitted even when zero, so accuracy reads 0 rather than "no data".
            m.add(LABELED, len(labeled), rid)
            if any(o.correct is not None for _, o in labeled):
                m.add(CORRECT, sum(bool(o.correct) for _, o in labeled), rid)
            errors = [o.abs_error for _, o in labeled if o.abs_error is not None]
            if errors:
                m.add(ABS_ERROR_SUM, sum(errors), rid)

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
    """Softmax classifiers, one head (logits tensor) or several named heads (dict of logits).

    Multi-output answers are {"outputs": {target: {prediction, confidence, probabilities}}};
    a multi-output label is {target: class}; confidence is the mean over targets, and the
    instance counts as correct when every target is.
    """

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
        heads = self.architecture().get("heads") or self.config.get("targets")
        return [str(t) for t in heads] if heads else None

    def parse_label(self, value: Any, field: str) -> Any:
        targets = self.targets()
        if targets is None:
            return parse_class_label(value, field, self.classes(), self.class_count())
        if not isinstance(value, dict) or set(value) != set(targets):
            raise InvalidInput(field, f"expected an object with one class per target {targets}")
        return {
            t: parse_class_label(value[t], f"{field}.{t}", self.classes(t), self.class_count(t))
            for t in targets
        }

    def postprocess(self, output: Any, instances: Sequence[Instance]) -> list[Outcome]:
        if isinstance(output, Mapping):
            probs = {t: torch.softmax(v, dim=-1) for t, v in output.items()}
            outcomes = []
            for k, inst in enumerate(instances):
                answers = {t: class_answer(p[k], self.classes(t)) for t, p in probs.items()}
                correct = None
                if inst.labeled:
                    correct = all(inst.label[t] == answers[t][1] for t in answers)
                confidence = sum(a[2] for a in answers.values()) / len(answers)
                body = {"outputs": {t: a[0] for t, a in answers.items()}}
                outcomes.append(Outcome(body, confidence=confidence, correct=correct))
            return outcomes
        probs_all = torch.softmax(output, dim=-1)
        outcomes = []
        for k, inst in enumerate(instances):
            body, index, confidence = class_answer(probs_all[k], self.classes())
            correct = (index == inst.label) if inst.labeled else None
            outcomes.append(Outcome(body, confidence=confidence, correct=correct))
        return outcomes
