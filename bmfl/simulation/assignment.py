"""Which edge each vehicle talks to in each round: a static deal (BMFL §V-B), a given
list (a deployment's associations, replayed) or ring-road
mobility with nearest-edge association and handover (``bmfl.mobility``)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from bmfl.mobility import RingRoad
from bmfl.simulation.config import SimulationConfig


def assign_vehicles(num_vehicles: int, num_edges: int, seed: int) -> list[list[int]]:
    """Static association: a seeded shuffle of the vehicles dealt evenly to the edges
    (BMFL §V-B: "randomly assign 10 devices to each MEC server")."""
    perm = torch.randperm(num_vehicles, generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(perm[e::num_edges]) for e in range(num_edges)]


def associations(config: SimulationConfig) -> Iterator[np.ndarray]:
    """Yield, once per round, each vehicle's edge (an (M,) array of edge ids)."""
    if config.assignment.kind in ("static", "given"):
        if config.assignment.edge_of is not None:
            edge_of = np.array(config.assignment.edge_of, dtype=np.int64)
        else:
            edge_of = np.empty(config.vehicles, dtype=np.int64)
            for edge, members in enumerate(assign_vehicles(config.vehicles, config.edges, config.seed)):
                edge_of[members] = edge
        while True:
            yield edge_of
    a = config.assignment
    road = RingRoad(config.vehicles, config.edges, a.road_length_m, a.speed_mps, config.seed)
    while True:
        yield road.associations()
        road.advance(a.round_seconds)


def members(edge_of: np.ndarray, num_edges: int) -> list[list[int]]:
    """The vehicles associated with each edge, in id order."""
    return [np.nonzero(edge_of == e)[0].tolist() for e in range(num_edges)]
