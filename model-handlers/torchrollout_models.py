"""Model architectures for the built-in handlers, built from the `architecture` config block.

State-dict weights carry no code, so the handler rebuilds the network from plain config fields
(`kind`, sizes, heads) and then loads the tensors with `weights_only=True`. The same classes are
used by `examples/models/make_models.py` to train the example models and by the tests to compute
the raw forward pass a served answer is compared with. Plain torch only (no graph library), and
every forward is traceable by TorchScript and `torch.export`.

Packed into every archive next to the handler (torch-model-archiver `--extra-files`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

Arch = Mapping[str, Any]


# Head names become a metric dimension (TorchServe's `Head`, a Prometheus label) and parts of
# a log line TorchServe parses, so they are plain identifiers; the operator's spec uses the
# same pattern for a check's `head`.
HEAD_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")


def _int(arch: Arch, key: str, default: int | None = None) -> int:
    value = arch.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"architecture.{key}: expected a positive integer, got {value!r}")
    return value


def head_sizes(arch: Arch, key: str) -> dict[str, int]:
    """`architecture.<key>` ({head: size}) checked: identifier names, positive sizes."""
    heads = arch.get(key)
    if heads is None:
        return {}
    if not isinstance(heads, Mapping) or not heads:
        raise ValueError(f"architecture.{key}: expected a non-empty map of head name to size")
    for name, size in heads.items():
        if not isinstance(name, str) or not HEAD_PATTERN.fullmatch(name):
            raise ValueError(
                f"architecture.{key}: head name {name!r} must match {HEAD_PATTERN.pattern}"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(
                f"architecture.{key}.{name}: expected a positive integer, got {size!r}"
            )
    return {str(name): int(size) for name, size in heads.items()}


def declared_heads(arch: Arch) -> tuple[dict[str, int], dict[str, int]]:
    """The (classification, regression) heads of a multi-output sequence model."""
    classes, values = head_sizes(arch, "heads"), head_sizes(arch, "regression_heads")
    both = sorted(set(classes) & set(values))
    if both:
        raise ValueError(
            f"architecture.regression_heads: {both} also named in architecture.heads; "
            "a head is either a classification or a regression head"
        )
    return classes, values


class SequenceClassifier(nn.Module):
    """LSTM / GRU / BiLSTM+attention over [batch, time, features].

    One head (`num_classes`) returns logits [batch, classes]. Named heads make it multi-output
    and return a dict with one entry per head: `heads` ({target: classes}) give logits,
    `regression_heads` ({target: outputs}) give raw values [batch, outputs].
    """

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        kind = arch.get("kind", "lstm")
        hidden = _int(arch, "hidden_size", 32)
        layers = _int(arch, "num_layers", 1)
        self.attention = kind == "bilstm-attention"
        rnn: type[nn.LSTM] | type[nn.GRU] = nn.GRU if kind == "gru" else nn.LSTM
        if kind not in ("lstm", "gru", "bilstm-attention"):
            raise ValueError(
                f"architecture.kind: expected lstm, gru or bilstm-attention, got {kind!r}"
            )
        self.rnn = rnn(
            _int(arch, "input_size"),
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=self.attention,
        )
        width = hidden * 2 if self.attention else hidden
        self.score = nn.Linear(width, 1)
        classes, values = declared_heads(arch)
        self.multi = bool(classes or values)
        sizes = classes if self.multi else {"output": _int(arch, "num_classes")}
        self.heads = nn.ModuleDict({name: nn.Linear(width, n) for name, n in sizes.items()})
        # Only in the state_dict when there are regression heads: older weights still load.
        self.regression = nn.ModuleDict({name: nn.Linear(width, n) for name, n in values.items()})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        if self.attention:
            weights = torch.softmax(self.score(out), dim=1)
            return (weights * out).sum(dim=1)
        return out[:, -1]

    def forward(self, x: torch.Tensor) -> Any:
        h = self.encode(x)
        logits = {name: head(h) for name, head in self.heads.items()}
        if self.multi:
            return {**logits, **{name: head(h) for name, head in self.regression.items()}}
        return logits["output"]


class SequenceRegressor(nn.Module):
    """GRU / LSTM forecaster: [batch, time, features] -> [batch, horizon]."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        rnn: type[nn.LSTM] | type[nn.GRU] = (
            nn.LSTM if str(arch.get("kind", "")).startswith("lstm") else nn.GRU
        )
        hidden = _int(arch, "hidden_size", 32)
        self.rnn = rnn(
            _int(arch, "input_size"),
            hidden,
            num_layers=_int(arch, "num_layers", 1),
            batch_first=True,
        )
        self.out = nn.Linear(hidden, _int(arch, "horizon", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.out(out[:, -1])


class TransformerClassifier(nn.Module):
    """Transformer encoder with a learned positional embedding and mean pooling."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        d_model = _int(arch, "d_model", 32)
        self.proj = nn.Linear(_int(arch, "input_size"), d_model)
        self.pos = nn.Parameter(torch.zeros(1, _int(arch, "max_len", 128), d_model))
        layer = nn.TransformerEncoderLayer(
            d_model,
            _int(arch, "nhead", 4),
            dim_feedforward=_int(arch, "dim_feedforward", 64),
            dropout=0.0,
            batch_first=True,
        )
        # Nested tensors only help with padding masks, and their fast path warns without one.
        self.encoder = nn.TransformerEncoder(
            layer, _int(arch, "num_layers", 1), enable_nested_tensor=False
        )
        self.out = nn.Linear(d_model, _int(arch, "num_classes"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) + self.pos[:, : x.shape[1]]
        return self.out(self.encoder(h).mean(dim=1))


class CNN1dClassifier(nn.Module):
    """1-D convolutions over time: [batch, time, channels] -> logits."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        kernel = _int(arch, "kernel_size", 3)
        widths = [_int(arch, "input_size"), *[int(c) for c in arch.get("channels", [16, 32])]]
        blocks: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths):
            blocks += [nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.ReLU()]
        self.features = nn.Sequential(*blocks)
        self.out = nn.Linear(widths[-1], _int(arch, "num_classes"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.transpose(1, 2))
        return self.out(h.mean(dim=2))


class GCNClassifier(nn.Module):
    """Dense graph convolution (Kipf & Welling) with mean pooling, in plain torch.

    forward(nodes [batch, N, F], adjacency [batch, N, N]) -> logits [batch, classes]. The
    adjacency is symmetrically normalised with self-loops inside forward, so clients send the
    raw 0/1 (or weighted) matrix.
    """

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        hidden = _int(arch, "hidden_size", 32)
        widths = [_int(arch, "input_size")] + [hidden] * _int(arch, "num_layers", 2)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.out = nn.Linear(hidden, _int(arch, "num_classes"))

    def forward(self, nodes: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(adjacency.shape[-1], dtype=adjacency.dtype, device=adjacency.device)
        a = adjacency + eye
        d = a.sum(dim=-1).clamp(min=1e-6).rsqrt()
        a_norm = d.unsqueeze(-1) * a * d.unsqueeze(-2)
        h = nodes
        for layer in self.layers:
            h = torch.relu(a_norm @ layer(h))
        return self.out(h.mean(dim=1))


class MLPPolicy(nn.Module):
    """MLP policy network: observation [batch, features] -> action logits [batch, actions]."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        widths = [_int(arch, "input_size"), *[int(h) for h in arch.get("hidden_sizes", [64, 64])]]
        blocks: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            blocks += [nn.Linear(a, b), nn.Tanh()]
        blocks.append(nn.Linear(widths[-1], _int(arch, "num_actions")))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSTMAutoencoder(nn.Module):
    """Sequence-to-sequence LSTM autoencoder: returns the reconstruction of its input."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        features = _int(arch, "input_size")
        hidden = _int(arch, "hidden_size", 16)
        self.encoder = nn.LSTM(features, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(x)
        z = h[-1].unsqueeze(1).expand(-1, x.shape[1], -1)
        out, _ = self.decoder(z)
        return self.out(out)


BUILDERS: dict[str, Callable[[Arch], nn.Module]] = {
    "lstm": SequenceClassifier,
    "gru": SequenceClassifier,
    "bilstm-attention": SequenceClassifier,
    "gru-regressor": SequenceRegressor,
    "lstm-regressor": SequenceRegressor,
    "transformer": TransformerClassifier,
    "cnn1d": CNN1dClassifier,
    "gcn": GCNClassifier,
    "mlp-policy": MLPPolicy,
    "lstm-autoencoder": LSTMAutoencoder,
}


def build_model(arch: Arch) -> nn.Module:
    """Instantiate the network named by `arch["kind"]` (see BUILDERS) from its fields."""
    kind = arch.get("kind")
    builder = BUILDERS.get(str(kind))
    if builder is None:
        raise ValueError(f"architecture.kind: unknown {kind!r}; expected one of {sorted(BUILDERS)}")
    return builder(arch)
