"""Pixel-pattern backdoor (Bagdasaryan et al. 2020; BMFL §V-C).

The attacker stamps a trigger (a 4×4 checkerboard of maximum-intensity pixels one pixel
in from the top-left corner) on a ``poison_fraction`` of its images, relabels those to
the target label 2 and keeps the rest clean, so the model learns both the main task
and the backdoor; it trains with its own η_a = 0.1 for E_a = 10 full epochs (any cap on
honest vehicles' local steps does not bind it). ``dp`` = False makes it train without
clipping or noise (an attacker gains nothing from protecting its own data); the
default None keeps the vehicle's setting.
Success is measured on triggered test inputs whose true label is not the target:
the fraction classified as the target (:func:`attack_success_rate`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from bmfl.attacks.base import Attack, predicted_labels, register_attack
from bmfl.data.base import TensorData
from bmfl.training.local import LocalTrainingConfig


def trigger_mask(height: int, width: int, size: int = 4, offset: int = 1) -> torch.Tensor:
    """(H, W) bool: a ``size``×``size`` checkerboard starting at (offset, offset)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    rows = torch.arange(size)[:, None]
    cols = torch.arange(size)[None, :]
    mask[offset : offset + size, offset : offset + size] = (rows + cols) % 2 == 0
    return mask


def add_trigger(x: torch.Tensor, value: float) -> torch.Tensor:
    """A copy of images ``x`` (N, C, H, W) with the trigger pixels set to ``value``."""
    out = x.clone()
    mask = trigger_mask(x.shape[-2], x.shape[-1])
    out[..., mask] = value
    return out


def attack_success_rate(model: nn.Module, test: TensorData, target: int = 2, value: float | None = None) -> float:
    """Fraction of triggered non-target test images classified as ``target``."""
    rows = torch.nonzero(test.y != target).flatten()
    if len(rows) == 0:
        raise ValueError("the test set has no image outside the target class")
    value = float(test.x.max()) if value is None else value
    hits = sum(int((predicted_labels(model, add_trigger(test.x[part], value)) == target).sum()) for part in rows.split(2048))
    return hits / len(rows)  # triggered 2,048 at a time: one chunk of copies, whatever the test set's size


@register_attack("backdoor")
class PixelBackdoor(Attack):
    def __init__(
        self, target: int = 2, lr: float = 0.1, epochs: int = 10, poison_fraction: float = 0.5, dp: bool | None = None
    ) -> None:
        if not 0 < poison_fraction <= 1:
            raise ValueError("poison_fraction must be in (0, 1]")
        self.target = target
        self.lr = lr
        self.epochs = epochs
        self.poison_fraction = poison_fraction
        self.dp = dp

    def poison_data(self, data: TensorData, generator: torch.Generator) -> TensorData:
        if data.x.dim() != 4:
            raise ValueError("the pixel backdoor needs image data (N, C, H, W)")
        n_poison = math.ceil(self.poison_fraction * len(data))
        rows = torch.randperm(len(data), generator=generator)[:n_poison]
        x, y = data.x.clone(), data.y.clone()
        x[rows] = add_trigger(x[rows], float(data.x.max()))
        y[rows] = self.target
        return TensorData(x, y, data.num_classes, data.groups)

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        dp = config.dp if self.dp is None else self.dp
        return dataclasses.replace(config, lr=self.lr, epochs=self.epochs, max_steps=None, dp=dp)

    def success_rate(self, model: nn.Module, test: TensorData) -> float:
        return attack_success_rate(model, test, self.target)
