"""TorchServe handler `sequence-classifier`: LSTM / GRU / BiLSTM+attention classifiers.

Input: `{"input": [[f1, f2, ...], ...]}` (time steps x features). With `architecture.heads`
(or `targets` for TorchScript / export weights returning a dict) and/or
`architecture.regression_heads` the model is multi-output and answers
`{"outputs": {head: {...}}}`; a label names some or all heads. Everything else is in
`torchrollout_base`.
"""

from __future__ import annotations

from torchrollout_base import ClassifierHandler


class SequenceClassifierHandler(ClassifierHandler):
    family = "sequence-classifier"
