"""Server-side optimisers at the cloud (bmfl.aggregation.server; docs/algorithms.md §4.1):
known answers on tiny vectors, worked by hand from Reddi et al. 2021's Algorithm 2 (and
Hsu et al. 2019's FedAvgM), and the round core's use of them."""

from __future__ import annotations

import math

import pytest
import safetensors.torch
import torch
from pydantic import ValidationError

from bmfl.aggregation.server import ServerOptimizer
from bmfl.rounds import aggregate_cloud, cloud_rule, server_optimizer
from bmfl.task import AggregationSpec

W0 = torch.tensor([1.0, -2.0])
A1 = torch.tensor([1.5, -2.0])  # Δ¹ = (0.5, 0)


def test_paper_is_plain_averaging_and_keeps_no_state() -> None:
    opt = ServerOptimizer()
    assert opt.step(W0, A1, 1) is A1 and opt.state() == {}


def test_fedavgm_accumulates_the_pseudo_gradient() -> None:
    opt = ServerOptimizer("fedavgm", lr=1.0, beta1=0.5)
    w1 = opt.step(W0, A1, 1)  # m = (0.5, 0) → w¹ = (1.5, −2)
    assert torch.equal(w1, torch.tensor([1.5, -2.0]))
    w2 = opt.step(w1, w1 + torch.tensor([0.5, 1.0]), 2)  # m = 0.5·(0.5, 0) + (0.5, 1) = (0.75, 1)
    assert torch.allclose(w2, torch.tensor([2.25, -1.0]))


def test_fedadam_first_round_by_hand() -> None:
    opt = ServerOptimizer("fedadam", lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    w1 = opt.step(W0, A1, 1)
    m = 0.1 * 0.5  # (1 − β₁)Δ
    v = 0.99 * 1e-6 + 0.01 * 0.25  # β₂τ² + (1 − β₂)Δ²
    expected = 1.0 + 0.1 * m / (math.sqrt(v) + 1e-3)
    assert w1[0].item() == pytest.approx(expected, rel=1e-6)
    assert w1[1].item() == -2.0  # Δ = 0 there: m = 0, no move
    assert opt.v[1].item() == pytest.approx(0.99e-6)


def test_fedyogi_second_moment_moves_by_the_sign() -> None:
    opt = ServerOptimizer("fedyogi", lr=1.0, beta1=0.0, beta2=0.9, tau=0.1)
    opt.step(torch.zeros(1), torch.tensor([1.0]), 1)  # v⁰ = τ² = 0.01 < Δ² = 1: v = 0.01 + 0.1·1
    assert opt.v.item() == pytest.approx(0.11)
    w = opt.step(torch.zeros(1), torch.tensor([0.1]), 2)  # v = 0.11 − 0.1·0.01·sign(0.11 − 0.01) = 0.109
    assert opt.v.item() == pytest.approx(0.109)
    assert w.item() == pytest.approx(0.1 / (math.sqrt(0.109) + 0.1), rel=1e-6)
    adam = ServerOptimizer("fedadam", lr=1.0, beta1=0.0, beta2=0.9, tau=0.1)
    adam.step(torch.zeros(1), torch.tensor([1.0]), 1)
    adam.step(torch.zeros(1), torch.tensor([0.1]), 2)
    assert adam.v.item() == pytest.approx(0.9 * 0.109 + 0.1 * 0.01)  # Adam decays v, Yogi barely does


def test_state_round_trips_through_safetensors_and_continues_identically() -> None:
    a = ServerOptimizer("fedadam", lr=0.5)
    b = ServerOptimizer("fedadam", lr=0.5)
    w = a.step(W0, A1, 1)
    b.step(W0, A1, 1)
    resumed = ServerOptimizer("fedadam", lr=0.5).load(safetensors.torch.load(safetensors.torch.save(a.state())))
    nxt = w + torch.tensor([0.1, -0.3])
    assert torch.equal(resumed.step(w, nxt, 2), b.step(w, nxt, 2))


def test_the_round_core_applies_it_to_the_clouds_aggregate() -> None:
    spec = AggregationSpec(server={"name": "fedavgm", "lr": 2.0, "beta1": 0.0})
    prelims = {0: torch.tensor([2.0, 0.0]), 1: torch.tensor([0.0, 2.0])}
    out = aggregate_cloud(cloud_rule(spec), prelims, {0: 1, 1: 3}, torch.zeros(2), 1, server_optimizer(spec, 10))
    assert torch.allclose(out.aggregate, torch.tensor([0.5, 1.5]))  # FedAvg by samples (Eq. 3)
    assert torch.allclose(out.model, torch.tensor([1.0, 3.0]))  # w⁰ + η·Δ
    assert spec.describe().endswith("fedavg+fedavgm")
    assert AggregationSpec().server.name == "paper" and AggregationSpec().describe().endswith("/ fedavg")


def test_cosine_schedule_decays_the_step_over_the_planned_rounds() -> None:
    # R = 4: η_r = η·½(1 + cos(π(r − 1)/4)) = η·(1, 0.8536, 0.5, 0.1464); with β₁ = 0 each move is η_r·Δ
    opt = ServerOptimizer("fedavgm", lr=2.0, beta1=0.0, schedule="cosine", rounds=4)
    factors = [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2]
    w = torch.zeros(1)
    for r, f in enumerate(factors, start=1):
        assert opt.rate(r) == pytest.approx(2.0 * f)
        nxt = opt.step(w, w + 1.0, r)  # Δ = 1
        assert (nxt - w).item() == pytest.approx(2.0 * f)
        w = nxt
    assert opt.rate(9) == opt.rate(4)  # a task past its plan (never: K is its maximum) keeps the last step
    constant = ServerOptimizer("fedavgm", lr=2.0, beta1=0.0)
    assert [constant.rate(r) for r in (1, 4)] == [2.0, 2.0]
    # the round core passes the round index: round 3 of 4 moves by η/2
    spec = AggregationSpec(server={"name": "fedavgm", "lr": 2.0, "beta1": 0.0, "schedule": "cosine"})
    out = aggregate_cloud(cloud_rule(spec), {0: torch.ones(1)}, {0: 1}, torch.zeros(1), 3, server_optimizer(spec, 4))
    assert out.model.item() == pytest.approx(1.0)
    assert spec.describe().endswith("fedavg+fedavgm(cosine)")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="schedule_without_server_optimiser"):
        AggregationSpec(server={"name": "paper", "schedule": "cosine"})
    with pytest.raises(ValueError, match="planned rounds"):
        ServerOptimizer("fedavgm", schedule="cosine")
    with pytest.raises(ValidationError):
        AggregationSpec(server={"name": "fedsgd"})
    with pytest.raises(ValueError):
        ServerOptimizer("fedadam", beta2=1.0)
