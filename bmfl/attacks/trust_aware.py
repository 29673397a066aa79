"""A defence-aware attacker against FLTrust (``fltrust``; Cao et al. 2021, Eq. 2–4).

FLTrust weights an upload by TS = ReLU(cos(Δ, g_0)) and rescales it to ‖g_0‖, so an
update's norm buys nothing and any direction against g_0 gets weight 0. The attackers do
not see g_0 (the edge trains it on its root data) and estimate its direction by the mean
benign update μ̂ they know. An upload along d = cos φ·μ̂ + sin φ·û, with û a unit harmful
direction orthogonal to μ̂, enters the aggregate with trust ≈ cos φ and pushes it along û by
‖g_0‖·cos φ·sin φ per attacker: largest at φ = 45°. Under DP-SGD an honest update is
mostly noise, its cosine with g_0 is small, and the attackers' ≈ 0.7 outweighs it.

û is the component orthogonal to μ̂ of ``direction``: ``"std"`` −σ (the coordinate-wise
standard deviation of the benign updates, ALIE's direction: where honest vehicles
disagree most), ``"reference"`` −w^{r-1} (shrinks the model towards zero) or ``"random"``
(a direction drawn from the edge's collusion generator). Every attacker of the edge sends
w^{r-1} + s·d, s the median benign norm, so that norm bounding leaves it whole too.
"""

from __future__ import annotations

import math

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack

DIRECTIONS = ("std", "reference", "random")


def orthogonal_unit(vector: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """``vector`` without its component along the unit ``axis``, normalised (zero if nothing is left)."""
    rest = vector - (vector @ axis) * axis
    norm = rest.norm()
    return rest / norm if norm > 0 else torch.zeros_like(rest)


@register_attack("trust_aware")
class TrustAware(Attack):
    colludes = True

    def __init__(self, angle: float = 45.0, direction: str = "std", omniscient: bool = True) -> None:
        if not 0 < angle < 90:
            raise ValueError("angle must be in (0, 90) degrees: at 90 or more FLTrust gives the upload weight 0")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}")
        self.angle = angle
        self.direction = direction
        self.omniscient = omniscient
        self.knowledge = "omniscient" if omniscient else "own"

    def harmful(self, deltas: torch.Tensor, reference: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.direction == "std":
            return -deltas.std(dim=0) if len(deltas) > 1 else -deltas[0].abs()
        if self.direction == "reference":
            return -reference
        return torch.randn(reference.numel(), generator=generator, dtype=torch.float64)

    def collude(self, view: EdgeView) -> torch.Tensor:
        ref = view.reference.to(torch.float64)
        deltas = view.known().to(torch.float64) - ref
        mean = deltas.mean(dim=0)
        axis = mean / mean.norm().clamp_min(1e-30)
        side = orthogonal_unit(self.harmful(deltas, ref, view.generator), axis)
        phi = math.radians(self.angle)
        direction = math.cos(phi) * axis + math.sin(phi) * side
        sent = ref + float(deltas.norm(dim=1).median()) * direction
        return sent.to(view.own.dtype).expand_as(view.own).clone()
