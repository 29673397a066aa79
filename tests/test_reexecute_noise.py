"""The re-execution audit's statistical check of a dp_fedavg edge's model, whose noise is
secret (chain/reexecute.py noise_check): the honest model passes on every seed, a model
without noise, with a shift larger than the noise, or replaced outright fails."""

from __future__ import annotations

import pytest
import torch

from bmfl.aggregation import get_aggregator
from chain.reexecute import noise_check

D, K, CLIP, SIGMA = 20_000, 8, 0.5, 1.2


def _round(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    reference = torch.randn(D, generator=g)
    return reference + 0.01 * torch.randn(K, D, generator=g), reference


@pytest.mark.parametrize("seed", range(5))
def test_an_honest_noisy_model_passes(seed: int) -> None:
    uploads, reference = _round(seed)
    model = get_aggregator("dp_fedavg", clip=CLIP, noise_multiplier=SIGMA)(uploads, None, reference).aggregate
    check = noise_check(uploads, reference, model, CLIP, SIGMA)
    assert check.ok, check.detail


def test_a_model_without_noise_or_with_more_than_noise_fails() -> None:
    uploads, reference = _round(9)
    honest = get_aggregator("dp_fedavg", clip=CLIP, noise_multiplier=SIGMA)(uploads, None, reference).aggregate
    plain = get_aggregator("fedavg")(uploads, None, reference).aggregate  # the mean, unclipped and noiseless
    shifted = honest + 0.5 * SIGMA * CLIP / K  # every coordinate moved by half the noise's std
    replaced = torch.zeros(D)
    for model in (plain, shifted, replaced):
        assert not noise_check(uploads, reference, model, CLIP, SIGMA).ok
