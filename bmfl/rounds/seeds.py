"""Every seeded choice of a round, made one way for the simulator and the services
(docs/algorithms.md, "Seeds and selection").

- :func:`select_trainers`: ⌈V·n⌉ of an edge's n candidates, drawn by a generator keyed by
  (task seed, task, round, edge): stateless, so an edge that restarts, the simulator and
  an auditor all draw the same set without replaying earlier rounds;
- :func:`choose_attackers`: round(fraction · M) vehicles, drawn once per run;
- :func:`vehicle_seed`: the seed of vehicle i's training generator in the simulator's
  insecure, reproducible option (batch sampling and DP noise; the vehicle client draws
  them from ``os.urandom`` instead, docs/security.md);
- :func:`initial_model`: w⁰, the model's initialisation after seeding torch with the
  task's seed (the publisher's default and the simulator's).
"""

from __future__ import annotations

import math
import random
from typing import Iterable

import numpy as np
import torch
from torch import nn

from bmfl.models import create_model

VEHICLE_SEED_STRIDE = 1_000_003
"""A prime larger than any fleet, so (seed, vehicle) pairs give distinct seeds."""


def select_trainers(candidates: Iterable[int], fraction: float, seed: int, task_id: int, round_: int, edge: int) -> list[int]:
    """⌈V·n⌉ of the n ``candidates`` (V = ``fraction``), sorted; the draw depends on the
    candidate set, not on its order."""
    pool = sorted(set(candidates))
    k = math.ceil(fraction * len(pool))
    rng = random.Random(f"{seed}/{task_id}/{round_}/{edge}")
    return sorted(rng.sample(pool, k))


def choose_attackers(num_vehicles: int, fraction: float, seed: int) -> frozenset[int]:
    """round(fraction · M) of the vehicles 0 … M−1, drawn once by ``seed``."""
    count = round(fraction * num_vehicles)
    order = np.random.default_rng([seed, 0xA77AC4]).permutation(num_vehicles)
    return frozenset(int(v) for v in order[:count])


def vehicle_seed(seed: int, vehicle: int) -> int:
    """Seed of vehicle ``vehicle``'s training generator in a run seeded by ``seed``."""
    return seed * VEHICLE_SEED_STRIDE + vehicle


def initial_model(model: str, seed: int, **options: object) -> nn.Module:
    """w⁰: ``create_model(model, **options)`` right after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return create_model(model, **options)


def initial_model_blob(model: str, seed: int, producer: str) -> bytes:
    """w⁰ (:func:`initial_model`) as a canonical blob, metadata task ``initial``, round 0."""
    from bmfl.blobs.codec import BlobMeta, encode_state

    return encode_state(initial_model(model, seed).state_dict(), BlobMeta("initial", 0, producer, model))
