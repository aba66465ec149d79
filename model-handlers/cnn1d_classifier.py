"""TorchServe handler `cnn1d-classifier`: 1-D convolutional classifiers over time series.

Input: `{"input": [[c1, c2, ...], ...]}` (time steps x channels).
"""

from __future__ import annotations

from torchrollout_base import ClassifierHandler


class CNN1dClassifierHandler(ClassifierHandler):
    family = "cnn1d-classifier"
