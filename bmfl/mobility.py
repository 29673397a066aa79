"""Vehicle mobility and edge association (BMFL §III: a vehicle associates with the
nearest MEC server and, when it moves into another server's range, hands over to it
while keeping its identity; docs/architecture.md, "One round", step 2).

Ring-road model: a circular road of ``length`` metres with the L edges (road-side MEC
servers) evenly spaced at the centres of L equal segments. Each vehicle starts at a
uniform position with a uniform direction (±1) and a speed drawn uniformly from
``speed`` (m/s), and keeps both. A uniform start stays uniform on a ring, so every edge
serves M/L vehicles on average while individual vehicles hand over as they drive.
"""

from __future__ import annotations

import numpy as np


def edge_positions(num_edges: int, length: float) -> np.ndarray:
    """Positions of L evenly spaced edges on a ring of ``length`` metres."""
    if num_edges < 1 or length <= 0:
        raise ValueError("need at least one edge and a positive road length")
    return (np.arange(num_edges) + 0.5) * length / num_edges


def nearest_edge(positions: np.ndarray, edges: np.ndarray, length: float) -> np.ndarray:
    """Index of the nearest edge along the ring for every position (ties: lower id)."""
    gap = np.abs(positions[:, None] - edges[None, :]) % length
    return np.minimum(gap, length - gap).argmin(axis=1)


class RingRoad:
    """Seeded ring-road mobility of ``num_vehicles`` vehicles past ``num_edges`` edges."""

    def __init__(self, num_vehicles: int, num_edges: int, length: float, speed: tuple[float, float], seed: int) -> None:
        if not 0 <= speed[0] <= speed[1]:
            raise ValueError("speed must be a range 0 <= low <= high")
        rng = np.random.default_rng(seed)
        self.length = length
        self.edges = edge_positions(num_edges, length)
        self.positions = rng.uniform(0, length, size=num_vehicles)
        self.velocity = rng.choice([-1.0, 1.0], size=num_vehicles) * rng.uniform(*speed, size=num_vehicles)

    def associations(self) -> np.ndarray:
        """Each vehicle's current (nearest) edge."""
        return nearest_edge(self.positions, self.edges, self.length)

    def advance(self, seconds: float) -> None:
        """Drive every vehicle for ``seconds``."""
        self.positions = (self.positions + self.velocity * seconds) % self.length
