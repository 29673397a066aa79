"""The Gram matrix of a round's uploads, G = Δ Δᵀ for Δ = uploads − w^{r-1}, computed once
per round however many filters read it.

``dp_envelope`` and ``signal_median`` both need G, an O(K²d) pass over the uploads. The
matrix is memoised on the uploads tensor itself (with the reference and both tensors'
version counters, so an in-place change of either forces a fresh pass), and a filter
chain that passes on a subset of the uploads unchanged carries the sub-matrix G[S, S]
along (:func:`carry_gram`), which is exactly the subset's Gram matrix. Callers get a
copy: they may subtract noise energies from its diagonal in place.
"""

from __future__ import annotations

import torch

GRAM_BUDGET = 64 << 20
"""Bytes of float64 deltas :func:`gram_matrix` holds at a time."""
_MEMO = "_bmfl_gram"


def _stamp(updates: torch.Tensor, reference: torch.Tensor) -> tuple[int, int]:
    return updates._version, reference._version


def _memo(updates: torch.Tensor, reference: torch.Tensor) -> torch.Tensor | None:
    memo = getattr(updates, _MEMO, None)
    if memo is None or memo[0] is not reference or memo[1] != _stamp(updates, reference):
        return None
    return memo[2]


def gram_matrix(updates: torch.Tensor, reference: torch.Tensor, budget: int = GRAM_BUDGET) -> torch.Tensor:
    """G = Δ Δᵀ in float64 for Δ = updates − reference, summed over blocks of
    coordinates of at most ``budget`` bytes (never the whole K×d in float64); a copy of
    the memoised matrix when this round's filters already computed it."""
    gram = _memo(updates, reference)
    if gram is None:
        gram = _product(updates, reference, budget)
        setattr(updates, _MEMO, (reference, _stamp(updates, reference), gram))
    return gram.clone()


def _product(updates: torch.Tensor, reference: torch.Tensor, budget: int) -> torch.Tensor:
    k, d = updates.shape
    step = max(1, budget // (8 * k))
    gram = torch.zeros(k, k, dtype=torch.float64)
    for start in range(0, d, step):
        block = updates[:, start : start + step].to(torch.float64) - reference[start : start + step].to(torch.float64)
        gram += block @ block.T
    return gram


def carry_gram(updates: torch.Tensor, subset: torch.Tensor, rows: torch.Tensor, reference: torch.Tensor) -> None:
    """Give ``subset`` = ``updates[rows]`` (unchanged rows) the sub-matrix of ``updates``'s
    memoised Gram matrix, when it has one."""
    known = _memo(updates, reference)
    if known is not None:
        setattr(subset, _MEMO, (reference, _stamp(subset, reference), known[rows][:, rows]))
