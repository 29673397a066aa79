"""The cloud's rollback guard (``bmfl.rounds.ratchet``, docs/algorithms.md §8.8): known
answers in the chain's fixed point, the server optimiser's momentum after a refused
round, and a simulation in which colluding attackers who know the edges' pipeline
(``median_aware``, 40 % of the vehicles) no longer drag the global model down."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

from bmfl.aggregation.server import ServerOptimizer
from bmfl.rounds import CloudOutcome, guard_cloud
from bmfl.rounds.consensus import task_scorer
from bmfl.rounds.ratchet import Ratchet, refused_in_a_row
from bmfl.reproduce import robustness
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.simulation.runner import edge_test_set, initial_model
from bmfl.data import load_dataset
from bmfl.task import AggregationSpec


def _outcome(value: float) -> CloudOutcome:
    model = torch.full((4,), value)
    return CloudOutcome(model, {0: 1.0}, model)


def test_a_model_stands_within_the_tolerance_of_the_best_so_far():
    ratchet = Ratchet(0.05)
    assert ratchet.holds(0.0) and ratchet.best is None  # nothing observed: round 1 always stands
    ratchet.observe(1, torch.zeros(4), 0.60)
    ratchet.observe(2, torch.ones(4), 0.80)
    ratchet.observe(3, torch.ones(4) * 3, 0.70)  # worse: the best stays w²
    assert (ratchet.best.round, ratchet.best.accuracy) == (2, 800_000)
    assert ratchet.holds(0.75) and not ratchet.holds(0.749999)  # 0.80 − 0.05, in fixed point
    ratchet.observe(4, torch.ones(4) * 4, 0.80)  # as good and trained longer: it takes the best's place
    assert ratchet.best.round == 4
    assert Ratchet(0.0).tolerance == 0 and Ratchet(1.0).tolerance == 1_000_000
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match="tolerance"):
            Ratchet(bad)
    with pytest.raises(ValueError):
        AggregationSpec(ratchet=1.5)
    assert AggregationSpec(ratchet=0.05).describe().endswith(" / fedavg+ratchet(0.05)")


def test_refused_rounds_in_a_row_are_counted_from_the_models_the_rounds_began_from():
    """A round that begins from a model an earlier round began from follows a refused
    round (or one without data); the count is of such rounds in a row, ending now."""
    assert [refused_in_a_row(s) for s in ([], ["a"], ["a", "b", "c"], ["a", "b", "b"], ["a", "b", "c", "b", "b"])] == [0, 0, 0, 1, 2]
    assert refused_in_a_row(["a", "b", "b", "c"]) == 0  # a fresh model ends the run
    assert refused_in_a_row(["a", "a"]) == 1  # round 1 carried no data: w⁰ again
    assert refused_in_a_row(["a", "b", "c", "b", "c"]) == 2  # refused twice, back to different best models


def test_the_chain_gives_each_rounds_last_start_in_round_order():
    """``chain.tasks.round_starts``: from RoundStarted events in block order, the digest
    of each round's last start, rounds 1 … ``up_to``: what the edges and the audit count
    refused rounds from."""
    from types import SimpleNamespace

    from chain.tasks import round_starts

    events = [SimpleNamespace(round=r, globalDigest=d) for r, d in [(1, "0xAA"), (2, "0xbb"), (2, "0xcc"), (3, "0xaa"), (4, "0xdd")]]
    assert round_starts(events, 3) == ["0xaa", "0xcc", "0xaa"] and refused_in_a_row(round_starts(events, 3)) == 1
    assert round_starts(events, 4)[-1] == "0xdd" and refused_in_a_row(round_starts(events, 4)) == 0


def test_a_restarted_cloud_replays_the_recorded_rounds_and_loads_only_the_best_model():
    recorded = [(3, 700_000), (1, 600_000), (2, 800_000), (4, 800_000), (5, 750_000)]  # (round, accuracy), any order
    observed = Ratchet(0.05)
    for r, fixed in sorted(recorded):
        observed.observe(r, torch.full((4,), float(r)), fixed / 1e6)
    loaded: list[int] = []
    replayed = Ratchet.replay(0.05, recorded, lambda r: loaded.append(r) or torch.full((4,), float(r)))
    assert loaded == [4] and (replayed.best.round, replayed.best.accuracy) == (observed.best.round, observed.best.accuracy) == (4, 800_000)
    assert torch.equal(replayed.best.model, observed.best.model)
    assert Ratchet.replay(0.05, [], lambda r: loaded.append(r)).best is None and loaded == [4]


def test_a_refused_round_records_the_best_model_and_restarts_the_momentum():
    ratchet = Ratchet(0.05)
    first = guard_cloud(_outcome(1.0), 0.80, ratchet, 1)  # nothing observed yet: it stands, and is observed
    assert first.rolled_back_to is None and ratchet.best.round == 1
    server = ServerOptimizer("fedavgm", beta1=0.9)
    reference = torch.zeros(4)
    aggregate = server.step(reference, torch.full((4,), 2.0), 2)
    assert torch.equal(server.m, torch.full((4,), 2.0, dtype=torch.float64))
    kept = guard_cloud(_outcome(2.0), 0.76, ratchet, 2, server)  # 0.76 ≥ 0.75: stands, momentum untouched
    assert kept.rolled_back_to is None and torch.equal(server.m, torch.full((4,), 2.0, dtype=torch.float64))
    refused = guard_cloud(CloudOutcome(aggregate, {0: 1.0}, aggregate), 0.30, ratchet, 3, server)
    assert refused.rolled_back_to == 1 and torch.equal(refused.model, torch.full((4,), 1.0))
    assert torch.equal(server.m, torch.zeros(4, dtype=torch.float64))  # the refused step leaves no momentum
    assert refused.weights == {0: 1.0} and torch.equal(refused.aggregate, aggregate)  # what the rule computed stays on record
    assert (ratchet.best.round, ratchet.best.accuracy) == (3, 800_000)  # w³ is w¹: the same model, now the latest


@pytest.mark.slow
def test_colluding_attackers_who_know_the_edges_no_longer_drag_the_model_down():
    """The robustness matrix's median-aware cell (Dirichlet(0.9), 40 % attackers, seed 0,
    the default's training and edges, 12 rounds): without the guard the global model
    reaches 0.72 in round 3 and falls back (0.59 over the last 4 rounds); with a tolerance
    of 0.05 it stays at 0.72: the
    cloud refuses each round that drops below the best so far, and no recorded global
    model scores more than 0.05 under an earlier one on the edges' test set. With the
    default's escalation after refused rounds the edges drop the attackers that the
    fifth of the step hid, and the model climbs past the stall (0.80 over the last 4)."""
    scale = robustness.Scale("t", "mnist_5k", 10, 2, 12, 4, 300, (0.4,), (0,), ("median-aware",),
                             ("Envelope+SMmaj+LO(0.2)+NW",), ("Dirichlet(0.9)",), "private")  # fmt: skip
    run = next(r for r in robustness.matrix(scale) if "median-aware" in r.key)
    results = {}
    for tolerance in (None, 0.05):
        config = SimulationConfig.model_validate({**run.config, "aggregation": {**run.config["aggregation"], "ratchet": tolerance}})
        results[tolerance] = run_simulation(config, Console(quiet=True), keep_models=True)
    plain, guarded = results[None], results[0.05]
    last = {t: sum(m.accuracy for m in r.rounds[-4:]) / 4 for t, r in results.items()}
    print({t: [round(m.accuracy, 3) for m in r.rounds] for t, r in results.items()}, last,
          [m.rolled_back_to for m in guarded.rounds])  # fmt: skip
    assert all(m.rolled_back_to is None for m in plain.rounds) and sum(m.rolled_back_to is not None for m in guarded.rounds) >= 3
    assert last[0.05] > last[None] + 0.05
    # the default's escalation (§8.9): after a refused round the edges judge at half the
    # step, after two at the full one, and the stall at 0.72 is broken
    filters = [*run.config["aggregation"]["filters"][:-1], {"name": "leave_out", "options": {"step": 0.2, "escalation": 2.5}}]
    escalated = run_simulation(SimulationConfig.model_validate(
        {**run.config, "aggregation": {**run.config["aggregation"], "filters": filters, "ratchet": 0.05}}), Console(quiet=True))
    print([round(m.accuracy, 3) for m in escalated.rounds], [m.rolled_back_to for m in escalated.rounds])
    assert sum(m.accuracy for m in escalated.rounds[-4:]) / 4 > last[0.05] + 0.05
    config = SimulationConfig.model_validate(run.config)
    test = load_dataset(config.data.name, **config.data.options)[1]
    scorer = task_scorer(initial_model(config), edge_test_set(test, config))
    accuracies = scorer(torch.stack(guarded.models)).tolist()
    for r, accuracy in enumerate(accuracies):
        assert accuracy >= max(accuracies[: r + 1]) - 0.05 - 1e-9, (r + 1, accuracies)
