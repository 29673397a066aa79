"""Residual reweighting (docs/algorithms.md §3) on the CPU as one compiled pass over the
coordinates, with memory independent of d and bounded in K (issue 24).

Steps 1–7 of ``bmfl.aggregation.reweight`` for a block of B coordinates at a time, in
float32 like the vectorised rule, every loop running over the B coordinates of a block
without a branch so that the compiler vectorises it:

- ranks (step 1) are counted, not sorted: upload a ranks above upload b when it is
  larger, or equal and later (a stable order), one comparison per pair;
- a slope whose rank gap is a power of two is multiplied by the exact reciprocal (the
  same float as the division, which costs several times more);
- every median comes from a *selection* network: Batcher's odd–even merge sort pruned to
  the comparators its middle output(s) depend on (the 0–1 principle holds per output),
  its first four merge stages run per block of 16 rows held in registers (one load and
  one store per value instead of two per comparator; :func:`median_plan`).

Buffers take O(K·B) bytes, with B chosen from K and a byte budget (:func:`block_for`);
nothing of size K²·d (or K²) is formed. The result equals the vectorised
rule's (``tests/test_reweight_kernel.py``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np

BLOCK_MAX = 256
"""Most coordinates per block."""
BLOCK_MIN = 16
"""Fewest coordinates per block (a few vector registers' worth)."""
BUFFER_BUDGET = 4 << 20
"""Bytes the per-block buffers may take, whatever K is."""
BYTES_PER_VALUE = 40
"""Buffer bytes per (upload, coordinate) of a block: six float32 / int32 arrays and two
8-byte accumulators."""


def block_for(k: int, budget: int = BUFFER_BUDGET) -> int:
    """Coordinates per block: the largest power of two in [BLOCK_MIN, BLOCK_MAX] whose
    (K, B) buffers fit ``budget`` (256 up to K = 409, 128 at K = 500)."""
    block = BLOCK_MAX
    while block > BLOCK_MIN and k * block * BYTES_PER_VALUE > budget:
        block //= 2
    return block


@lru_cache(maxsize=None)
def sorting_network(n: int) -> np.ndarray:
    """(m, 2) comparator pairs (a < b) that sort n values ascending: Batcher's odd–even
    merge sort for the next power of two, without the pairs that reach past n (the
    padding would hold +∞ and never move)."""
    size = 1 << max(0, (n - 1).bit_length())
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _kept(n: int, offset: int) -> list[int]:
    """Indices into ``sorting_network(n)`` of the comparators that the median of its
    outputs ``offset … n−1`` depends on (positions ``offset + (m−1)//2`` and
    ``offset + m//2``, m = n − offset), walked back from those outputs."""
    m = n - offset
    needed = {offset + (m - 1) // 2, offset + m // 2}
    kept = []
    net = sorting_network(n)
    for t in range(len(net) - 1, -1, -1):
        a, b = int(net[t, 0]), int(net[t, 1])
        if a in needed or b in needed:
            kept.append(t)
            needed |= {a, b}
    return kept[::-1]


@lru_cache(maxsize=None)
def median_network(n: int, offset: int = 0) -> np.ndarray:
    """The comparators of ``sorting_network(n)`` that the median of its outputs
    ``offset … n−1`` depends on (:func:`_kept`)."""
    return sorting_network(n)[_kept(n, offset)].reshape(-1, 2)


TILE = 16
"""Rows that one op of :func:`select_columns` sorts in registers (``_sort_tile``)."""


@lru_cache(maxsize=None)
def median_plan(n: int, offset: int = 0) -> np.ndarray:
    """``median_network(n, offset)`` as ops for :func:`select_columns`: the merge stages
    that stay within aligned blocks of ``TILE`` rows (the first four) become, for each
    such block below n, one op ``(row, −1)`` that sorts the block in registers with
    ``sorting_network(TILE)``. It runs the comparators of those stages that the median
    does not need too, which changes only rows that no later comparator reads, so the
    median is the same value, bit for bit."""
    net = sorting_network(n)
    crossing = [t for t in range(len(net)) if net[t, 0] // TILE != net[t, 1] // TILE]
    head = crossing[0] if crossing else len(net)  # the first comparator of stage TILE
    tiled = n // TILE * TILE  # rows in whole blocks
    ops = []
    tiles = set()
    for t in _kept(n, offset):
        a, b = int(net[t, 0]), int(net[t, 1])
        if t >= head or a >= tiled:
            ops.append((a, b))
        elif a // TILE not in tiles:
            tiles.add(a // TILE)
            ops.append((a // TILE * TILE, -1))
    return np.array(ops, dtype=np.int64).reshape(-1, 2)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _cx(x: np.float32, y: np.float32) -> tuple[np.float32, np.float32]:  # pragma: no cover - compiled
    """One comparator: (min, max)."""
    return min(x, y), max(x, y)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sort_tile(buf: np.ndarray, r: int, width: int) -> None:  # pragma: no cover - compiled
    """Sort rows ``r … r + 15`` of each of the first ``width`` columns of ``buf`` in place,
    with the comparators of ``sorting_network(16)`` in their order (10 layers), the 16
    values held in registers."""
    for c in range(width):
        v0, v1, v2, v3, v4, v5, v6, v7 = buf[r, c], buf[r + 1, c], buf[r + 2, c], buf[r + 3, c], buf[r + 4, c], buf[r + 5, c], buf[r + 6, c], buf[r + 7, c]
        v8, v9, v10, v11, v12, v13, v14, v15 = buf[r + 8, c], buf[r + 9, c], buf[r + 10, c], buf[r + 11, c], buf[r + 12, c], buf[r + 13, c], buf[r + 14, c], buf[r + 15, c]
        (v0, v1), (v2, v3), (v4, v5), (v6, v7), (v8, v9), (v10, v11), (v12, v13), (v14, v15) = _cx(v0, v1), _cx(v2, v3), _cx(v4, v5), _cx(v6, v7), _cx(v8, v9), _cx(v10, v11), _cx(v12, v13), _cx(v14, v15)
        (v0, v2), (v1, v3), (v4, v6), (v5, v7), (v8, v10), (v9, v11), (v12, v14), (v13, v15) = _cx(v0, v2), _cx(v1, v3), _cx(v4, v6), _cx(v5, v7), _cx(v8, v10), _cx(v9, v11), _cx(v12, v14), _cx(v13, v15)
        (v1, v2), (v5, v6), (v9, v10), (v13, v14), (v0, v4) = _cx(v1, v2), _cx(v5, v6), _cx(v9, v10), _cx(v13, v14), _cx(v0, v4)
        (v1, v5), (v2, v6), (v3, v7), (v8, v12), (v9, v13), (v10, v14), (v11, v15) = _cx(v1, v5), _cx(v2, v6), _cx(v3, v7), _cx(v8, v12), _cx(v9, v13), _cx(v10, v14), _cx(v11, v15)
        (v2, v4), (v3, v5), (v10, v12), (v11, v13) = _cx(v2, v4), _cx(v3, v5), _cx(v10, v12), _cx(v11, v13)
        (v1, v2), (v3, v4), (v5, v6), (v9, v10), (v11, v12), (v13, v14), (v0, v8) = _cx(v1, v2), _cx(v3, v4), _cx(v5, v6), _cx(v9, v10), _cx(v11, v12), _cx(v13, v14), _cx(v0, v8)
        (v1, v9), (v2, v10), (v3, v11), (v4, v12), (v5, v13), (v6, v14), (v7, v15) = _cx(v1, v9), _cx(v2, v10), _cx(v3, v11), _cx(v4, v12), _cx(v5, v13), _cx(v6, v14), _cx(v7, v15)
        (v4, v8), (v5, v9), (v6, v10), (v7, v11) = _cx(v4, v8), _cx(v5, v9), _cx(v6, v10), _cx(v7, v11)
        (v2, v4), (v3, v5), (v6, v8), (v7, v9), (v10, v12), (v11, v13) = _cx(v2, v4), _cx(v3, v5), _cx(v6, v8), _cx(v7, v9), _cx(v10, v12), _cx(v11, v13)
        (v1, v2), (v3, v4), (v5, v6), (v7, v8), (v9, v10), (v11, v12), (v13, v14) = _cx(v1, v2), _cx(v3, v4), _cx(v5, v6), _cx(v7, v8), _cx(v9, v10), _cx(v11, v12), _cx(v13, v14)
        buf[r, c], buf[r + 1, c], buf[r + 2, c], buf[r + 3, c], buf[r + 4, c], buf[r + 5, c], buf[r + 6, c], buf[r + 7, c] = v0, v1, v2, v3, v4, v5, v6, v7
        buf[r + 8, c], buf[r + 9, c], buf[r + 10, c], buf[r + 11, c], buf[r + 12, c], buf[r + 13, c], buf[r + 14, c], buf[r + 15, c] = v8, v9, v10, v11, v12, v13, v14, v15


@numba.njit(cache=True, nogil=True, error_model="numpy")
def select_columns(buf: np.ndarray, plan: np.ndarray, width: int) -> None:  # pragma: no cover - compiled
    """Apply ``plan`` (comparators ``(a, b)`` and tiles ``(row, −1)``, :func:`median_plan`)
    to each of the first ``width`` columns of ``buf`` in place."""
    for t in range(plan.shape[0]):
        a = plan[t, 0]
        b = plan[t, 1]
        if b < 0:
            _sort_tile(buf, a, width)
        else:
            for c in range(width):
                x = buf[a, c]
                y = buf[b, c]
                buf[a, c] = min(x, y)
                buf[b, c] = max(x, y)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _middle(buf: np.ndarray, n: int, out: np.ndarray, width: int, offset: int = 0) -> None:  # pragma: no cover - compiled
    """``out[c]``: the median of the sorted ``buf[offset : offset + n, c]``."""
    lo = buf[offset + (n - 1) // 2]
    hi = buf[offset + n // 2]
    if (n - 1) // 2 == n // 2:
        out[:width] = hi[:width]
    else:
        for c in range(width):
            out[c] = (lo[c] + hi[c]) / np.float32(2)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _ranks(y: np.ndarray, ys: np.ndarray, rank: np.ndarray, width: int) -> None:  # pragma: no cover - compiled
    """Stable ranks of each column of ``y`` (ties in upload order) and the sorted ``ys``."""
    k = y.shape[0]
    for a in range(k):
        ra = rank[a]
        for c in range(width):
            ra[c] = 0
    for a in range(k):
        for b in range(a + 1, k):
            ya = y[a]
            yb = y[b]
            ra = rank[a]
            rb = rank[b]
            for c in range(width):
                later = np.int32(ya[c] <= yb[c])
                rb[c] += later
                ra[c] += 1 - later
    for a in range(k):
        for c in range(width):
            ys[rank[a, c], c] = y[a, c]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _slope(ys: np.ndarray, buf: np.ndarray, inner: np.ndarray, net: np.ndarray, width: int) -> None:  # pragma: no cover - compiled
    """``inner[i]``: the median over j ≠ i of the slopes (ys_j − ys_i)/(j − i) (step 2)."""
    k = ys.shape[0]
    for i in range(k):
        row = 0
        bottom = ys[i]
        for j in range(k):
            if j != i:
                gap = abs(j - i)
                dx = np.float32(j - i)
                top = ys[j]
                dst = buf[row]
                if gap & (gap - 1) == 0:  # a power of two: × 1/dx is exact, the same as ÷ dx
                    inv = np.float32(1) / dx
                    for c in range(width):
                        dst[c] = (top[c] - bottom[c]) * inv
                else:
                    for c in range(width):
                        dst[c] = (top[c] - bottom[c]) / dx
                row += 1
        select_columns(buf, net, width)
        _middle(buf, k - 1, inner[i], width)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def reweight_pass(
    updates: np.ndarray, lam: float, threshold: float, paper: bool, block: int,
    net_inner: np.ndarray, net_outer: np.ndarray, net_tail: np.ndarray,
    corrected: np.ndarray, theta: np.ndarray, replaced: np.ndarray,
) -> None:  # pragma: no cover - compiled; fmt: skip
    """Fill ``corrected`` (K, d) and add each upload's θ and replaced-coordinate count
    into ``theta`` and ``replaced`` (float64, K). Needs K ≥ 3; the networks are
    ``median_plan(K − 1)``, ``median_plan(K)`` and ``median_plan(K, 1)``."""
    k, d = updates.shape
    f32 = np.float32
    y = np.empty((k, block), f32)
    ys = np.empty((k, block), f32)
    rank = np.empty((k, block), np.int32)
    buf = np.empty((k, block), f32)
    inner = np.empty((k, block), f32)
    varpi = np.empty((k, block), f32)
    beta1 = np.empty(block, f32)
    beta0 = np.empty(block, f32)
    tau = np.empty(block, f32)
    mean = np.empty(block)
    var = np.empty(block)
    kept = np.zeros((k, block))
    low = np.zeros((k, block), np.int64)
    spread = np.empty(block, f32)
    z = lam * math.sqrt(2.0 / k)
    centre = (k - 1) / 2.0
    sxx = k * (k * k - 1) / 12.0
    clip = np.empty(k, f32)  # Z·sqrt(1 − h) per rank (step 5)
    for r in range(k):
        clip[r] = f32(z * math.sqrt(1 - (1.0 / k + (r - centre) ** 2 / sxx)))
    scale = f32(1.4826 * (1 + 5 / (k - 1)))
    half = f32((k - 1) / 2)
    for start in range(0, d, block):
        width = min(block, d - start)
        for a in range(k):
            src = updates[a, start : start + width]
            dst = y[a]
            for c in range(width):
                dst[c] = src[c]
        _ranks(y, ys, rank, width)  # step 1
        _slope(ys, buf, inner, net_inner, width)  # step 2
        select_columns(inner, net_outer, width)
        _middle(inner, k, beta1, width)
        _middle(ys, k, beta0, width)
        for c in range(width):
            beta0[c] = beta0[c] - beta1[c] * half
        for a in range(k):  # step 3: |residuals| and their scale τ
            for c in range(width):
                buf[a, c] = abs(y[a, c] - (beta0[c] + beta1[c] * f32(rank[a, c])))
        select_columns(buf, net_tail, width)
        _middle(buf, k - 1, tau, width, 1)
        for c in range(width):
            tau[c] = scale * tau[c] + f32(1e-7)
        for a in range(k):  # steps 4–6: leverage, confidence, replacement
            ya = y[a]
            ra = rank[a]
            va = varpi[a]
            ca = corrected[a, start : start + width]
            for c in range(width):
                r = ra[c]
                line = beta0[c] + beta1[c] * f32(r)
                v = min(f32(1.0), clip[r] / abs((ya[c] - line) / tau[c]))  # e = 0 → ∞ → 1
                va[c] = v
                ca[c] = line if v < threshold else ya[c]
        for a in range(k):  # step 7 and the counts, summed per column (a sum across c would not vectorise)
            va = varpi[a]
            la = low[a]
            ka = kept[a]
            for c in range(width):
                out = va[c] < threshold
                la[c] += out
                if paper:
                    ka[c] += 0.0 if out else va[c]
        if not paper:
            mean[:width] = 0.0
            for a in range(k):
                for c in range(width):
                    mean[c] += varpi[a, c]
            for c in range(width):
                mean[c] /= k
            var[:width] = 0.0
            for a in range(k):
                for c in range(width):
                    var[c] += (varpi[a, c] - mean[c]) ** 2
            for c in range(width):
                spread[c] = f32(math.sqrt(var[c] / (k - 1)))
            for a in range(k):
                for c in range(width):
                    kept[a, c] += varpi[a, c] * spread[c]
    for a in range(k):
        theta[a] += kept[a].sum()
        replaced[a] += low[a].sum()
