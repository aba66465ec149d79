"""TorchServe handler `sequence-regressor`: GRU / LSTM forecasters (e.g. bandwidth).

Input: `{"input": [[f1, ...], ...]}`; answer `{"prediction": [y1, ..., yH]}` (H =
`architecture.horizon`, a list even when H is 1). A `label` is a number (H = 1) or a list of
H numbers; the absolute error metric adds the mean |prediction - label| over the H steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from torchrollout_base import Outcome, TorchRolloutHandler
from torchrollout_io import Instance, parse_number_list


class SequenceRegressorHandler(TorchRolloutHandler):
    family = "sequence-regressor"

    def horizon(self) -> int:
        return int(self.architecture().get("horizon", self.config.get("horizon", 1)))

    def parse_label(self, value: Any, field: str) -> Any:
        return parse_number_list(value, field, self.horizon())

    def postprocess(self, output: Any, instances: Sequence[Instance]) -> list[Outcome]:
        predictions = output.reshape(len(instances), -1)
        outcomes = []
        for k, inst in enumerate(instances):
            values = predictions[k]
            error = None
            if inst.labeled:
                # In float64: |prediction - label| of two float32s may overflow a float32.
                target = torch.tensor(inst.label, dtype=torch.float64)
                error = float((values.double() - target).abs().mean())
            outcomes.append(Outcome({"prediction": values.tolist()}, abs_error=error))
        return outcomes
