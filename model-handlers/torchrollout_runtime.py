"""What the base handler needs besides request parsing: weights loading and custom metrics.

Weights: three formats, told apart by sniffing the zip entries torch writes (or forced by
`"format"` in the config):
    torchscript  an entry `<dir>/code/...` and `<dir>/constants.pkl`   -> torch.jit.load
    export       an entry `<dir>/archive_format` or `<dir>/models/*.json` (torch.export .pt2)
                                                                         -> torch.export.load
    state_dict   anything else (`<dir>/data.pkl`, or a legacy pickle)    -> torch.load(
                 weights_only=True) into the network the `architecture` block describes.
torch.export.load unpickles parts of a .pt2 with weights_only=False, pickle.loads its opaque
objects and loads AOTInductor libraries: a .pt2 with AOTInductor or opaque/custom-object
records is refused, and the rest loads with TORCH_FORCE_WEIGHTS_ONLY_LOAD set, so no pickle
in it can run code (the archive builder refuses such files before packing them, too).
Optional `"quantize": "dynamic-int8"` applies dynamic int8 quantization (Linear/LSTM/GRU)
to state_dict models, the only format that is a plain eager `nn.Module`.

Device and precision: the model runs on the GPU TorchServe assigned to the worker
(`cuda:<gpu_id>`) when CUDA is there, else on the CPU; `"precision": "fp32" | "bf16" | "fp16"`
runs the forward under `torch.autocast` for that device (fp16 falls back to fp32 on the CPU).

Metrics: the names below are a contract with the operator's PromQL templates. Each metric has
the dimensions ModelName and model_version (the per-head ones add Head); TorchServe's front
end adds Hostname.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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
# Per head of a multi-output model: a metric's dimensions are fixed per name in TorchServe,
# hence names of their own rather than a Head dimension on the whole-model counters.
HEAD_LABELED = "torchrollout_head_labeled"
HEAD_CORRECT = "torchrollout_head_correct"
HEAD_ABS_ERROR_SUM = "torchrollout_head_abs_error_sum"
HEAD_COUNTERS = (HEAD_LABELED, HEAD_CORRECT, HEAD_ABS_ERROR_SUM)
HEAD_DIMENSIONS = [*DIMENSIONS, "Head"]

FORMATS = ("state_dict", "torchscript", "export")
FORCE_WEIGHTS_ONLY_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_NO_WEIGHTS_ONLY_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
# Records of a .pt2 (below its root folder) that torch.export.load would run as native code
# (AOTInductor) or unpickle with plain pickle (opaque / custom objects).
EXPORT_CODE_RECORDS = (
    "data/aotinductor/",
    "data/constants/opaque_obj_",
    "data/constants/custom_obj_",
)
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class Placement:
    """Where the forward runs and under which autocast dtype (None: plain fp32).

    `notes` are the lines the handler logs once at load: why it is not on a GPU, or not
    in the precision the config asked for.
    """

    device: torch.device
    autocast: torch.dtype | None
    notes: tuple[str, ...] = ()

    def autocast_context(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)


def place(config: Mapping[str, Any], gpu_id: Any) -> Placement:
    """The device and precision for a worker TorchServe gave `gpu_id` (None: no GPU)."""
    precision = config.get("precision", "fp32")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    notes = []
    device = torch.device("cpu")
    if not torch.cuda.is_available():
        notes.append("running on the CPU: no CUDA (torch.cuda.is_available() is False)")
    elif gpu_id is None:
        notes.append("running on the CPU: TorchServe assigned no gpu_id to this worker")
    elif config.get("quantize"):
        notes.append("running on the CPU: quantize dynamic-int8 has CPU kernels only")
    else:
        device = torch.device(f"cuda:{int(gpu_id)}")
    dtype = PRECISIONS[precision]
    if dtype is torch.float16 and device.type == "cpu":
        # Not every CPU kernel has an fp16 version; bf16 is the CPU's reduced precision.
        notes.append("precision fp16 is not supported on the CPU: running the forward in fp32")
        dtype = None
    return Placement(device, dtype, tuple(notes))


def to_host(output: Any) -> Any:
    """A forward's output (tensor, or dict / list / tuple of them) on the CPU in float32."""
    if isinstance(output, torch.Tensor):
        if output.dtype in (torch.bfloat16, torch.float16):
            output = output.float()
        return output.cpu()
    if isinstance(output, Mapping):
        return {k: to_host(v) for k, v in output.items()}
    if isinstance(output, list | tuple):
        return type(output)(to_host(v) for v in output)
    return output


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


