"""The compiled residual-reweighting pass (bmfl/aggregation/reweight_kernel.py): its
sorting networks sort every input and its pruned median networks select the median of
every input (the 0–1 principle, exhaustively), the plans that sort blocks of 16 rows in
registers select the same median bit for bit, its blocks keep the buffers within the
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
from bmfl.aggregation.reweight_kernel import TILE, median_network, median_plan, select_columns, sorting_network


@pytest.mark.parametrize("n", range(1, 17))
def test_the_network_sorts_every_zero_one_input(n: int) -> None:
    # a comparator network sorts every input iff it sorts every 0-1 input (Knuth 5.3.4)
    columns = np.array(list(itertools.product((0.0, 1.0), repeat=n)), dtype=np.float32).T.copy()
    expected = np.sort(columns, axis=0)
    select_columns(columns, sorting_network(n), columns.shape[1])
    assert np.array_equal(columns, expected)
    assert all(a < b < n for a, b in sorting_network(n))


@pytest.mark.parametrize("n", [17, 31, 99, 100, 129])
def test_the_network_sorts_random_columns_of_larger_sizes(n: int) -> None:
    values = np.random.default_rng(n).normal(size=(n, 300)).astype(np.float32)
    values[:, :50] = np.round(values[:, :50])  # ties
    out = values.copy()
    select_columns(out, sorting_network(n), out.shape[1])
    assert np.array_equal(out, np.sort(values, axis=0))


ZERO_ONE_CASES = [(median_network, n) for n in range(2, 17)] + [(median_plan, n) for n in (TILE - 1, TILE, TILE + 1, TILE + 2)]


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize(("build", "n"), ZERO_ONE_CASES)
def test_the_median_network_and_its_tiled_plan_select_the_median_of_every_zero_one_input(build, n: int, offset: int) -> None:
    # the 0-1 principle holds for each output position of a comparator network (the
    # tiled plan around one tile of 16 rows: whole, short by one, one or two past it)
    columns = np.array(list(itertools.product((0.0, 1.0), repeat=n)), dtype=np.float32).T.copy()
    expected = np.sort(columns, axis=0)
    m = n - offset
    middle = [offset + (m - 1) // 2, offset + m // 2]
    select_columns(columns, build(n, offset), columns.shape[1])
    assert np.array_equal(columns[middle], expected[middle])
    assert len(median_network(n, offset)) <= len(sorting_network(n))


@pytest.mark.parametrize("n", [31, 99, 100, 499])
def test_the_median_network_selects_the_median_of_random_columns(n: int) -> None:
    values = np.random.default_rng(n).normal(size=(n, 200)).astype(np.float32)
    values[:, :50] = np.round(values[:, :50])  # ties
    out = values.copy()
    select_columns(out, median_network(n), out.shape[1])
    middle = [(n - 1) // 2, n // 2]
    assert np.array_equal(out[middle], np.sort(values, axis=0)[middle])
    assert len(median_network(n)) < 0.85 * len(sorting_network(n))  # the pruning pays



@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("n", [16, 17, 32, 33, 99, 100, 129, 499])
def test_the_tiled_plan_gives_the_networks_median_bit_for_bit(n: int, offset: int) -> None:
    # the plan runs comparators the median does not need; signed zeros would show a change
    values = np.random.default_rng(n).normal(size=(n, 300)).astype(np.float32)
    values[:, :50] = np.round(values[:, :50])  # ties
    values[:, 50:100] = np.where(values[:, 50:100] > 0, np.float32(0.0), np.float32(-0.0))
    planned, networked = values.copy(), values.copy()
    select_columns(planned, median_plan(n, offset), planned.shape[1])
    select_columns(networked, median_network(n, offset), networked.shape[1])
    m = n - offset
    middle = [offset + (m - 1) // 2, offset + m // 2]
    assert np.array_equal(planned[middle].view(np.uint32), networked[middle].view(np.uint32))
    assert np.array_equal(planned[middle], np.sort(values, axis=0)[middle])
    plan = median_plan(n, offset)
    assert (plan[:, 1] < 0).sum() == n // TILE and len(plan) < len(median_network(n, offset))


def test_the_tile_is_the_sorting_network_of_its_rows() -> None:
    # _sort_tile hard-codes sorting_network(TILE): the same comparators in the same order
    # move signed zeros the same way
    values = np.where(np.random.default_rng(0).normal(size=(TILE, 4096)) > 0, np.float32(0.0), np.float32(-0.0))
    values[:, :2048] = np.random.default_rng(1).integers(-2, 3, size=(TILE, 2048))
    tiled, networked = values.astype(np.float32), values.astype(np.float32)
    select_columns(tiled, np.array([[0, -1]]), tiled.shape[1])
    select_columns(networked, sorting_network(TILE), networked.shape[1])
    assert np.array_equal(tiled.view(np.uint32), networked.view(np.uint32))


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
