"""FLTrust (bmfl/aggregation/fltrust.py, docs/algorithms.md §8.2): a known answer, the
trust scores' invariants, the round core's root update, and the rule in the simulator
against sign flip, which the undefended mean swallows."""

from __future__ import annotations

import math

import pytest
import torch
from rich.console import Console

from bmfl.aggregation import get_aggregator, trust_scores
from bmfl.data import load_dataset
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.rounds import aggregate_edge, edge_rule, root_updater
from bmfl.rounds.edge import ROOT_SIZE, root_data
from bmfl.rounds.validate import validate_task
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.task import AggregationSpec, RuleSpec, TaskDraft
from bmfl.training.local import LocalTrainingConfig


def _fixed_root(root: list[float]):
    return lambda reference: reference + torch.tensor(root, dtype=reference.dtype)


def test_known_answer_from_the_paper_equations() -> None:
    # g0 = (1, 0); Δ = (2, 0) cos 1, (0, 3) cos 0, (−1, 0) cos −1 → 0, (1, 1) cos 1/√2
    reference = torch.tensor([5.0, -2.0])
    deltas = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])
    result = get_aggregator("fltrust", root_update=_fixed_root([1.0, 0.0]))(reference + deltas, None, reference)
    s = 1 / math.sqrt(2)
    total = 1 + s
    assert result.weights.tolist() == pytest.approx([1 / total, 0.0, 0.0, s / total])
    # normalised to ‖g0‖ = 1: (1, 0) and (1/√2, 1/√2), weighted by their trust scores
    expected = reference + torch.tensor([(1 + s * s) / total, s * s / total])
    assert torch.allclose(result.aggregate, expected, atol=1e-6)
    assert [v.flagged for v in result.verdicts] == [False, True, True, False]
    assert result.verdicts[2].reason == "rule:fltrust"


def test_scale_does_not_buy_weight_and_order_does_not_matter() -> None:
    g = torch.Generator().manual_seed(3)
    root = torch.randn(50, generator=g)
    honest = root + 0.5 * torch.randn(6, 50, generator=g)
    boosted = torch.cat([honest, 1e6 * honest[:1]])  # the first upload again, a million times larger
    rule = get_aggregator("fltrust", root_update=lambda ref: ref + root)
    result = rule(boosted, None, torch.zeros(50))
    assert result.weights[6].item() == pytest.approx(result.weights[0].item())
    assert result.aggregate.norm().item() <= root.norm().item() + 1e-4  # a convex mix of vectors of norm ‖g0‖
    perm = torch.randperm(7, generator=g)
    again = rule(boosted[perm], None, torch.zeros(50))
    assert torch.allclose(again.aggregate, result.aggregate, atol=1e-5)
    assert torch.allclose(again.weights, result.weights[perm])


def test_trust_scores_are_relu_cosines_and_zero_for_zero_vectors() -> None:
    root = torch.tensor([0.0, 2.0], dtype=torch.float64)
    deltas = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -4.0], [0.0, 0.0], [3.0, 3.0]], dtype=torch.float64)
    assert trust_scores(deltas, root).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0, 1 / math.sqrt(2)])
    assert trust_scores(deltas, torch.zeros(2, dtype=torch.float64)).tolist() == [0.0] * 5


def test_every_upload_against_the_root_update_leaves_the_model_unchanged() -> None:
    reference = torch.ones(3)
    result = get_aggregator("fltrust", root_update=_fixed_root([1.0, 1.0, 1.0]))(
        reference - torch.rand(4, 3) - 0.1, None, reference
    )
    assert torch.equal(result.aggregate, reference) and result.weights.sum().item() == 0.0
    assert all(v.flagged for v in result.verdicts)


def test_the_round_core_supplies_a_reproducible_root_update_from_the_test_set() -> None:
    test = load_dataset("mnist")[1].subset(list(range(400)))
    root = root_data(test)
    assert len(root) == ROOT_SIZE and torch.equal(root.y, root_data(test).y)  # fixed, the same at every edge
    assert len(root_data(test.subset(list(range(30))))) == 30
    model = create_model("bmfl_cnn")
    reference = flatten(model.state_dict())
    config = LocalTrainingConfig(epochs=1, batch_size=32, lr=0.1, dp=True)
    first = root_updater(model, test, config)(reference)
    assert not torch.equal(first, reference)
    assert torch.equal(first, root_updater(create_model("bmfl_cnn"), test, config)(reference))  # no DP noise, seeded order
    assert torch.equal(flatten(model.state_dict()), reference)  # the caller's model is not trained

    spec = AggregationSpec(edge=RuleSpec(name="fltrust"), filters=[])
    with pytest.raises(ValueError, match="aggregator 'fltrust' needs root_update"):
        edge_rule(spec, None)
    with pytest.raises(ValueError, match="supplied by the round"):
        edge_rule(AggregationSpec(edge=RuleSpec(name="fltrust", options={"root_update": 1}), filters=[]), None, id)
    rule = edge_rule(spec, None, root_updater(model, test, config))
    g = torch.Generator().manual_seed(0)
    toward = {v: first + 1e-4 * torch.randn(first.shape, generator=g) for v in (1, 2, 3)}
    away = {4: 2 * reference - first}  # the root update reversed
    outcome = aggregate_edge(rule, {**toward, **away}, {1: 10, 2: 10, 3: 10, 4: 10}, reference, 1)
    assert outcome.verdicts[4].flagged and not any(outcome.verdicts[v].flagged for v in toward)
    assert outcome.samples == 30


def test_a_task_may_name_fltrust() -> None:
    draft = TaskDraft.model_validate({"aggregation": {"edge": {"name": "fltrust"}, "filters": []}})
    assert validate_task(draft, None) == []
    at_cloud = TaskDraft.model_validate({"aggregation": {"cloud": {"name": "fltrust"}}})
    assert [p.reason for p in validate_task(at_cloud, None)] == ["invalid_spec"]  # the cloud has no root data


@pytest.mark.slow
def test_fltrust_holds_sign_flip_that_the_mean_swallows() -> None:
    base = {
        "name": "fltrust",
        "rounds": 3,
        "vehicles": 10,
        "edges": 1,
        "data": {"name": "mnist_5k", "edge_test_samples": 300},
        "partition": {"kind": "iid", "options": {}},
        "training": {"epochs": 1, "batch_size": 64, "lr": 0.1, "momentum": 0.5, "dp": False},
        "attack": {"name": "sign_flip", "fraction": 0.4},
    }
    runs = {
        name: run_simulation(
            SimulationConfig.model_validate({**base, "aggregation": {"edge": {"name": name}, "filters": []}}),
            Console(quiet=True),
        )
        for name in ("fltrust", "fedavg")
    }
    defended = runs["fltrust"]
    assert all(m.attacker_weight == 0.0 for m in defended.rounds)
    assert defended.final.accuracy > runs["fedavg"].final.accuracy + 0.2
