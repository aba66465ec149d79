"""TorchServe handler `sequence-classifier`: LSTM / GRU / BiLSTM+attention classifiers.

Input: `{"input": [[f1, f2, ...], ...]}` (time steps x features). With `architecture.heads`
(or `targets` for TorchScript / export weights returning a dict) the model is multi-output
and answers `{"outputs": {target: {...}}}`. Everything else is in `torchrollout_base`.
"""

from __future__ import annotations

from torchrollout_base import ClassifierHandler


class SequenceClassifierHandler(ClassifierHandler):
    family = "sequence-classifier"
