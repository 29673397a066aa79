"""Declared data sizes are claims: what lying about one buys at the edge and the cloud
(issue 17; ``noise_weighted``, ``fedavg`` with ``cap="median"``, the edge's sample count)."""

from __future__ import annotations

import math

import pytest
import torch

from bmfl.aggregation import get_aggregator
from bmfl.filters import get_filter
from bmfl.filters.dp_floor import noise_variance
from bmfl.rounds.edge import aggregate_edge, build_rule
from bmfl.task import AggregationSpec, RuleSpec, TrainingSpec

# one DP-SGD step a round, B = min(64, 0.1·n): v = (η σ C / B)²
TRAINING = TrainingSpec(epochs=1, max_steps=1, batch_size=64, max_sampling_rate=0.1, lr=0.5, noise_multiplier=1.0,
                        clip=1.0, momentum=0.0)  # fmt: skip
HUGE = 2**32 - 1


def _rule(name: str, **options) -> object:
    return get_aggregator(name, **options) if name == "fedavg" else get_aggregator(name, training=TRAINING, count_noise=0.0)


def test_inverse_noise_weights_are_the_known_answer() -> None:
    """n = 100 → B = 10, n = 1,000 → B = 64 (capped): p ∝ 1/v = B²/(ησC)²."""
    updates, reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2)
    result = _rule("noise_weighted")(updates, torch.tensor([100.0, 1000.0]), reference)
    expected = torch.tensor([10.0**2, 64.0**2]) / (10.0**2 + 64.0**2)
    assert torch.allclose(result.weights, expected.double(), atol=1e-12)
    assert torch.allclose(result.aggregate, expected.float(), atol=1e-6) and result.info["basis"] == "noise"
    assert noise_variance(TRAINING.local(), 100) == pytest.approx((0.5 * 1.0 * 1.0 / 10) ** 2)


@pytest.mark.parametrize("rule", ["fedavg", "fedavg_capped", "noise_weighted"])
def test_declaring_a_huge_size_buys_no_more_than_a_full_batch(rule: str) -> None:
    """Two honest vehicles with 1,000 samples and one that declares 2³² − 1: plain FedAvg
    hands it the aggregate (the attack works, so the test can fail); the median cap and
    inverse-noise weights give it the weight of any full-batch vehicle."""
    updates = torch.tensor([[1.0], [1.0], [-100.0]])
    built = get_aggregator("fedavg", cap="median") if rule == "fedavg_capped" else _rule(rule)
    result = built(updates, torch.tensor([1000.0, 1000.0, float(HUGE)]), torch.zeros(1))
    if rule == "fedavg":
        assert result.weights[2] > 0.999 and result.aggregate[0] < -99
    else:
        assert torch.allclose(result.weights, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_declaring_a_tiny_size_widens_the_envelope_but_not_the_push() -> None:
    """A vehicle declaring n = 1 is expected to carry noise of standard deviation √v_1
    (B = 0.1): the DP envelope admits a noise-shaped upload that large, aimed against the
    honest direction (here 35 against the honest vehicles' 0.4). Its inverse-noise
    weight falls as 1/v_1, so its weighted push is smaller than one honest full-batch
    upload's, where equal weights hand the declarer a head count's share of it."""
    d, g = 20_000, torch.Generator().manual_seed(0)
    config = TRAINING.local()
    honest_v, small_v = noise_variance(config, 1000), noise_variance(config, 1)
    direction = torch.zeros(d)
    direction[0] = 1.0
    honest = [0.4 * direction + math.sqrt(honest_v) * torch.randn(d, generator=g) for _ in range(4)]
    attacker = -0.05 * math.sqrt(small_v * d) * direction + math.sqrt(small_v) * torch.randn(d, generator=g)
    updates, sizes = torch.stack([*honest, attacker]), torch.tensor([1000.0] * 4 + [1.0])
    envelope = get_filter("dp_envelope", training=TRAINING)
    assert bool(envelope(updates, sizes, torch.zeros(d)).keep.all())  # the envelope admits it
    weighted = _rule("noise_weighted")(updates, sizes, torch.zeros(d))
    assert weighted.weights[4] * attacker.norm() < weighted.weights[0] * honest[0].norm()
    assert weighted.aggregate[0] > 0.3  # the honest push survives
    plain = get_aggregator("fedavg", cap="median")(updates, torch.ones(5), torch.zeros(d))
    assert plain.aggregate[0] < 0  # with equal weights the declarer's push wins


def test_without_dp_sizes_count_up_to_the_median() -> None:
    training = TRAINING.model_copy(update={"dp": False})
    rule = get_aggregator("noise_weighted", training=training, count_noise=0.0)
    result = rule(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([10.0, 30.0, 1e9]), torch.zeros(1))
    assert result.info["basis"] == "sizes" and torch.allclose(result.weights, torch.tensor([1 / 7, 3 / 7, 3 / 7]).double())


def test_an_edge_reports_its_kept_data_with_each_size_capped_at_the_median() -> None:
    """The edge's sample count weighs its model at the cloud: one vehicle declaring
    2³² − 1 samples must not hand its edge the global model."""
    rule = build_rule(RuleSpec(name="fedavg", options={"cap": "median"}), [], {})
    uploads = {v: torch.ones(3) for v in (1, 2, 3)}
    outcome = aggregate_edge(rule, uploads, {1: 100, 2: 120, 3: HUGE}, torch.zeros(3), 1)
    assert outcome.samples == 100 + 120 + 120


def test_the_default_edge_rule_weighs_by_noise() -> None:
    assert AggregationSpec().edge.name == "noise_weighted"
    with pytest.raises(ValueError, match="cap must be one of"):
        get_aggregator("fedavg", cap="mean")
