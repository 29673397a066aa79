"""Asynchronous rounds (issue 20): staleness weights and refusal, buffered updates,
BAFDP's L1 sign rule, the straggler clock, and the async simulator against sync."""

import math

import pytest
import torch
from rich.console import Console

from bmfl.aggregation import Verdict, compose, get_aggregator
from bmfl.filters.base import FilterResult, UpdateFilter, get_filter
from bmfl.filters.dp_floor import noise_variance
from bmfl.rounds.asynchronous import STALE, Report, apply_buffer, buffer_ready, polynomial, stale_verdict
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.simulation.config import StragglerConfig
from bmfl.simulation.output import cost_to_target
from bmfl.simulation.stragglers import ComputeClock, slowdowns
from bmfl.task import AsyncSpec, TrainingSpec

FEDAVG = get_aggregator("fedavg")


def test_polynomial_staleness_known_values():
    assert polynomial(0, 0.6, 0.5) == pytest.approx(0.6)
    assert polynomial(3, 0.6, 0.5) == pytest.approx(0.3)  # 0.6 · 4^(−1/2)
    assert polynomial(8, 0.9, 1.0) == pytest.approx(0.1)  # 0.9 / 9
    assert polynomial(7, 1.0, 0.0) == 1.0
    with pytest.raises(ValueError):
        polynomial(-1)


def test_staleness_beyond_tau_max_is_refused_with_a_reason():
    assert stale_verdict(10, 6, 4) is None  # τ = 4 = τ_max
    assert stale_verdict(10, 5, 4) == Verdict(0.0, True, STALE)
    with pytest.raises(ValueError, match="future"):
        stale_verdict(3, 4, 4)


def test_buffer_applies_after_s_reports_or_the_timeout():
    spec = AsyncSpec(mode="async", buffer_size=3, timeout_s=5.0)
    assert not buffer_ready(2, 4.9, spec, participants=10)
    assert buffer_ready(3, 0.0, spec, participants=10)
    assert buffer_ready(1, 5.0, spec, participants=10)
    assert not buffer_ready(0, 99.0, spec, participants=10)
    assert buffer_ready(2, 0.0, AsyncSpec(mode="async"), participants=2)  # S unset = every participant


def _reports() -> dict[int, Report]:
    """w_3 = (1, 1). Vehicle 0 is fresh; vehicle 1 trained from w_0 = (0, 0) (τ = 3);
    vehicle 2 from version −2 … i.e. τ = 5 > τ_max = 4."""
    current = torch.ones(2)
    return {
        0: Report(torch.tensor([3.0, 1.0]), current, 3),
        1: Report(torch.tensor([2.0, 2.0]), torch.zeros(2), 0),
        2: Report(torch.tensor([100.0, -100.0]), torch.zeros(2), -2),
    }


def test_fedbuff_rebases_scaled_deltas_and_applies_the_server_lr():
    spec = AsyncSpec(mode="async", weighting="fedbuff", tau_max=4, exponent=0.5, server_lr=2.0)
    out = apply_buffer(FEDAVG, _reports(), {0: 1, 1: 1, 2: 1}, torch.ones(2), 3, spec)
    # vehicle 1: w_3 + 4^(−1/2)·(2, 2) = (2, 2); mean with (3, 1) = (2.5, 1.5); w_3 + 2·(1.5, 0.5)
    assert torch.allclose(out.model, torch.tensor([4.0, 2.0]))
    assert out.staleness == {0: 0, 1: 3, 2: 5} and out.rate == 2.0 and out.samples == 2
    assert out.verdicts[2] == Verdict(0.0, True, STALE)
    assert [out.verdicts[v].theta for v in (0, 1)] == pytest.approx([0.5, 0.5])


class _Seen(UpdateFilter):
    """Keeps every upload and records what it was shown."""

    name = "seen"

    def __init__(self) -> None:
        self.shown: list[torch.Tensor] = []

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        self.shown.append(updates.clone())
        return FilterResult(torch.ones(len(updates), dtype=torch.bool))


