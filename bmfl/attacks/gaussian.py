"""Gaussian noise: the update is replaced by noise, w^{r-1} + N(0, σ²I) (σ = ``std``)."""

from __future__ import annotations

import torch

from bmfl.attacks.base import Attack, AttackContext, register_attack


@register_attack("gaussian")
class GaussianNoise(Attack):
    trains = False

    def __init__(self, std: float = 1.0) -> None:
        if std <= 0:
            raise ValueError("std must be positive")
        self.std = std

    def poison_update(self, upload: torch.Tensor, context: AttackContext) -> torch.Tensor:
        noise = torch.randn(upload.shape, generator=context.generator, dtype=upload.dtype)
        return context.reference + self.std * noise
