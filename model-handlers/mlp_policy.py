"""TorchServe handler `mlp-policy`: MLP policy networks (action probabilities, argmax action).

Input: `{"input": [o1, o2, ...]}` (one observation vector). The answer adds `"action"` (the
argmax action, same as `prediction`); a `label` is the expected action.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchrollout_base import ClassifierHandler, Outcome
from torchrollout_io import Instance


class MLPPolicyHandler(ClassifierHandler):
    family = "mlp-policy"

    def input_shape(self) -> tuple[int | None, ...]:
        shape = self.config.get("input", {}).get("shape")
        if shape is not None:
            return tuple(None if d is None else int(d) for d in shape)
        return (int(self.architecture().get("input_size", 1)),)

    def postprocess(self, output: Any, instances: Sequence[Instance]) -> list[Outcome]:
        outcomes = super().postprocess(output, instances)
        for outcome in outcomes:
            outcome.body["action"] = outcome.body["prediction"]
        return outcomes
