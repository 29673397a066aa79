"""Colluding attackers in the simulator: one edge's attackers send one shaped upload,
and every upload's verdict (Λ, T_Λ, θ) is in the round metrics."""

from rich.console import Console

from bmfl.simulation import SimulationConfig, run_simulation

CONFIG = {
    "name": "colluding",
    "rounds": 2,
    "vehicles": 8,
    "edges": 2,
    "data": {"name": "mnist_5k", "edge_test_samples": 200},
    "partition": {"kind": "iid", "options": {}},
    "training": {"epochs": 1, "batch_size": 64, "lr": 0.1, "momentum": 0.5, "dp": False, "max_steps": 2},
    "aggregation": {"edge": {"name": "fedavg"}, "filters": [{"name": "self_reliability", "options": {"tolerance": 1.0}}]},
    "attack": {"name": "alie", "fraction": 0.5, "options": {"z": 1.5}},
}


def test_colluding_attackers_share_one_upload_and_verdicts_reach_the_metrics():
    result = run_simulation(SimulationConfig.model_validate(CONFIG), Console(quiet=True))
    for metrics in result.rounds:
        ups = metrics.uploads
        assert len(ups) == metrics.trainers == 8
        assert {u["vehicle"] for u in ups} == set(range(8))
        assert sum(u["attacker"] for u in ups) == metrics.attackers_selected == 4
        assert all(u["threshold"] is not None and u["reliability"] is not None for u in ups)
        for edge in {u["edge"] for u in ups}:
            lam = {u["reliability"] for u in ups if u["edge"] == edge and u["attacker"]}
            assert len(lam) <= 1  # one shared ALIE upload per edge: one score
            kept = [u["theta"] for u in ups if u["edge"] == edge and not u["flagged"]]
            assert abs(sum(kept) - 1.0) < 1e-9 or not kept
        flagged = [u for u in ups if u["flagged"]]
        assert all(u["theta"] == 0.0 and u["reason"].startswith("filter:") for u in flagged)
        assert all(u["reliability"] < u["threshold"] for u in flagged)
