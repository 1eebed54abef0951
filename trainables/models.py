"""PyTorch models: an MLP and a small CNN, built from a trial's hyperparameters."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.hparams import TrialParams

#: Activation modules whose units can be dead (inactive for every input).


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name``."""
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"activation: unknown {name!r}")


class MLP(nn.Sequential):
    """Flatten, then ``hidden_layers`` x [Linear(width), BatchNorm?, activation, Dropout?], Linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, p: TrialParams) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for _ in range(p.hidden_layers):
            layers.append(nn.Linear(fan_in, p.width))
            if p.batch_norm:
                layers.append(nn.BatchNorm1d(p.width))
            layers.append(make_activation(p.activation))
            if p.dropout > 0:
                layers.append(nn.Dropout(p.dropout))
            fan_in = p.width
        layers.append(nn.Linear(fan_in, num_classes))
        super().__init__(*layers)


class CNN(nn.Module):
    """``hidden_layers`` conv blocks of ``width`` channels (2-D or 1-D by input), global pooling, Linear.

    Each block is conv(k=3, same padding), BatchNorm?, activation, and a 2x max-pool while the
    spatial size stays at least 4. Inputs of shape (C, L) use 1-D layers; (C, H, W) 2-D ones.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, p: TrialParams) -> None:
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ValueError(f"cnn: needs (C, L) or (C, H, W) inputs, got shape {input_shape}")
        one_d = len(input_shape) == 2
        conv, bn, pool = (
            (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d) if one_d else (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        )
        channels, size = input_shape[0], min(input_shape[1:])
        blocks: list[nn.Module] = []
        for _ in range(max(1, p.hidden_layers)):
            blocks.append(conv(channels, p.width, kernel_size=3, padding=1))
            if p.batch_norm:
                blocks.append(bn(p.width))
            blocks.append(make_activation(p.activation))
            if size >= 8:
                blocks.append(pool(2))
                size //= 2
            channels = p.width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1) if one_d else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p.dropout) if p.dropout > 0 else nn.Identity()
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


def init_weights(model: nn.Module, scheme: str, scale: float) -> None:
    """Initialise weights by ``scheme`` (PyTorch's default keeps them), then multiply by ``scale``.

    Biases of re-initialised layers are set to zero; normalisation layers are left alone.
    """
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            continue
        with torch.no_grad():
            if scheme == "kaiming":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif scheme == "xavier":
                nn.init.xavier_normal_(module.weight)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(module.weight)
            elif scheme != "default":
                raise ValueError(f"init: unknown scheme {scheme!r}")
            if scheme != "default" and module.bias is not None:
                module.bias.zero_()
            if scale != 1.0:
                module.weight.mul_(scale)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, p: TrialParams) -> nn.Module:
    """Build and initialise model ``name`` (one of :data:`trainables.hparams.MODELS`) for the data's shape."""
    builders: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN}
    if name not in builders:
        raise ValueError(f"trainable.model: unknown model {name!r}")
    model = builders[name](input_shape, num_classes, p)
    init_weights(model, p.init, p.init_scale)
    return model
