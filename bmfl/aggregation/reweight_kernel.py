"""Residual reweighting (docs/algorithms.md §3) on the CPU as one compiled pass over the
coordinates, with memory independent of K² (issue 24).

Steps 1–7 of ``bmfl.aggregation.reweight`` for a block of B coordinates at a time, in
float32 like the vectorised rule: every median (of the K − 1 slopes of each upload, of
the K inner medians, of the values, of the residuals) comes from a sorting network
(Batcher's odd–even merge sort, comparators that touch only padding left out) applied to
a (n, B) buffer column-wise, so the inner loop runs over B coordinates without a branch
and the compiler vectorises it. Buffers are O(K·B); nothing of size K²·d is formed.
The result equals the vectorised rule's (bit for bit on the tests; ``tests/test_reweight_kernel.py``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np

BLOCK = 256
"""Coordinates per block: (K, B) buffers stay in the L1/L2 cache for the K of edges."""


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


@numba.njit(cache=True, nogil=True)
def sort_columns(buf: np.ndarray, net: np.ndarray, width: int) -> None:  # pragma: no cover - compiled
    """Sort each of the first ``width`` columns of ``buf`` in place with ``net``."""
    for t in range(net.shape[0]):
        a = net[t, 0]
        b = net[t, 1]
        for c in range(width):
            x = buf[a, c]
            y = buf[b, c]
            buf[a, c] = min(x, y)
            buf[b, c] = max(x, y)


@numba.njit(cache=True, nogil=True)
def _middle(buf: np.ndarray, n: int, c: int, offset: int = 0) -> np.float32:  # pragma: no cover - compiled
    """Median of the sorted ``buf[offset : offset + n, c]``."""
    lo = offset + (n - 1) // 2
    hi = offset + n // 2
    if lo == hi:
        return buf[hi, c]
    return (buf[lo, c] + buf[hi, c]) / np.float32(2)


@numba.njit(cache=True, nogil=True)
def reweight_pass(
    updates: np.ndarray, lam: float, threshold: float, paper: bool,
    net_k: np.ndarray, net_km1: np.ndarray, corrected: np.ndarray, theta: np.ndarray, replaced: np.ndarray,
) -> None:  # pragma: no cover - compiled; fmt: skip
    """Fill ``corrected`` (K, d) and add each upload's θ and replaced-coordinate count
    into ``theta`` and ``replaced`` (float64, K). Needs K ≥ 3."""
    k, d = updates.shape
    ys = np.empty((k, BLOCK), np.float32)
    order = np.empty((k, BLOCK), np.int64)
    buf = np.empty((k, BLOCK), np.float32)
    inner = np.empty((k, BLOCK), np.float32)
    varpi = np.empty(k, np.float32)
    z = lam * math.sqrt(2.0 / k)
    centre = (k - 1) / 2.0
    sxx = k * (k * k - 1) / 12.0
    scale = np.float32(1.4826 * (1 + 5 / (k - 1)))
    for start in range(0, d, BLOCK):
        width = min(BLOCK, d - start)
        for c in range(width):  # step 1: a stable argsort (ties keep upload order)
            for a in range(k):
                order[a, c] = a
            for a in range(1, k):
                o = order[a, c]
                v = updates[o, start + c]
                b = a - 1
                while b >= 0 and updates[order[b, c], start + c] > v:
                    order[b + 1, c] = order[b, c]
                    b -= 1
                order[b + 1, c] = o
            for a in range(k):
                ys[a, c] = updates[order[a, c], start + c]
        for i in range(k):  # step 2: each rank's median slope to the others
            row = 0
            for j in range(k):
                if j != i:
                    dx = np.float32(j - i)
                    for c in range(width):
                        buf[row, c] = (ys[j, c] - ys[i, c]) / dx
                    row += 1
            sort_columns(buf, net_km1, width)
            for c in range(width):
                inner[i, c] = _middle(buf, k - 1, c)
        sort_columns(inner, net_k, width)
        for c in range(width):  # β1 and β0 kept in rows 0, 1 of inner
            beta1 = _middle(inner, k, c)
            inner[1, c] = _middle(ys, k, c) - beta1 * np.float32((k - 1) / 2)
            inner[0, c] = beta1
        for a in range(k):  # step 3: |residuals|, sorted for the scale τ
            for c in range(width):
                buf[a, c] = abs(ys[a, c] - (inner[1, c] + inner[0, c] * np.float32(a)))
        sort_columns(buf, net_k, width)
        for c in range(width):
            tau = scale * _middle(buf, k - 1, c, 1) + np.float32(1e-7)
            total = 0.0
            for a in range(k):  # steps 4–6: leverage, confidence, replacement
                line = inner[1, c] + inner[0, c] * np.float32(a)
                e = (ys[a, c] - line) / tau
                lev = 1.0 / k + (a - centre) ** 2 / sxx
                v = np.float32(1.0) if e == 0 else min(np.float32(1.0), np.float32(z * math.sqrt(1 - lev)) / abs(e))
                o = order[a, c]
                varpi[o] = v
                total += v
                if v < threshold:
                    corrected[o, start + c] = line
                    replaced[o] += 1.0
                else:
                    corrected[o, start + c] = ys[a, c]
            if paper:  # step 7
                for o in range(k):
                    if varpi[o] >= threshold:
                        theta[o] += varpi[o]
            else:
                mean = total / k
                var = 0.0
                for o in range(k):
                    var += (varpi[o] - mean) ** 2
                spread = np.float32(math.sqrt(var / (k - 1)))
                for o in range(k):
                    theta[o] += varpi[o] * spread
