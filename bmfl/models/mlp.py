"""Multilayer perceptrons: for image classification (inputs are flattened), and a one-step forecaster."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bmfl.models import register_model


class MLP(nn.Module):
    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (200, 200), num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


@register_model("mlp")
def mlp(in_features: int = 784, hidden: Sequence[int] = (200, 200), num_classes: int = 10) -> nn.Module:
    return MLP(in_features, tuple(hidden), num_classes)


class MLPForecaster(MLP):
    """One-step traffic forecaster (BAFDP's backbone, seed ``000``): an MLP from the
    window's values to the next value, shape (N,)."""

    def __init__(self, in_features: int = 6, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__(in_features, hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(-1)


@register_model("mlp_forecaster")
def mlp_forecaster(in_features: int = 6, hidden: Sequence[int] = (64, 64)) -> nn.Module:
    return MLPForecaster(in_features, tuple(hidden))