def test_fedbuff_filters_judge_the_delta_as_sent_and_the_rule_the_scaled_one():
    spec = AsyncSpec(mode="async", weighting="fedbuff", tau_max=4, exponent=0.5)
    seen = _Seen()
    out = apply_buffer(compose(FEDAVG, seen), _reports(), {0: 1, 1: 1, 2: 1}, torch.ones(2), 3, spec)
    # the filter sees vehicle 1's delta (2, 2) rebased on w_3 unscaled: (3, 3), not (2, 2)
    (shown,) = seen.shown
    assert torch.equal(shown, torch.tensor([[3.0, 1.0], [3.0, 3.0]]))
    # the rule sees it scaled by 4^(−1/2), as FedBuff without a filter: the same model
    assert torch.allclose(out.model, apply_buffer(FEDAVG, _reports(), {0: 1, 1: 1, 2: 1}, torch.ones(2), 3, spec).model)
    assert torch.allclose(out.model, torch.tensor([2.5, 1.5]))


def test_a_dp_floor_keeps_a_stale_honest_delta_that_scaling_would_have_shrunk_below_its_noise():
    training = {"epochs": 1, "lr": 0.1, "batch_size": 8, "clip": 1.0, "noise_multiplier": 1.0, "max_steps": 2}
    floor = get_filter("dp_floor", training=training)
    d, n = 20_000, 64
    v = noise_variance(TrainingSpec.model_validate(training).local(), n)
    g = torch.Generator().manual_seed(0)
    current = torch.zeros(d)
    fresh = {m: Report(current + v**0.5 * torch.randn(d, generator=g), current, 8) for m in (0, 1)}
    base = torch.full((d,), 0.01)
    stale = Report(base + v**0.5 * torch.randn(d, generator=g), base, 5)  # τ = 3: s = 1/2 shrinks ‖Δ‖² by 4
    spec = AsyncSpec(mode="async", weighting="fedbuff", tau_max=4, exponent=0.5)
    out = apply_buffer(compose(FEDAVG, floor), {**fresh, 2: stale}, dict.fromkeys(range(3), n), current, 8, spec)
    assert not any(x.flagged for x in out.verdicts.values())
    assert floor(torch.stack([current + 0.5 * (stale.upload - base)]), torch.tensor([float(n)]), current).keep.tolist() == [False]


def test_fedasync_mixes_the_uploads_with_the_mean_polynomial_rate():
    spec = AsyncSpec(mode="async", weighting="fedasync", tau_max=4, alpha=0.6, exponent=0.5)
    out = apply_buffer(FEDAVG, _reports(), {0: 1, 1: 1, 2: 1}, torch.ones(2), 3, spec)
    # agg = mean((3, 1), (2, 2)) = (2.5, 1.5); ᾱ = (0.6 + 0.3) / 2 = 0.45
    assert out.rate == pytest.approx(0.45)
    assert torch.allclose(out.model, 0.55 * torch.ones(2) + 0.45 * torch.tensor([2.5, 1.5]))


def test_a_buffer_of_only_stale_reports_leaves_the_model():
    spec = AsyncSpec(mode="async", tau_max=0)
    out = apply_buffer(FEDAVG, {1: _reports()[1]}, {1: 1}, torch.ones(2), 3, spec)
    assert out.model is None and out.verdicts[1].reason == STALE


def test_sign_l1_known_answer_and_bounded_outlier_pull():
    reference = torch.zeros(3)
    updates = torch.tensor([[1.0, -1.0, 0.0], [2.0, -3.0, 0.0], [-1.0, -1.0, 5.0]])
    rule = get_aggregator("sign_l1", lr=1.0, lam=0.1)
    result = rule(updates, None, reference)
    # Σ sign(w − w_m) = (−1, 3, −1); w − ηλ·Σ
    assert torch.allclose(result.aggregate, torch.tensor([0.1, -0.3, 0.1]))
    assert result.weights.tolist() == pytest.approx([1 / 3] * 3)
    far = updates.clone()
    far[2] = torch.tensor([-1e6, -1e6, 1e6])  # a far outlier pulls no further than a near one
    assert torch.equal(rule(far, None, reference).aggregate, result.aggregate)
    with pytest.raises(ValueError):
        get_aggregator("sign_l1", lam=0.0)


