"""Data poisoning by input noise (FBFL §III-D: attackers "modify the original data on the
clients"; FBFL gives no recipe, so this is ours): a ``fraction`` of the attacker's
inputs get additive Gaussian noise N(0, ``std``²) in the data's own (normalised) units;
labels stay true. The vehicle then trains honestly on the noisy data."""

from __future__ import annotations

import math

import torch

from bmfl.attacks.base import Attack, register_attack
from bmfl.data.base import TensorData


@register_attack("data_noise")
class DataNoise(Attack):
    def __init__(self, std: float = 3.0, fraction: float = 1.0) -> None:
        if std <= 0 or not 0 < fraction <= 1:
            raise ValueError("need std > 0 and fraction in (0, 1]")
        self.std = std
        self.fraction = fraction

    def poison_data(self, data: TensorData, generator: torch.Generator) -> TensorData:
        rows = torch.randperm(len(data), generator=generator)[: math.ceil(self.fraction * len(data))]
        x = data.x.clone()
        noise = torch.randn(x[rows].shape, generator=generator, dtype=x.dtype)
        x[rows] = x[rows] + self.std * noise
        return TensorData(x, data.y, data.num_classes, data.groups)
