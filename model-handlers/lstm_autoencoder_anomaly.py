"""TorchServe handler `lstm-autoencoder-anomaly`: anomaly flags from reconstruction error.

Input: `{"input": [[f1, ...], ...]}`. The score is the mean squared reconstruction error of
the window; the window is an anomaly when score > `threshold` (config, required). Answer:
`{"prediction": bool, "anomaly": bool, "score": float, "threshold": float}`. A `label` is
true/false (or 1/0): correct when the flag equals it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from torchrollout_base import Outcome, TorchRolloutHandler
from torchrollout_io import Instance, InvalidInput, shown


class LSTMAutoencoderAnomalyHandler(TorchRolloutHandler):
    family = "lstm-autoencoder-anomaly"

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        threshold = self.config.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ValueError(f"threshold: expected a number in the config, got {threshold!r}")
        self.threshold = float(threshold)

    def parse_label(self, value: Any, field: str) -> Any:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise InvalidInput(field, f"expected true/false (or 1/0), got {shown(value)}")

    def postprocess(self, output: Any, instances: Sequence[Instance]) -> list[Outcome]:
        inputs = torch.stack([i.tensors["input"] for i in instances])
        scores = ((inputs - output) ** 2).mean(dim=(1, 2))
        outcomes = []
        for k, inst in enumerate(instances):
            score = float(scores[k])
            flagged = score > self.threshold
            body = {
                "prediction": flagged,
                "anomaly": flagged,
                "score": score,
                "threshold": self.threshold,
            }
            correct = (flagged == inst.label) if inst.labeled else None
            outcomes.append(Outcome(body, correct=correct, anomaly=flagged))
        return outcomes
