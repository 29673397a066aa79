"""Tuning-and-scaling model poisoning (poisoning study `001` Alg. 2, §VI-A).

1. Start from w^{r-2} (τ = max(t − 1, 0)), so the update begins as the negative of the
   previous global update (w^{r-1} when no older model is known);
2. fine-tune by *maximising* the training loss at learning rate lr/10;
3. send w^{r-1} + γ·(w_k − w^{r-1}), with γ chosen by ``scaling``:

   - ``"fixed"``: γ = ``gamma`` (the paper uses 10³ without anomaly detection);
   - ``"history"``: the paper's detector-evading scale, ‖γΔ‖ = min(a1·‖Δ_prev‖,
     a2 + ‖Δ_prev‖), Δ_prev = w^{r-1} − w^{r-2}, a1 ~ U(10, 11), a2 ~ U(1, 1.1);
   - ``"bound"``: ‖γΔ‖ = (1 − ``margin``)·``norm_bound``, just under a known norm
     bound (e.g. the L2 detector's c1·μ as estimated by the attacker).
"""

from __future__ import annotations

import dataclasses

import torch

from bmfl.attacks.base import Attack, AttackContext, register_attack
from bmfl.training.local import LocalTrainingConfig

SCALINGS = ("fixed", "history", "bound")


@register_attack("tuning_scaling")
class TuningAndScaling(Attack):
    def __init__(
        self,
        scaling: str = "fixed",
        gamma: float = 1000.0,
        norm_bound: float | None = None,
        margin: float = 1e-3,
        lr_divisor: float = 10.0,
        a1: tuple[float, float] = (10.0, 11.0),
        a2: tuple[float, float] = (1.0, 1.1),
    ) -> None:
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}")
        if scaling == "bound" and (norm_bound is None or norm_bound <= 0):
            raise ValueError("scaling='bound' needs a positive norm_bound")
        self.scaling = scaling
        self.gamma = gamma
        self.norm_bound = norm_bound
        self.margin = margin
        self.lr_divisor = lr_divisor
        self.a1 = a1
        self.a2 = a2

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return dataclasses.replace(config, maximize=True, lr=config.lr / self.lr_divisor)

    def start_vector(self, context: AttackContext) -> torch.Tensor:
        if context.previous_reference is None:
            return context.reference
        return context.previous_reference

    def target_norm(self, context: AttackContext) -> float:
        """The norm the scaled update is given (``history`` and ``bound`` modes)."""
        if self.scaling == "bound":
            return (1 - self.margin) * self.norm_bound
        prev = 0.0
        if context.previous_reference is not None:
            prev = float((context.reference - context.previous_reference).norm())
        u = torch.rand(2, generator=context.generator, dtype=torch.float64)
        a1 = self.a1[0] + (self.a1[1] - self.a1[0]) * float(u[0])
        a2 = self.a2[0] + (self.a2[1] - self.a2[0]) * float(u[1])
        return min(a1 * prev, a2 + prev)

    def poison_update(self, upload: torch.Tensor, context: AttackContext) -> torch.Tensor:
        delta = upload - context.reference
        if self.scaling == "fixed":
            gamma = self.gamma
        else:
            norm = float(delta.norm())
            gamma = self.target_norm(context) / norm if norm > 0 else 0.0
        return context.reference + gamma * delta