def test_straggler_clock_is_seeded_and_matches_its_preset():
    preset = StragglerConfig(kind="slow_fraction")
    factors = slowdowns(preset, 20, seed=0)
    assert sorted(factors.tolist()) == [1.0] * 14 + [5.0] * 6
    assert factors.tolist() == slowdowns(preset, 20, seed=0).tolist() != slowdowns(preset, 20, seed=1).tolist()
    clock = ComputeClock(preset, 20, seed=0)
    slow = int(factors.argmax())
    assert clock.duration(slow, 500, job=1) == pytest.approx(2.5)  # 500 samples × 1 ms × 5
    gaps = ComputeClock(StragglerConfig(gap_probability=0.5, gap_mean_s=10.0), 4, seed=3)
    seconds = [gaps.duration(v, 100, job) for v in range(4) for job in range(1, 6)]
    assert seconds == [gaps.duration(v, 100, job) for v in range(4) for job in range(1, 6)]
    assert min(seconds) == pytest.approx(0.1) and max(seconds) > 0.1  # some jobs wait for coverage
    lognormal = slowdowns(StragglerConfig(kind="lognormal", sigma=0.5), 2000, seed=0)
    assert abs(math.log(float(sorted(lognormal)[1000]))) < 0.1  # median slowdown ≈ 1


SMALL = {
    "name": "async",
    "rounds": 2,
    "vehicles": 4,
    "edges": 1,
    "data": {"name": "mnist_5k"},
    "partition": {"kind": "iid", "options": {}},
    "training": {"epochs": 1, "batch_size": 64, "lr": 0.05, "max_steps": 2},
    "aggregation": {"edge": {"name": "trimmed_mean", "options": {"beta": 1}}, "filters": []},
}


def _run(**changes):
    return run_simulation(SimulationConfig.model_validate({**SMALL, **changes}), Console(quiet=True))


def test_async_with_every_vehicle_and_no_staleness_equals_sync_bit_for_bit():
    sync = _run()
    asynchronous = _run(asynchrony={"mode": "async", "tau_max": 0})
    assert torch.equal(sync.final_vector, asynchronous.final_vector)
    assert [r.accuracy for r in sync.rounds] == [r.accuracy for r in asynchronous.rounds]
    assert sync.verdicts == asynchronous.verdicts and sync.contributions == asynchronous.contributions
    assert [r.sim_time_s for r in sync.rounds] == [r.sim_time_s for r in asynchronous.rounds]
    assert sync.rounds[0].sim_time_s == pytest.approx(2 * 64 * 1e-3)  # 2 steps × 64 samples × 1 ms


def test_async_stragglers_are_refused_when_stale_and_runs_repeat_for_a_seed():
    changes = {
        "rounds": 7,
        "aggregation": {"edge": {"name": "fedavg"}, "filters": []},
        "stragglers": {"kind": "slow_fraction", "slow_fraction": 0.5},
        "asynchrony": {"mode": "async", "buffer_size": 2, "tau_max": 0},
    }
    first, again = _run(**changes), _run(**changes)
    assert [r.accuracy for r in first.rounds] == [r.accuracy for r in again.rounds]
    assert [r.sim_time_s for r in first.rounds] == [r.sim_time_s for r in again.rounds]
    assert torch.equal(first.final_vector, again.final_vector)
    times = [r.sim_time_s for r in first.rounds]
    assert times == sorted(times) and len(times) == 7
    # the two fast vehicles report every 0.128 s, the slow ones after 0.64 s: by then the
    # model has moved, so their reports are refused as stale and counted
    assert sum(r.stale_refused for r in first.rounds) >= 1
    stale = [u for r in first.rounds for u in r.uploads if u["reason"] == STALE]
    assert stale and all(u["staleness"] > 0 and u["theta"] == 0.0 for u in stale)
    assert cost_to_target(first.rows(), 1e-9).sim_time_s == times[0]  # time to accuracy, simulated
