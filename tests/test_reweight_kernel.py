"""The compiled residual-reweighting pass (bmfl/aggregation/reweight_kernel.py): its
sorting networks sort every input (the 0–1 principle, exhaustively), and it gives the
vectorised rule's result on random uploads, with ties, for both θ variants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bmfl.aggregation import get_aggregator
from bmfl.aggregation.reweight import chunk_for
from bmfl.aggregation.reweight_kernel import BLOCK, sort_columns, sorting_network


@pytest.mark.parametrize("n", range(1, 17))
def test_the_network_sorts_every_zero_one_input(n: int) -> None:
    # a comparator network sorts every input iff it sorts every 0-1 input (Knuth 5.3.4)
    columns = np.array(list(itertools.product((0.0, 1.0), repeat=n)), dtype=np.float32).T.copy()
    expected = np.sort(columns, axis=0)
    sort_columns(columns, sorting_network(n), columns.shape[1])
    assert np.array_equal(columns, expected)
    assert all(a < b < n for a, b in sorting_network(n))


@pytest.mark.parametrize("n", [17, 31, 99, 100, 129])
def test_the_network_sorts_random_columns_of_larger_sizes(n: int) -> None:
    values = np.random.default_rng(n).normal(size=(n, 300)).astype(np.float32)
    values[:, :50] = np.round(values[:, :50])  # ties
    out = values.copy()
    sort_columns(out, sorting_network(n), out.shape[1])
    assert np.array_equal(out, np.sort(values, axis=0))


@pytest.mark.parametrize("theta", ["paper", "reference"])
@pytest.mark.parametrize("k", [3, 4, 5, 10, 11, 37, 100])
def test_compiled_and_vectorised_give_the_same_aggregate(k: int, theta: str) -> None:
    g = torch.Generator().manual_seed(k)
    d = 3 * BLOCK + 17  # a partial last block
    updates = torch.randn(k, d, generator=g)
    updates[: max(1, k // 5)] *= -10  # sign flippers
    updates[:, :40] = torch.round(updates[:, :40])  # ties between uploads
    updates[:, 40:60] = 1.5  # identical uploads
    ref = torch.zeros(d)
    fast = get_aggregator("reweight", theta=theta)(updates, None, ref)
    slow = get_aggregator("reweight", theta=theta, compiled=False)(updates, None, ref)
    assert torch.allclose(fast.aggregate, slow.aggregate, atol=1e-6, rtol=0)
    assert torch.allclose(fast.weights, slow.weights, atol=1e-9, rtol=0)
    assert torch.equal(fast.info["replaced_fraction"], slow.info["replaced_fraction"])


def test_the_vectorised_chunk_keeps_the_slopes_within_the_budget() -> None:
    for k in (3, 10, 100, 1000):
        assert chunk_for(k) * k * k * 16 <= 256 << 20 or chunk_for(k) == 1
    assert chunk_for(10) > chunk_for(100) >= 1
