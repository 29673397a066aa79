"""FLAME (Nguyen et al., USENIX Security 2022, Alg. 1): clustering, clipping, noise.

1. Cosine distances c_ij = 1 − cos(Δ_i, Δ_j) between the updates Δ_m = w̃_m − w^{r-1}
   (the paper clusters the models; relative to w^{r-1} is the same up to the shared
   offset, which would otherwise make every cosine ≈ 1).
2. Admit the majority cluster. The paper runs HDBSCAN with min_cluster_size = ⌊K/2⌋ + 1
   and min_samples = 1, whose mutual-reachability distance is then the plain distance,
   i.e. single linkage; we admit the first single-linkage component to reach
   ⌊K/2⌋ + 1 uploads (the densest majority), a deterministic stand-in without the
   HDBSCAN dependency. The others are flagged (``rule:flame``).
3. Clip every admitted update to S = median_m ‖Δ_m‖ over all K uploads.
4. w = w^{r-1} + mean of the clipped admitted updates + N(0, (λ·S)² I), λ = 0.001 (the
   paper's value for image classification). The noise generator is keyed by ``seed``
   and a digest of w^{r-1}, so re-executing the edge's step gives the same model.
"""

from __future__ import annotations

import hashlib

import torch

from bmfl.aggregation.base import AggregationResult, Aggregator, register_aggregator
from bmfl.filters.norm_clip import clip_updates


def majority_cluster(deltas: torch.Tensor) -> torch.Tensor:
    """(K,) bool: the first single-linkage component (cosine distance) to hold ⌊K/2⌋ + 1
    uploads; links of equal length are added together, so the order of uploads does not
    matter."""
    k = len(deltas)
    need = k // 2 + 1
    unit = deltas / deltas.norm(dim=1, keepdim=True).clamp_min(1e-12)
    dist = (1 - unit @ unit.T).clamp_min(0)
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = torch.triu_indices(k, k, 1)
    lengths = dist[rows, cols]
    for level in torch.unique(lengths).tolist():  # ascending; equal distances merge together
        for e in torch.nonzero(lengths == level).flatten().tolist():
            a, b = root(int(rows[e])), root(int(cols[e]))
            if a != b:
                parent[max(a, b)] = min(a, b)
        roots = torch.tensor([root(i) for i in range(k)])
        counts = torch.bincount(roots, minlength=k)
        if int(counts.max()) >= need:  # at most one component holds a majority
            return roots == int(counts.argmax())
    return torch.ones(k, dtype=torch.bool)


@register_aggregator("flame")
class Flame(Aggregator):
    def __init__(self, noise: float = 0.001, seed: int = 0) -> None:
        if noise < 0:
            raise ValueError("noise must be non-negative")
        self.noise = noise
        self.seed = seed

    def aggregate(self, updates: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor) -> AggregationResult:
        ref = reference.to(torch.float64)
        deltas = updates.to(torch.float64) - ref
        admitted = majority_cluster(deltas) if len(updates) > 2 else torch.ones(len(updates), dtype=torch.bool)
        bound = float(deltas.norm(dim=1).median())
        clipped = clip_updates(deltas[admitted], bound)
        digest = hashlib.sha256(reference.detach().cpu().numpy().tobytes()).digest()
        generator = torch.Generator().manual_seed((self.seed << 32) ^ int.from_bytes(digest[:4], "big"))
        noise = self.noise * bound * torch.randn(ref.shape, generator=generator, dtype=torch.float64)
        aggregate = (ref + clipped.mean(dim=0) + noise).to(updates.dtype)
        weights = admitted.to(torch.float64) / int(admitted.sum())
        return AggregationResult(aggregate, weights, {"admitted": admitted, "clip_bound": bound})
