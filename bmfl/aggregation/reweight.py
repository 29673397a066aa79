"""Attack-resistant aggregation: repeated-median regression with residual reweighting
(BMFL §IV-C-3, Eq. 14–23, after Fu et al. 2019; docs/algorithms.md §3).

Independently for every coordinate n, over the K uploads:

1. sort the K values y ascending; the regressor x is the rank 0 … K−1;
2. repeated-median slope (Eq. 14) β1 = med_i med_{j≠i} (y_j − y_i)/(x_j − x_i);
   intercept β0 = med(y) − β1·(K−1)/2, the line through (median rank, median value),
   as in the authors' reference code. **Fix:** the paper's Eq. 15 (a repeated median of
   (x_j y_j − x_i y_i)/(x_j − x_i)) is garbled and is not used;
3. residuals r = y − β0 − β1·x (Eq. 16); scale (Eq. 18)
   τ = 1.4826·(1 + 5/(K−1))·med(|r| without its smallest value) + 1e-7, the smallest
   |r| dropped as in the reference code;
4. leverage h of the design X = [1, rank]: h(x) = 1/K + (x − x̄)²/Σ_j(j − x̄)², which
   depends only on K and the rank;
5. confidence (Eq. 17, 19, Huber Ψ clipped at Z = λ·sqrt(2/K)):
   ϖ = min(1, Z·sqrt(1 − h)/|e|), e = r/τ; 0/0 → 1;
6. coordinates with ϖ < ς get the fitted value β0 + β1·x instead of y (Eq. 21,
   **fix:** the paper prints β0 + β0·x);
7. model weight θ_m, two variants (``theta=``):
   - ``"paper"`` (Eq. 20, 22): θ_m = Σ_n ϖ_n^m·𝟙(ϖ_n^m ≥ ς);
   - ``"reference"`` (the authors' code): θ_m = Σ_n ϖ_n^m·s_n with s_n the (unbiased)
     standard deviation of ϖ_n over the K uploads, then θ ← (θ / max θ)²;
8. aggregate (Eq. 23): w = Σ_m θ_m ŵ_m / Σ_m θ_m, ŵ the corrected uploads. If every
   θ_m is 0 (e.g. identical uploads under ``"reference"``: zero spread) the weights
   are equal.

With K ≤ 2 the line passes through every point, all residuals vanish and ϖ = 1.
On the CPU the steps run as one compiled pass over blocks of coordinates
(``bmfl.aggregation.reweight_kernel``: ranks counted, medians from selection networks,
buffers of O(K) bytes per coordinate of a block);
elsewhere (CUDA) as tensor ops over chunks of coordinates sized from K and a memory
budget. The two agree (``tests/test_reweight_kernel.py``).
Known limit (docs/algorithms.md §3): like the median it breaks down beyond 50 % attackers;
the self-reliability filter (``bmfl.filters``) must run first.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator
from bmfl.aggregation.stats import median
from bmfl.device import default_device

THETA_VARIANTS = ("paper", "reference")
MEMORY_BUDGET = 256 << 20
"""Bytes the vectorised path's (chunk, K, K) slope tensors may take, whatever K is."""


