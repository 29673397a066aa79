"""Attacks, filters and per-round attack metrics in the simulator, with known answers."""

import torch
from rich.console import Console

import bmfl.rounds.seeds
from bmfl.attacks import Attack, register_attack
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.simulation.pipeline import choose_attackers

BASE = {
    "name": "attacked",
    "rounds": 2,
    "vehicles": 8,
    "edges": 2,
    "data": {"name": "mnist_5k", "edge_test_samples": 200},
    "partition": {"kind": "iid", "options": {}},
    "training": {"epochs": 1, "batch_size": 64, "lr": 0.1, "momentum": 0.5, "dp": False},
    "aggregation": {"edge": {"name": "fedavg"}, "filters": []},
}
SR = {"name": "self_reliability", "options": {"tolerance": 1.0}}


@register_attack("test_nan_upload")
class NanUpload(Attack):
    """Uploads NaN everywhere: the edges' verification must drop it."""

    trains = False

    def poison_update(self, upload, context):
        return torch.full_like(upload, float("nan"))


def _run(**overrides):
    return run_simulation(SimulationConfig.model_validate({**BASE, **overrides}), Console(quiet=True))


def test_attackers_are_drawn_once_by_the_seed():
    assert choose_attackers is bmfl.rounds.seeds.choose_attackers  # the core's, re-exported
    a = choose_attackers(50, 0.6, seed=0)
    assert len(a) == 30 and a == choose_attackers(50, 0.6, seed=0) and a != choose_attackers(50, 0.6, seed=1)
    assert choose_attackers(50, 0.0, seed=0) == frozenset() and len(choose_attackers(10, 0.25, 0)) == 2


def test_self_reliability_flags_every_same_value_attacker_and_fedavg_swallows_them():
    attack = {"name": "same_value", "fraction": 0.5}
    # three edges: a consensus, so the chain's payout rule pays vehicles at all
    defended = _run(attack=attack, aggregation={"edge": {"name": "fedavg"}, "filters": [SR]}, edges=3)
    for m in defended.rounds:
        assert m.attackers_selected == 4 and m.attackers_flagged == 4 and m.attackers_missed == 0
        assert m.attacker_weight == 0.0
    assert defended.final.accuracy > 0.3
    assert all(defended.payouts.vehicles.get(v, 0) == 0 for v in defended.attackers)
    assert all(c == 0 for per in defended.contributions.values() for v, c in per.items() if v in defended.attackers)

    undefended = _run(attack=attack, edges=3)
    assert undefended.final.attackers_flagged == 0 and undefended.final.attacker_weight > 0.3
    assert undefended.final.accuracy < 0.2  # parameters of 100 everywhere: chance level
    assert all(undefended.payouts.vehicles[v] > 0 for v in undefended.attackers)


def test_sign_flippers_are_caught_and_honest_vehicles_kept_beyond_half_attackers():
    # DP-SGD as in the BMFL grid: a flipped update (γ = −10) has 100× the honest D
    dp = {"epochs": 1, "max_steps": 3, "lr": 0.3, "momentum": 0.5, "dp": True, "noise_multiplier": 2.0}
    result = _run(attack={"name": "sign_flip", "fraction": 0.75}, training=dp,
                  aggregation={"edge": {"name": "reweight"}, "filters": [SR]})
    assert [(m.attackers_flagged, m.attackers_selected) for m in result.rounds] == [(6, 6), (6, 6)]
    assert all(m.honest_flagged == 0 for m in result.rounds)


def test_non_finite_uploads_are_dropped_and_counted_as_flagged():
    result = _run(attack={"name": "test_nan_upload", "fraction": 0.25})
    assert all(m.attackers_flagged == 2 and m.honest_flagged == 0 for m in result.rounds)
    assert bool(torch.isfinite(result.final_vector).all()) and result.final.accuracy > 0.3


def test_ideal_filter_drops_exactly_the_attackers():
    result = _run(attack={"name": "sign_flip", "fraction": 0.5, "ideal_filter": True})
    assert all((m.attackers_flagged, m.honest_flagged, m.attacker_weight) == (4, 0, 0.0) for m in result.rounds)


def test_krum_zero_weights_count_as_flags():
    result = _run(rounds=1, aggregation={"edge": {"name": "krum"}, "filters": []})
    assert result.final.honest_flagged == 6  # Krum keeps one of the four uploads at each edge


def test_success_rate_is_reported_for_the_attacks_with_a_goal_of_their_own():
    backdoored = _run(rounds=1, attack={"name": "backdoor", "fraction": 0.25, "options": {"epochs": 1}})
    assert 0.0 <= backdoored.final.attack_success_rate <= 1.0
    targeted = _run(rounds=1, attack={"name": "label_flip", "fraction": 0.25, "options": {"mapping": {7: 1}}})
    assert 0.0 <= targeted.final.attack_success_rate <= 1.0
    assert _run(rounds=1, attack={"name": "sign_flip", "fraction": 0.25}).final.attack_success_rate is None
    assert _run(rounds=1, attack={"name": "label_flip", "fraction": 0.25}).final.attack_success_rate is None


def test_an_edge_whose_rule_cannot_apply_submits_nothing_and_the_run_goes_on():
    # trimmed mean with β = 2 needs 5 uploads; each edge keeps 4 − 2 NaN attackers = 2
    result = _run(rounds=1, attack={"name": "test_nan_upload", "fraction": 0.5},
                  aggregation={"edge": {"name": "trimmed_mean", "options": {"beta": 2}}, "filters": []})
    m = result.final
    assert m.edges_silent == 2 and m.leader is None and m.upstream_bytes_cloud == 0
    assert (m.attackers_flagged, m.honest_flagged) == (4, 4)
    torch.manual_seed(0)
    assert torch.equal(result.final_vector, flatten(create_model("bmfl_cnn").state_dict()))  # w^1 = w^0
    assert result.payouts.vehicles == {} and result.payouts.dust == result.payouts.available
