"""TorchServe handler `graph-classifier`: dense GCN graph classifiers (plain torch).

Input: `{"nodes": [[f1, ...], ...], "adjacency": [[0, 1, ...], ...]}` — N nodes x F features
and an N x N adjacency (raw; the model normalises it). Graphs of equal size share a forward.
"""

from __future__ import annotations

import torch

from torchrollout_base import ClassifierHandler
from torchrollout_io import FieldSpec, InvalidInput


class GraphClassifierHandler(ClassifierHandler):
    family = "graph-classifier"

    def input_specs(self) -> list[FieldSpec]:
        features = int(self.architecture().get("input_size", 1))
        return [FieldSpec("nodes", (None, features)), FieldSpec("adjacency", (None, None))]

    def check_instance(self, tensors: dict[str, torch.Tensor], path: str) -> None:
        n = tensors["nodes"].shape[0]
        shape = list(tensors["adjacency"].shape)
        if shape != [n, n]:
            field = f"{path}.adjacency" if path else "adjacency"
            raise InvalidInput(field, f"expected shape [{n}, {n}] (one row per node), got {shape}")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["nodes"], batch["adjacency"])  # type: ignore[no-any-return]