def chunk_for(k: int, budget: int = MEMORY_BUDGET) -> int:
    """Coordinates per vectorised chunk: the (chunk, K, K) float32 slopes and the few
    copies the selection makes (×4) within ``budget``."""
    return max(1, budget // (16 * k * k))


def repeated_median_line(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and intercept per row of ``y`` (n, K) against the ranks 0 … K−1 (steps 1–2)."""
    k = y.shape[1]
    ys = y.sort(dim=1).values
    x = torch.arange(k, dtype=y.dtype, device=y.device)
    dx = x[None, :] - x[:, None]
    slopes = (ys[:, None, :] - ys[:, :, None]) / dx
    slopes.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    inner = median(slopes, dim=2, count=k - 1)  # the diagonal's +inf is each row's largest
    beta1 = median(inner, dim=1)
    beta0 = median(ys, dim=1) - beta1 * (k - 1) / 2
    return beta1, beta0


def confidences(y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-value confidence ϖ and fitted line value for ``y`` (n, K) (steps 1–5)."""
    n, k = y.shape
    if k <= 2:
        return torch.ones_like(y), y.clone()
    beta1, beta0 = repeated_median_line(y)
    order = y.argsort(dim=1, stable=True)
    ranks = torch.empty_like(y)
    ranks.scatter_(1, order, torch.arange(k, dtype=y.dtype, device=y.device).expand(n, k).contiguous())
    line = beta0[:, None] + beta1[:, None] * ranks
    residual = y - line
    spread = median(residual.abs().sort(dim=1).values[:, 1:], dim=1)
    tau = 1.4826 * (1 + 5 / (k - 1)) * spread + 1e-7
    centre = (k - 1) / 2
    sxx = k * (k * k - 1) / 12
    leverage = 1 / k + (ranks - centre) ** 2 / sxx
    z = lam * math.sqrt(2 / k)
    e = residual / tau[:, None]
    varpi = (z * torch.sqrt(1 - leverage) / e.abs()).clamp(max=1.0)
    return torch.nan_to_num(varpi, nan=1.0), line


@register_aggregator("reweight")
class ResidualReweighting(Aggregator):
    """``lam`` λ = 2, ``threshold`` ς = 0.1, ``theta`` ∈ {"paper", "reference"} (step 7).
    On the CPU with K ≥ 3 the rule runs as one compiled pass (``compiled``; buffers
    within 4 MiB whatever K is); on a GPU (``bmfl.device.default_device``, or where the
    updates are), or with ``compiled=False``, as tensor ops in
    chunks of ``chunk_size`` coordinates (default: :func:`chunk_for`, memory ≈ chunk·K²·4 bytes
    within :data:`MEMORY_BUDGET`). Both give the same result."""

    def __init__(
        self, lam: float = 2.0, threshold: float = 0.1, theta: str = "paper", chunk_size: int | None = None,
        compiled: bool = True,
    ) -> None:  # fmt: skip
        if theta not in THETA_VARIANTS:
            raise ValueError(f"theta must be one of {THETA_VARIANTS}")
        if lam <= 0 or not 0 <= threshold <= 1 or (chunk_size is not None and chunk_size < 1):
            raise ValueError("need lam > 0, threshold in [0, 1], chunk_size >= 1")
        self.lam = lam
        self.threshold = threshold
        self.theta = theta
        self.chunk_size = chunk_size
        self.compiled = compiled

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        k, d = updates.shape
        device = updates.device if updates.device.type != "cpu" else default_device()
        if device.type == "cpu" and k >= 3 and self.compiled:
            corrected, theta, replaced = self._compiled(updates)
        else:
            corrected, theta, replaced = self._vectorised(updates, device)
        raw_theta = theta.clone()
        if self.theta == "reference" and theta.max() > 0:
            theta = (theta / theta.max()) ** 2
        total = theta.sum()
        weights = theta / total if total > 0 else torch.full((k,), 1.0 / k, dtype=torch.float64)
        aggregate = torch.mv(corrected.T, weights.to(corrected.device, updates.dtype))  # Σ_m weight_m·corrected_m, no (K, d) temporary
        info = {"theta": raw_theta, "replaced_fraction": replaced / d, "variant": self.theta}
        return AggregationResult(aggregate, weights, info)

    def _vectorised(self, updates: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1–7 with tensor ops in chunks of coordinates on ``device``: corrected
        uploads (where ``updates`` are), θ before normalisation and the
        replaced-coordinate counts."""
        k, d = updates.shape
        chunk = self.chunk_size or chunk_for(k)
        corrected = torch.empty_like(updates)
        theta = torch.zeros(k, dtype=torch.float64)
        replaced = torch.zeros(k, dtype=torch.float64)
        for lo in range(0, d, chunk):
            y = updates[:, lo : lo + chunk].T.to(device)
            varpi, line = confidences(y, self.lam)
            low = varpi < self.threshold
            corrected[:, lo : lo + chunk] = torch.where(low, line, y).T.to(corrected.device)
            replaced += low.sum(0, dtype=torch.float64).cpu()
            if self.theta == "paper":
                theta += torch.where(low, 0.0, varpi).sum(0, dtype=torch.float64).cpu()
            elif k > 1:
                theta += (varpi * varpi.std(dim=1, keepdim=True)).sum(0, dtype=torch.float64).cpu()
        return corrected, theta, replaced

    def _compiled(self, updates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same steps as one compiled pass (``reweight_kernel``), on the CPU."""
        from bmfl.aggregation.reweight_kernel import block_for, median_plan, reweight_pass

        k, d = updates.shape
        values = updates.detach().contiguous().numpy()
        corrected = np.empty_like(values)
        theta = np.zeros(k)
        replaced = np.zeros(k)
        reweight_pass(
            values, self.lam, self.threshold, self.theta == "paper", block_for(k),
            median_plan(k - 1), median_plan(k), median_plan(k, 1), corrected, theta, replaced,
        )  # fmt: skip
        return torch.from_numpy(corrected), torch.from_numpy(theta), torch.from_numpy(replaced)
