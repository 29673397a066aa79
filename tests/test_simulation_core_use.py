"""The simulator calls the core (aggregation, filters, attacks, DP training, consensus,
payouts) and re-implements none of it (DESIGN.md: no algorithm is written twice)."""

import ast
from pathlib import Path

import torch
from rich.console import Console

import bmfl.aggregation
import bmfl.attacks
import bmfl.consensus
import bmfl.filters
import bmfl.incentives
import bmfl.simulation.pipeline as pipeline
import bmfl.simulation.runner as runner
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
    assert runner.fleet_uploads is bmfl.training.fleet.fleet_uploads
    assert runner.consensus_accuracies is bmfl.consensus.consensus_accuracies
    assert runner.select_leader is bmfl.consensus.select_leader
    assert runner.split_payouts is bmfl.incentives.split_payouts
    assert runner.to_fixed is bmfl.incentives.to_fixed
    assert pipeline.get_aggregator is bmfl.aggregation.get_aggregator
    assert pipeline.compose is bmfl.aggregation.compose
    assert pipeline.get_filter is bmfl.filters.get_filter
    assert pipeline.get_attack is bmfl.attacks.get_attack


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
        "aggregation": {"edge": "test_spy_mean", "edge_filters": [{"name": "test_spy_drop_first"}],
                        "cloud": "test_spy_mean"},
    })
    result = run_simulation(config, Console(quiet=True))
    # per round: the filter and the rule at each edge (3 uploads, 2 kept), then the cloud rule (2 edges)
    assert CALLS == [("filter", 3, 1), ("rule", 2), ("filter", 3, 1), ("rule", 2), ("rule", 2),
                     ("filter", 3, 2), ("rule", 2), ("filter", 3, 2), ("rule", 2), ("rule", 2)]
    assert all(m.honest_flagged == 2 for m in result.rounds)  # the first upload at each edge
    # θ = 1/2 for each kept upload, in fixed point, summed over 2 rounds
    assert sorted(c for per in result.contributions.values() for c in per.values()) == [0, 0, 10**6, 10**6, 10**6, 10**6]
