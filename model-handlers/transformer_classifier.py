"""TorchServe handler `transformer-classifier`: Transformer-encoder sequence classifiers.

Input: `{"input": [[f1, f2, ...], ...]}` (time steps x features), at most
`architecture.max_len` steps (the learned positional embedding's length).
"""

from __future__ import annotations

import torch

from torchrollout_base import ClassifierHandler
from torchrollout_io import InvalidInput


class TransformerClassifierHandler(ClassifierHandler):
    family = "transformer-classifier"

    def check_instance(self, tensors: dict[str, torch.Tensor], path: str) -> None:
        max_len = self.architecture().get("max_len")
        steps = tensors["input"].shape[0]
        if max_len is not None and steps > int(max_len):
            field = f"{path}.input" if path else "input"
            raise InvalidInput(field, f"{steps} time steps; at most {max_len}")