@contextlib.contextmanager
def weights_only_everywhere() -> Iterator[None]:
    """Every torch.load inside is weights-only, whatever its call site passes (torch reads
    TORCH_FORCE_WEIGHTS_ONLY_LOAD on each call, and fails when the opposite is set too)."""
    names = (FORCE_WEIGHTS_ONLY_ENV, FORCE_NO_WEIGHTS_ONLY_ENV)
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ[FORCE_WEIGHTS_ONLY_ENV] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_export(path: Path) -> Any:
    """torch.export.load of a .pt2 that holds no code and no pickled objects beyond tensors."""
    with zipfile.ZipFile(path) as archive:
        tails = {name.split("/", 1)[-1] for name in archive.namelist()}
    code = sorted(t for t in tails if t.startswith(EXPORT_CODE_RECORDS))
    if code:
        raise ValueError(
            f"weights: {path.name} holds {code[0]}, which would run code when loaded; refused"
        )
    with weights_only_everywhere():
        return torch.export.load(str(path))


def load_model(
    path: Path,
    config: Mapping[str, Any],
    build: Callable[[Mapping[str, Any]], nn.Module],
    device: torch.device | None = None,
) -> Callable[..., Any]:
    """Load weights in whatever format they are in; return a callable in eval mode on `device`
    (the CPU by default)."""
    device = device or torch.device("cpu")
    fmt = str(config.get("format") or sniff_format(path))
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
    quantize = config.get("quantize")
    if quantize not in (None, "dynamic-int8"):
        raise ValueError(f"quantize: expected 'dynamic-int8' or nothing, got {quantize!r}")
    if quantize and fmt != "state_dict":
        raise ValueError(f"quantize: dynamic-int8 needs state_dict weights, not {fmt}")
    if quantize and device.type != "cpu":
        raise ValueError(f"quantize: dynamic-int8 runs on the CPU only, not {device}")
    if fmt == "torchscript":
        with warnings.catch_warnings():
            # torch.jit is deprecated in torch 2.13 but still the format many models ship in.
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(path), map_location=device)
        scripted.eval()
        return scripted  # type: ignore[no-any-return]
    if fmt == "export":
        program = load_export(path)
        if device.type != "cpu":
            # Tensors the graph creates (an RNN's zero state) carry the export's device:
            # the pass rewrites those too, which moving the parameters alone would not.
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        # An exported module refuses .eval(); it was traced in whatever mode it was exported in.
        return program.module()  # type: ignore[no-any-return]
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
    return model.to(device)


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

        kinds = {LATENCY: ("s", MetricTypes.HISTOGRAM, DIMENSIONS)}
        kinds.update({name: ("count", MetricTypes.COUNTER, DIMENSIONS) for name in COUNTERS})
        kinds.update(
            {name: ("count", MetricTypes.COUNTER, HEAD_DIMENSIONS) for name in HEAD_COUNTERS}
        )
        for name, (unit, kind, dimensions) in kinds.items():
            try:
                self._metrics[name] = cache.get_metric(name, kind)
            except Exception:  # MetricsCacheKeyError: not declared in metrics.yaml
                self._metrics[name] = cache.add_metric_to_cache(name, unit, dimensions, kind)

    def observe_latency(self, seconds: float, request_id: str | None) -> None:
        if self.enabled:
            self._metrics[LATENCY].add_or_update(seconds, self._values, request_id or "")

    def add(self, name: str, value: float, request_id: str | None) -> None:
        if self.enabled:
            self._metrics[name].add_or_update(value, self._values, request_id or "")

    def add_head(self, name: str, head: str, value: float, request_id: str | None) -> None:
        """One of HEAD_COUNTERS for one head of a multi-output model."""
        if self.enabled:
            self._metrics[name].add_or_update(value, [*self._values, head], request_id or "")
