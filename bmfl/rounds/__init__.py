"""The round core: every step of a BMFL round as plain functions over tensors and typed
records, with no transport, storage or chain (docs/architecture.md, "The round core").
The simulator's runner, the edge's round engine and the cloud's orchestrator call these
functions and add only HTTP, blob storage and chain calls around them.

Steps, in round order: :func:`select_trainers` (each edge), local training (vehicles:
``bmfl.training.fleet``), :func:`aggregate_edge` with :func:`edge_rule` (each edge),
:func:`cross_scores` and :func:`medians_and_leader` (every edge, then the chain),
:func:`aggregate_cloud` with :func:`cloud_rule` and :func:`guard_cloud` (the cloud), :func:`stop_reached` (the
cloud and the chain). Asynchronous mode: :func:`apply_buffer` over a buffer of
:class:`Report` with :func:`stale_verdict`, :func:`polynomial` and :func:`buffer_ready`. Seeds: :func:`initial_model`, :func:`vehicle_seed`,
:func:`choose_attackers`.
"""

import importlib
from typing import Any

# name → module: imported on first use, so that light users (the chain client's
# ``target_fixed``, the CLI) do not pay for torch
_EXPORTS = {
    "upper_median": "bmfl.consensus",
    "BufferOutcome": "bmfl.rounds.asynchronous", "Report": "bmfl.rounds.asynchronous", "STALE": "bmfl.rounds.asynchronous",
    "apply_buffer": "bmfl.rounds.asynchronous", "buffer_ready": "bmfl.rounds.asynchronous",
    "polynomial": "bmfl.rounds.asynchronous", "stale_verdict": "bmfl.rounds.asynchronous",
    "staleness_weight": "bmfl.rounds.asynchronous", "close_edge": "bmfl.rounds.asynchronous",
    "CloudOutcome": "bmfl.rounds.cloud", "aggregate_cloud": "bmfl.rounds.cloud", "cloud_rule": "bmfl.rounds.cloud",
    "server_optimizer": "bmfl.rounds.cloud",
    "cross_scores": "bmfl.rounds.consensus", "medians_and_leader": "bmfl.rounds.consensus",
    "task_scorer": "bmfl.rounds.consensus",
    "NOT_APPLICABLE": "bmfl.rounds.edge", "EdgeOutcome": "bmfl.rounds.edge", "aggregate_edge": "bmfl.rounds.edge",
    "build_rule": "bmfl.rounds.edge", "edge_rule": "bmfl.rounds.edge", "root_updater": "bmfl.rounds.edge", "class_descent": "bmfl.rounds.edge",
    "task_edge_rule": "bmfl.rounds.edge", "scores_uploads": "bmfl.rounds.edge", "rule_needs": "bmfl.rounds.edge",
    "Ratchet": "bmfl.rounds.ratchet", "guard_cloud": "bmfl.rounds.ratchet",
    "refused_in_a_row": "bmfl.rounds.ratchet",
    "choose_attackers": "bmfl.rounds.seeds", "initial_model": "bmfl.rounds.seeds",
    "initial_model_blob": "bmfl.rounds.seeds", "select_trainers": "bmfl.rounds.seeds", "vehicle_seed": "bmfl.rounds.seeds",
    "rounds_run": "bmfl.rounds.stop", "stop_reached": "bmfl.rounds.stop", "target_fixed": "bmfl.rounds.stop",
}  # fmt: skip
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bmfl.rounds' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
