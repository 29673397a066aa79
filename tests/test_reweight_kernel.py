"""The compiled residual-reweighting pass (bmfl/aggregation/reweight_kernel.py): its
sorting networks sort every input and its pruned median networks select the median of
every input (the 0–1 principle, exhaustively), its blocks keep the buffers within the
budget, and it gives the vectorised rule's result on random uploads, with ties, for
both θ variants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bmfl.aggregation import get_aggregator
from bmfl.aggregation.reweight import chunk_for
from bmfl.aggregation.reweight_kernel import BLOCK_MAX, BLOCK_MIN, BUFFER_BUDGET, BYTES_PER_VALUE, block_for
from bmfl.aggregation.reweight_kernel import median_network, sort_columns, sorting_network


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


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("n", range(2, 17))
def test_the_median_network_selects_the_median_of_every_zero_one_input(n: int, offset: int) -> None:
    # the 0-1 principle holds for each output position of a comparator network
    columns = np.array(list(itertools.product((0.0, 1.0), repeat=n)), dtype=np.float32).T.copy()
    expected = np.sort(columns, axis=0)
    m = n - offset
    middle = [offset + (m - 1) // 2, offset + m // 2]
    sort_columns(columns, median_network(n, offset), columns.shape[1])
    assert np.array_equal(columns[middle], expected[middle])
    assert len(median_network(n, offset)) <= len(sorting_network(n))


@pytest.mark.parametrize("n", [31, 99, 100, 499])
def test_the_median_network_selects_the_median_of_random_columns(n: int) -> None:
    values = np.random.default_rng(n).normal(size=(n, 200)).astype(np.float32)
    values[:, :50] = np.round(values[:, :50])  # ties
    out = values.copy()
    sort_columns(out, median_network(n), out.shape[1])
    middle = [(n - 1) // 2, n // 2]
    assert np.array_equal(out[middle], np.sort(values, axis=0)[middle])
    assert len(median_network(n)) < 0.85 * len(sorting_network(n))  # the pruning pays


def test_blocks_keep_the_buffers_within_the_budget() -> None:
    for k in (3, 10, 100, 409, 500, 1000, 5000):
        block = block_for(k)
        assert BLOCK_MIN <= block <= BLOCK_MAX and block & (block - 1) == 0
        assert k * block * BYTES_PER_VALUE <= BUFFER_BUDGET or block == BLOCK_MIN
    assert block_for(10) == block_for(409) == BLOCK_MAX and block_for(500) == BLOCK_MAX // 2


@pytest.mark.parametrize("theta", ["paper", "reference"])
@pytest.mark.parametrize("k", [3, 4, 5, 10, 11, 37, 100])
def test_compiled_and_vectorised_give_the_same_aggregate(k: int, theta: str) -> None:
    g = torch.Generator().manual_seed(k)
    d = 3 * block_for(k) + 17  # a partial last block
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


def test_compiled_and_vectorised_agree_at_an_edge_of_500_trainers() -> None:
    k = 500
    d = block_for(k) + 5  # two blocks of 128 coordinates, the second partial
    updates = torch.randn(k, d, generator=torch.Generator().manual_seed(5))
    updates[:100] *= -10
    updates[:, :20] = torch.round(updates[:, :20])
    fast = get_aggregator("reweight")(updates, None, torch.zeros(d))
    slow = get_aggregator("reweight", compiled=False)(updates, None, torch.zeros(d))
    assert torch.allclose(fast.aggregate, slow.aggregate, atol=1e-6, rtol=0)
    assert torch.equal(fast.info["replaced_fraction"], slow.info["replaced_fraction"])
