"""Positions: the nearest edge, and a seeded random walk inside the edges' area."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bmfl.protocol.schemas import EdgeInfo


def nearest_edge(edges: list[EdgeInfo], x: float, y: float) -> EdgeInfo:
    """The edge closest to (x, y); ties go to the lowest edge index."""
    if not edges:
        raise ValueError("the edge directory is empty")
    return min(edges, key=lambda e: (math.hypot(e.x - x, e.y - y), e.index))


@dataclass(frozen=True)
class Area:
    """The rectangle vehicles live in: the edges' bounding box, padded."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def around(cls, edges: list[EdgeInfo], pad: float = 1.0) -> "Area":
        xs, ys = [e.x for e in edges], [e.y for e in edges]
        return cls(min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad)

    def sample(self, rng: np.random.Generator) -> tuple[float, float]:
        """A uniform position in the area."""
        return float(rng.uniform(self.x0, self.x1)), float(rng.uniform(self.y0, self.y1))

    def step(self, position: tuple[float, float], distance: float, rng: np.random.Generator) -> tuple[float, float]:
        """Move ``distance`` in a random direction, reflected at the borders."""
        angle = rng.uniform(0.0, 2 * math.pi)
        x = _reflect(position[0] + distance * math.cos(angle), self.x0, self.x1)
        y = _reflect(position[1] + distance * math.sin(angle), self.y0, self.y1)
        return x, y


def _reflect(value: float, low: float, high: float) -> float:
    span = high - low
    folded = (value - low) % (2 * span)
    return low + (folded if folded <= span else 2 * span - folded)
