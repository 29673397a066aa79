"""The round core: every step of a BMFL round as plain functions over tensors and typed
records, with no transport, storage or chain (docs/architecture.md, "The round core").
The simulator's runner, the edge's round engine and the cloud's orchestrator call these
functions and add only HTTP, blob storage and chain calls around them.

Steps, in round order: :func:`select_trainers` (each edge), local training (vehicles:
``bmfl.training.fleet``), :func:`aggregate_edge` with :func:`edge_rule` (each edge),
:func:`cross_scores` and :func:`medians_and_leader` (every edge, then the chain),
:func:`aggregate_cloud` with :func:`cloud_rule` (the cloud), :func:`stop_reached` (the
cloud and the chain). Seeds: :func:`initial_model`, :func:`vehicle_seed`,
:func:`choose_attackers`.
"""

from bmfl.consensus import upper_median
from bmfl.rounds.cloud import CloudOutcome, aggregate_cloud, cloud_rule, server_optimizer
from bmfl.rounds.consensus import cross_scores, medians_and_leader, task_scorer
from bmfl.rounds.edge import NOT_APPLICABLE, EdgeOutcome, aggregate_edge, build_rule, edge_rule, root_updater
from bmfl.rounds.seeds import choose_attackers, initial_model, initial_model_blob, select_trainers, vehicle_seed
from bmfl.rounds.stop import rounds_run, stop_reached, target_fixed

__all__ = [
    "CloudOutcome", "aggregate_cloud", "cloud_rule", "server_optimizer",
    "cross_scores", "upper_median", "medians_and_leader", "task_scorer",
    "NOT_APPLICABLE", "EdgeOutcome", "aggregate_edge", "build_rule", "edge_rule", "root_updater",
    "choose_attackers", "initial_model", "initial_model_blob", "select_trainers", "vehicle_seed",
    "rounds_run", "stop_reached", "target_fixed",
]  # fmt: skip
