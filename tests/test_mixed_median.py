"""mixed_median: nearest-neighbour mixing, then the geometric median of the DP-SGD signals;
and pipeline_aware, the attacker that runs the edge's own pipeline to pick its push
(issue 17)."""

from __future__ import annotations

import pytest
import torch

from bmfl.aggregation import get_aggregator
from bmfl.attacks import EdgeView, get_attack
from test_signal_median import D, N, TRAINING
from test_signal_median import _fleet as fleet

FLAG = {"name": "signal_median", "options": {"clip": False}}


def _fleet(seed: int, attackers: int, push: float) -> tuple[torch.Tensor, torch.Tensor]:
    """test_signal_median's fleet with more honest disagreement (spread 0.4)."""
    return fleet(seed, attackers, push, spread=0.4)


def _rule(name: str):
    return get_aggregator(name, training=TRAINING, count_noise=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_without_attackers_the_weights_are_convex_and_spread(seed: int) -> None:
    updates, u = _fleet(seed, 0, 0.0)
    result = _rule("mixed_median").aggregate(updates, torch.full((8,), float(N)), torch.zeros(D))
    weights = result.weights
    assert bool((weights >= 0).all()) and float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(result.aggregate, (weights[:, None] * updates.to(torch.float64)).sum(0).float(), atol=1e-6)
    assert float(weights.max()) < 0.35  # no upload carries the aggregate: its noise is averaged
    assert float(result.aggregate @ u) == pytest.approx(0.5, abs=0.15)
    mixing = result.info["mixing"]  # each upload with its K − ⌊(K − 1)/2⌋ nearest, itself included
    assert ((mixing > 0).sum(1) == 8 - 3).all() and bool((mixing.diagonal() > 0).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fifth_pushing_against_the_honest_direction_barely_moves_it(seed: int) -> None:
    """Two of ten uploads push by −3·u: the noise-weighted mean turns against u; the
    mixed median stays with the honest uploads."""
    updates, u = _fleet(seed, 2, -3.0)
    sizes = torch.full((10,), float(N))
    assert float(_rule("noise_weighted").aggregate(updates, sizes, torch.zeros(D)).aggregate @ u) < 0
    mixed = _rule("mixed_median").aggregate(updates, sizes, torch.zeros(D))
    assert float(mixed.aggregate @ u) > 0.3
    assert float(mixed.weights[8:].sum()) < 0.1


def _pipeline_attack(edge: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
    """pipeline_aware's uploads for two attackers against the signal median's flags, then ``edge``."""
    honest, u = _fleet(seed, 0, 0.0)
    own = torch.stack([0.5 * u, 0.5 * u])  # the attackers' clean updates point along u
    view = EdgeView(edge=0, vehicles=[8, 9], own=own, reference=torch.zeros(D), generator=torch.Generator().manual_seed(5),
                    total=10, honest=honest)  # fmt: skip
    attack = get_attack("pipeline_aware", training=TRAINING.model_dump(), aggregation={"edge": {"name": edge}, "filters": [FLAG]},
                        num_samples=N)  # fmt: skip
    return attack.collude(view), honest, u, attack


@pytest.mark.parametrize("edge", ["noise_weighted", "mixed_median"])
def test_the_pipeline_aware_attacker_sends_the_most_harmful_step_of_its_grid(edge: str) -> None:
    """Its uploads are w^{r-1} − t·u + n for the grid step t whose aggregate, through the
    edge's own pipeline, lies farthest along −u (the same noise draw for every step)."""
    sent, honest, u, attack = _pipeline_attack(edge)
    noise = torch.randn((2, D), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * attack._push.variance**0.5
    sizes = torch.full((10,), float(N))

    def harm(uploads: torch.Tensor) -> float:
        return -float(attack.rule()(torch.cat([honest, uploads.float()]), sizes, torch.zeros(D)).aggregate.double() @ u.double())

    grid = {t: harm(-t * u.double() + noise) for t in torch.linspace(0.0, attack._push.step, attack.steps).tolist()}
    best = max(grid, key=grid.__getitem__)
    assert torch.allclose(sent.double(), -best * u.double() + noise, atol=1e-6)
    assert harm(sent.double()) == pytest.approx(max(grid.values()), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mixed_median_lets_the_pipeline_aware_attacker_do_less(seed: int) -> None:
    """Two of ten attackers against the signal median's flags: followed by the mean, their
    best push halves the aggregate's progress along u; followed by the mixed median, it
    keeps 90 % of the progress without them."""
    progress, clean = {}, {}
    for edge in ("noise_weighted", "mixed_median"):
        sent, honest, u, attack = _pipeline_attack(edge, seed)
        progress[edge] = float(attack.rule()(torch.cat([honest, sent]), torch.full((10,), float(N)), torch.zeros(D)).aggregate @ u)
        clean[edge] = float(attack.rule()(honest, torch.full((8,), float(N)), torch.zeros(D)).aggregate @ u)
    assert progress["noise_weighted"] < 0.6 * clean["noise_weighted"]
    assert progress["mixed_median"] > 0.9 * clean["mixed_median"]
