"""Aggregation-agnostic attacks min-max and min-sum (Shejwalkar & Houmansadr, NDSS 2021,
"Manipulating the Byzantine", §IV-B, Eq. 6–7, Alg. 1).

From the benign updates ∇_i = w̃_i − w^{r-1} the attackers know, with mean μ and a
perturbation direction ∇p, every attacker sends w^{r-1} + μ + γ·∇p with the largest γ
that keeps the malicious update inside the benign cloud:

- min-max (Eq. 6): max_i ‖∇m − ∇_i‖ ≤ max_{i,j} ‖∇_i − ∇_j‖;
- min-sum (Eq. 7): Σ_i ‖∇m − ∇_i‖² ≤ max_i Σ_j ‖∇_i − ∇_j‖².

∇p is ``"std"`` (−σ, coordinate-wise unbiased standard deviation), ``"unit"``
(−μ/‖μ‖) or ``"sign"`` (−sign μ). γ is found by the paper's halving search (Alg. 1)
from γ_init = 10 to precision τ = 1e-5.
"""

from __future__ import annotations

from typing import Callable

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack

PERTURBATIONS = ("std", "unit", "sign")


def perturbation(benign: torch.Tensor, kind: str) -> torch.Tensor:
    """∇p from the (n, d) benign updates."""
    mu = benign.mean(dim=0)
    if kind == "std":
        return -(benign.std(dim=0) if len(benign) > 1 else torch.zeros_like(mu))
    if kind == "unit":
        return -mu / mu.norm().clamp_min(1e-12)
    if kind == "sign":
        return -torch.sign(mu)
    raise ValueError(f"perturbation must be one of {PERTURBATIONS}")


def largest_gamma(ok: Callable[[float], bool], gamma_init: float = 10.0, tau: float = 1e-5) -> float:
    """Alg. 1's halving search for the largest γ with ``ok(γ)`` (0 if none found)."""
    gamma, step, best = gamma_init, gamma_init, 0.0
    while abs(best - gamma) > tau:
        if ok(gamma):
            best = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return best


def _pairwise_sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, y).pow(2)


def agnostic_update(benign: torch.Tensor, kind: str, objective: str) -> torch.Tensor:
    """μ + γ·∇p for ``objective`` ∈ {"min_max", "min_sum"} (float64 in, float64 out)."""
    mu = benign.mean(dim=0)
    p = perturbation(benign, kind)
    d2 = _pairwise_sq(benign, benign)
    if objective == "min_max":
        bound = float(d2.max())

        def ok(g: float) -> bool:
            return float(_pairwise_sq((mu + g * p)[None], benign).max()) <= bound
    else:
        bound = float(d2.sum(dim=1).max())

        def ok(g: float) -> bool:
            return float(_pairwise_sq((mu + g * p)[None], benign).sum()) <= bound

    return mu + largest_gamma(ok) * p


class _Agnostic(Attack):
    colludes = True
    objective = ""

    def __init__(self, perturbation: str = "std", omniscient: bool = True) -> None:
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {PERTURBATIONS}")
        self.perturbation = perturbation
        self.omniscient = omniscient
        self.knowledge = "omniscient" if omniscient else "own"

    def collude(self, view: EdgeView) -> torch.Tensor:
        ref = view.reference.to(torch.float64)
        benign = view.known().to(torch.float64) - ref
        sent = ref + agnostic_update(benign, self.perturbation, self.objective)
        return sent.to(view.own.dtype).expand_as(view.own).clone()


@register_attack("min_max")
class MinMax(_Agnostic):
    objective = "min_max"


@register_attack("min_sum")
class MinSum(_Agnostic):
    objective = "min_sum"
