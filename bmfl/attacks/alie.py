"""A little is enough (ALIE; Baruch, Baruch & Goldberg, NeurIPS 2019, §3–4).

The attackers of an edge estimate the per-coordinate mean μ_j and standard deviation
σ_j of the benign updates they know (their own honestly trained uploads, or the honest
uploads of the edge when omniscient) and all send w_j = μ_j − z·σ_j: a shift small
enough to hide inside the spread of honest values, yet consistent across coordinates
and rounds. σ is the unbiased sample standard deviation (``torch.std``, as the authors'
code). ``z`` is fixed, or ``None`` for the paper's z_max (Alg. 3): with n uploads of
which f are the attackers', s = ⌊n/2 + 1⌋ − f honest uploads must be "won over" and
z_max = Φ⁻¹((n − s)/n).
"""

from __future__ import annotations

from statistics import NormalDist

import torch

from bmfl.attacks.base import Attack, EdgeView, register_attack


def z_max(n: int, f: int) -> float:
    """Baruch et al. Alg. 3: Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − f (n uploads, f attackers)."""
    if not 0 < f <= n:
        raise ValueError(f"need 0 < f <= n, got n={n}, f={f}")
    s = n // 2 + 1 - f
    p = (n - s) / n
    if not 0 < p < 1:
        # s <= 0: attackers already hold a majority; the paper's formula leaves [0, 1)
        p = min(max(p, 1e-6), 1 - 1e-6)
    return NormalDist().inv_cdf(p)


def mean_minus_z_std(known: torch.Tensor, z: float) -> torch.Tensor:
    """μ − z·σ elementwise over the rows of ``known`` (σ unbiased; 0 with one row)."""
    x = known.to(torch.float64)
    std = x.std(dim=0) if len(x) > 1 else torch.zeros_like(x[0])
    return (x.mean(dim=0) - z * std).to(known.dtype)


@register_attack("alie")
class ALIE(Attack):
    """``z``: the fixed shift in standard deviations, or None for z_max;
    ``omniscient``: see the edge's honest uploads (else only the attackers' own)."""

    colludes = True

    def __init__(self, z: float | None = 1.5, omniscient: bool = True) -> None:
        self.z = z
        self.omniscient = omniscient
        self.knowledge = "omniscient" if omniscient else "own"

    def collude(self, view: EdgeView) -> torch.Tensor:
        z = z_max(view.total, len(view.vehicles)) if self.z is None else self.z
        return mean_minus_z_std(view.known(), z).expand_as(view.own).clone()
