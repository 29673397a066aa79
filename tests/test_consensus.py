"""Proof of testing accuracy (BMFL §IV-D)."""

import pytest
import torch

from bmfl.consensus import consensus_accuracies, select_leader


def test_leader_is_the_most_accurate_edge():
    assert select_leader({"0xb": 900_000, "0xa": 910_000, "0xc": 10}) == "0xa"


def test_ties_go_to_the_smallest_id_whatever_the_order():
    assert select_leader({"0xc": 5, "0xb": 5, "0xd": 1}) == "0xb"
    assert select_leader({"0xb": 5, "0xc": 5}) == "0xb"
    with pytest.raises(ValueError):
        select_leader({})


def test_consensus_accuracies_are_fixed_point():
    models = {"A": torch.zeros(3), "B": torch.ones(3)}
    ev = lambda v: v[:, 0].double() * 0.5 + 0.25
    assert consensus_accuracies(models, ev) == {"A": 250_000, "B": 750_000}
