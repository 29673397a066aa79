"""Flower's simulation (``flwr[simulation]``: Ray backend, Flower's default resources)
of the BMFL round in :mod:`bench.workload`: each supernode is one vehicle whose
``NumPyClient.fit`` runs :func:`bench.workload.plain_dp_sgd` with its own seed and
accountant; the strategy's ``aggregate_fit`` runs the edges' self-reliability filter
and residual reweighting, the consensus accuracy and the cloud's FedAvg
(:func:`bench.workload.aggregate`, per-model evaluator). Client evaluation is off.

Round times are taken inside the strategy, from ``configure_fit`` to the end of
``aggregate_fit``; the first round includes Ray's actors loading the data, so the
benchmark reports the second (steady) round and the whole run separately.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from bench.workload import Workload, aggregate, build, plain_dp_sgd
from bmfl.filters import accuracy_evaluator


def missing() -> str | None:
    """Why Flower's simulation cannot run here, or None."""
    for module in ("flwr", "ray"):
        if importlib.util.find_spec(module) is None:
            return f'{module} is not installed (pip install "flwr[simulation]")'
    return None


@lru_cache(maxsize=1)
def _workload(vehicles: int, epochs: int, seed: int, partition: str, test_samples: int | None, threads: int) -> Workload:
    """Built once per Ray actor process, with the driver's torch threads."""
    torch.set_num_threads(threads)
    return build(vehicles, epochs, seed, partition, test_samples)


def _vector(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.cat([torch.from_numpy(np.ascontiguousarray(a)).flatten() for a in arrays])


def _arrays(w: Workload, vector: torch.Tensor) -> list[np.ndarray]:
    out, offset = [], 0
    for p in w.model.parameters():
        out.append(vector[offset : offset + p.numel()].reshape(p.shape).numpy().copy())
        offset += p.numel()
    return out


def _client_fn(context, *, setting: tuple):
    from flwr.client import NumPyClient

    w = _workload(*setting)
    vehicle = int(context.node_config["partition-id"])

    class Vehicle(NumPyClient):
        def fit(self, parameters, config):
            model = w.model
            with torch.no_grad():
                for p, a in zip(model.parameters(), parameters):
                    p.copy_(torch.from_numpy(a))
            upload = plain_dp_sgd(model, w.datasets[vehicle], w.config, w.generator(vehicle), w.accountant())
            return _arrays(w, upload), len(w.datasets[vehicle]), {"vehicle": vehicle}

    return Vehicle().to_client()


@dataclass
class FlowerRun:
    round_s: list[float] = field(default_factory=list)
    total_s: float = 0.0
    first_global: torch.Tensor | None = None


def run(
    vehicles: int = 50, epochs: int = 5, seed: int = 0, rounds: int = 2, partition: str = "dirichlet",
    test_samples: int | None = None,
) -> FlowerRun:
    """Run ``rounds`` rounds of the workload in Flower's simulation; round times and
    w^1 (to check that Flower computed the same round as ours)."""
    from flwr.client import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    w = build(vehicles, epochs, seed, partition, test_samples)
    setting = (vehicles, epochs, seed, partition, test_samples, torch.get_num_threads())
    outcome = FlowerRun()
    evaluator = accuracy_evaluator(w.model, w.test)

    class BMFLStrategy(FedAvg):
        started = 0.0

        def configure_fit(self, server_round, parameters, client_manager):
            self.started = time.perf_counter()
            self.reference = _vector(parameters_to_ndarrays(parameters))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            if failures:
                raise RuntimeError(f"{len(failures)} Flower clients failed: {failures[0]!r}")
            by_vehicle = {int(res.metrics["vehicle"]): res.parameters for _, res in results}
            uploads = torch.stack([_vector(parameters_to_ndarrays(by_vehicle[v])) for v in range(vehicles)])
            new, _ = aggregate(w, uploads, self.reference, evaluator)
            if outcome.first_global is None:
                outcome.first_global = new
            outcome.round_s.append(time.perf_counter() - self.started)
            return ndarrays_to_parameters(_arrays(w, new)), {}

    strategy = BMFLStrategy(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=vehicles, min_available_clients=vehicles,
        initial_parameters=ndarrays_to_parameters(_arrays(w, w.reference)),
    )  # fmt: skip
    server = ServerApp(server_fn=lambda context: ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds)))
    def client_fn(context):
        return _client_fn(context, setting=setting)

    client = ClientApp(client_fn=client_fn)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    start = time.perf_counter()
    run_simulation(server_app=server, client_app=client, num_supernodes=vehicles)
    outcome.total_s = time.perf_counter() - start
    if len(outcome.round_s) != rounds:
        raise RuntimeError(f"Flower ran {len(outcome.round_s)} of {rounds} rounds")
    return outcome
