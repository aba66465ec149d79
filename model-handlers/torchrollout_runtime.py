"""What the base handler needs besides request parsing: weights loading and custom metrics.

Weights: three formats, told apart by sniffing the zip entries torch writes (or forced by
`"format"` in the config):
    torchscript  an entry `<dir>/code/...` and `<dir>/constants.pkl`   -> torch.jit.load
    export       an entry `<dir>/archive_format` or `<dir>/models/*.json` (torch.export .pt2)
                                                                         -> torch.export.load
    state_dict   anything else (`<dir>/data.pkl`, or a legacy pickle)    -> torch.load(
                 weights_only=True) into the network the `architecture` block describes.
Optional `"quantize": "dynamic-int8"` applies dynamic int8 quantization (Linear/LSTM/GRU)
to state_dict models, the only format that is a plain eager `nn.Module`.

Metrics: the names below are a contract with the operator's PromQL templates. Each metric has
the dimensions ModelName and model_version; TorchServe's front end adds Hostname.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

LATENCY = "torchrollout_inference_latency_seconds"
PREDICTIONS = "torchrollout_predictions"
CONFIDENCE_SUM = "torchrollout_confidence_sum"
LABELED = "torchrollout_labeled"
CORRECT = "torchrollout_correct"
ABS_ERROR_SUM = "torchrollout_abs_error_sum"
ANOMALIES = "torchrollout_anomalies_flagged"
INVALID = "torchrollout_invalid_inputs"
COUNTERS = (PREDICTIONS, CONFIDENCE_SUM, LABELED, CORRECT, ABS_ERROR_SUM, ANOMALIES, INVALID)
DIMENSIONS = ["ModelName", "model_version"]

FORMATS = ("state_dict", "torchscript", "export")


def sniff_format(path: Path) -> str:
    """Which of FORMATS a weights file is, from the names inside its zip container."""
    if not zipfile.is_zipfile(path):
        return "state_dict"  # legacy torch.save pickle: weights_only decides if it is safe
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "export"
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    return "state_dict"


def load_model(
    path: Path, config: Mapping[str, Any], build: Callable[[Mapping[str, Any]], nn.Module]
) -> Callable[..., Any]:
    """Load weights in whatever format they are in; return a callable in eval mode."""
    fmt = str(config.get("format") or sniff_format(path))
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
    quantize = config.get("quantize")
    if quantize not in (None, "dynamic-int8"):
        raise ValueError(f"quantize: expected 'dynamic-int8' or nothing, got {quantize!r}")
    if quantize and fmt != "state_dict":
        raise ValueError(f"quantize: dynamic-int8 needs state_dict weights, not {fmt}")
    if fmt == "torchscript":
        with warnings.catch_warnings():
            # torch.jit is deprecated in torch 2.13 but still the format many models ship in.
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(path), map_location="cpu")
        scripted.eval()
        return scripted  # type: ignore[no-any-return]
    if fmt == "export":
        # An exported module refuses .eval(); it was traced in whatever mode it was exported in.
        return torch.export.load(str(path)).module()  # type: ignore[no-any-return]
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError("weights: a state_dict file must hold a mapping of names to tensors")
    arch = config.get("architecture")
    if not isinstance(arch, Mapping):
        raise ValueError("architecture: state_dict weights need an architecture block in config")
    model = build(arch)
    model.load_state_dict(state)
    model.eval()
    if quantize:
        with warnings.catch_warnings():
            # torch.ao is deprecated (moving to torchao) and warns about quantized dtypes.
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(
                model, {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8
            )
    return model


class MetricsRecorder:
    """Emits the torchrollout_* metrics through TorchServe's metrics cache.

    Counters are summed over a whole TorchServe batch and emitted once per batch (each emission
    is a log line the front end parses, so fewer lines means less overhead); the latency
    histogram gets one observation per request. Disabled when the cache is None (in-process
    use without TorchServe, or `"metrics": false` in the config).
    """

    def __init__(self, cache: Any, model_name: str, model_version: str) -> None:
        self.enabled = cache is not None
        self._values = [model_name, model_version]
        self._metrics: dict[str, Any] = {}
        if not self.enabled:
            return
        from ts.metrics.metric_type_enum import MetricTypes

        kinds = {LATENCY: ("s", MetricTypes.HISTOGRAM)}
        kinds.update({name: ("count", MetricTypes.COUNTER) for name in COUNTERS})
        for name, (unit, kind) in kinds.items():
            try:
                self._metrics[name] = cache.get_metric(name, kind)
            except Exception:  # MetricsCacheKeyError: not declared in metrics.yaml
                self._metrics[name] = cache.add_metric_to_cache(name, unit, DIMENSIONS, kind)

    def observe_latency(self, seconds: float, request_id: str | None) -> None:
        if self.enabled:
            self._metrics[LATENCY].add_or_update(seconds, self._values, request_id or "")

    def add(self, name: str, value: float, request_id: str | None) -> None:
        if self.enabled:
            self._metrics[name].add_or_update(value, self._values, request_id or "")
