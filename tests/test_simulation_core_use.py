"""The simulator calls the round core (selection, edge and cloud steps, consensus, seeds),
DP training and payouts, and re-implements none of it (docs/architecture.md: no
algorithm is written twice)."""

import ast
from pathlib import Path

import torch
from rich.console import Console

import bmfl.aggregation
import bmfl.attacks
import bmfl.rounds
import bmfl.incentives
import bmfl.simulation.runner as runner
import bmfl.simulation.vehicles as vehicles
import bmfl.training.fleet
from bmfl.aggregation import AggregationResult, Aggregator, register_aggregator
from bmfl.filters import FilterResult, UpdateFilter, register_filter
from bmfl.simulation import SimulationConfig, run_simulation

PACKAGES = [Path(runner.__file__).parent, Path(runner.__file__).parents[1] / "reproduce"]
# tensor maths that aggregation rules, filters and DP-SGD are made of
FORBIDDEN_CALLS = {
    "median", "sort", "argsort", "topk", "kthvalue", "quantile", "cdist", "norm", "normal", "randn", "clamp",
    "clip", "einsum", "vmap", "grad", "backward", "sign", "mean", "std", "step",
}
CALLS = []


def test_simulation_and_reproduce_code_contains_no_aggregation_filter_or_dp_maths():
    offenders = []
    for package in PACKAGES:
        for path in sorted(package.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FORBIDDEN_CALLS:
                    offenders.append(f"{path.name}:{node.lineno} .{node.func.attr}()")
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id in {"Aggregator", "UpdateFilter", "Attack"} for b in node.bases
                ):
                    offenders.append(f"{path.name}:{node.lineno} class {node.name}")
    assert offenders == []


def test_the_runner_uses_the_core_objects_themselves():
    assert vehicles.fleet_uploads is bmfl.training.fleet.fleet_uploads  # both backends train through it
    assert vehicles.vehicle_seed is bmfl.rounds.vehicle_seed
    for step in ("aggregate_edge", "aggregate_cloud", "task_edge_rule", "cloud_rule", "cross_scores", "medians_and_leader",
                 "select_trainers", "choose_attackers", "task_scorer"):
        assert getattr(runner, step) is getattr(bmfl.rounds, step), step
    assert runner.split_payouts is bmfl.incentives.split_payouts
    assert runner.to_fixed is bmfl.incentives.to_fixed


@register_aggregator("test_spy_mean")
class SpyMean(Aggregator):
    """Plain mean that records every call (level known from K)."""

    def aggregate(self, updates, sizes, reference):
        CALLS.append(("rule", updates.shape[0]))
        k = updates.shape[0]
        return AggregationResult(updates.mean(0), torch.full((k,), 1.0 / k, dtype=torch.float64))


@register_filter("test_spy_drop_first")
class SpyDropFirst(UpdateFilter):
    def __call__(self, updates, sizes, reference, *, round_index=1):
        CALLS.append(("filter", updates.shape[0], round_index))
        keep = torch.ones(updates.shape[0], dtype=torch.bool)
        keep[0] = False
        return FilterResult(keep)


def test_edges_and_cloud_run_the_configured_registry_rules_and_filters():
    CALLS.clear()
    config = SimulationConfig.model_validate({
        "rounds": 2, "vehicles": 6, "edges": 2, "data": {"name": "mnist_5k", "edge_test_samples": 100},
        "partition": {"kind": "iid", "options": {}},
        "training": {"epochs": 1, "dp": False, "lr": 0.05, "max_steps": 1},
        "aggregation": {"edge": {"name": "test_spy_mean"}, "filters": [{"name": "test_spy_drop_first"}],
                        "cloud": {"name": "test_spy_mean"}},
    })
    result = run_simulation(config, Console(quiet=True))
    # per round: the filter and the rule at each edge (3 uploads, 2 kept), then the cloud rule (2 edges)
    assert CALLS == [("filter", 3, 1), ("rule", 2), ("filter", 3, 1), ("rule", 2), ("rule", 2),
                     ("filter", 3, 2), ("rule", 2), ("filter", 3, 2), ("rule", 2), ("rule", 2)]
    assert all(m.honest_flagged == 2 for m in result.rounds)  # the first upload at each edge
    # θ = 1/2 for each kept upload, in fixed point, summed over 2 rounds
    assert sorted(c for per in result.contributions.values() for c in per.values()) == [0, 0, 10**6, 10**6, 10**6, 10**6]
