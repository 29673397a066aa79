"""The simulated vehicles and where they train: in this process (:class:`InProcess`) or
in Ray tasks (``bmfl.simulation.ray_fleet``), both through :func:`train_vehicles`.

Per vehicle the driver keeps only what must persist between rounds: its random source
and its privacy engine, each made on the vehicle's first round (a seeded generator
made late draws the same stream as one made early). Its data is the shared training
set's rows (partition indices), cut out only while it trains, so a fleet of 10,000
holds the training set once and no per-vehicle copies. A model with a fixed front end
(``scatter_linear``) has the whole training set mapped through it once, on the first
round, and vehicles train on their rows of that map, except attackers that rewrite their
data (a backdoor adds its trigger to pixels), which keep the raw rows. With input DP (:meth:`Fleet.release_inputs`)
those rows are replaced, once, by each vehicle's perturbed release.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import torch
from torch import nn

from bmfl.attacks import Attack, AttackContext
from bmfl.data import TensorData
from bmfl.models.features import featurized, has_fixed_front
from bmfl.privacy import PrivacyEngine, SecureGenerator
from bmfl.privacy.input_dp import privatise
from bmfl.rounds import vehicle_seed
from bmfl.training import LocalTrainingConfig
from bmfl.training.fleet import fleet_uploads, plan_upload
from bmfl.simulation.stragglers import job_work

CHUNK = 64
"""Vehicles per :func:`train_vehicles` call (one progress step, one Ray task). The
uploads do not depend on it: every vehicle has its own random stream."""


@dataclass
class Fleet:
    """Every vehicle's data (rows ``parts[v]`` of ``train``), random source and engine."""

    model: nn.Module
    train: TensorData
    parts: Sequence[torch.Tensor]
    config: LocalTrainingConfig
    attack: Attack | None
    attackers: frozenset[int]
    seed: int
    reproducible: bool
    delta: float
    accountant: str
    generators: dict[int, torch.Generator] = field(default_factory=dict)
    engines: dict[int, PrivacyEngine] = field(default_factory=dict)
    mapped: TensorData | None = None

    def data(self, v: int) -> TensorData:
        """Vehicle ``v``'s rows: of the training set mapped through the model's fixed
        front end where the model has one (one map for the whole fleet, not one per
        vehicle per round), of the raw training set for other models and for an attack
        that rewrites its data."""
        attack = self.attack_of(v)
        if not has_fixed_front(self.model) or (attack is not None and attack.rewrites_data):
            return self.train.subset(self.parts[v])
        if self.mapped is None:
            self.mapped = featurized(self.model, self.train)
        return self.mapped.subset(self.parts[v])

    def generator(self, v: int) -> torch.Generator:
        """Vehicle ``v``'s training random source: seeded by (seed, v) in the insecure
        reproducible option, else a :class:`SecureGenerator`."""
        if v not in self.generators:
            seeded = self.reproducible
            self.generators[v] = torch.Generator().manual_seed(vehicle_seed(self.seed, v)) if seeded else SecureGenerator()
        return self.generators[v]

    def engine(self, v: int) -> PrivacyEngine:
        if v not in self.engines:
            self.engines[v] = PrivacyEngine(self.delta, method=self.accountant)
        return self.engines[v]

    def release_inputs(self, sigma: float, clip: float, targets: bool) -> None:
        """Every vehicle's one input-DP release (``bmfl.privacy.input_dp``), drawn from
        its own random source and recorded in its engine, written over its rows."""
        rows = torch.cat([torch.as_tensor(p, dtype=torch.long) for p in self.parts])
        if len(rows.unique()) != len(rows):
            raise ValueError("input DP needs disjoint vehicle datasets (a shared row would be released twice)")
        x, y = self.train.x.clone(), self.train.y.clone()
        for v, part in enumerate(self.parts):
            released = privatise(self.train.subset(part), clip, sigma, targets, self.generator(v))  # pixels, not features
            x[part], y[part] = released.x, released.y
            self.engine(v).release_inputs(sigma, targets)
        self.train, self.mapped = replace(self.train, x=x, y=y), None

    def attack_of(self, v: int) -> Attack | None:
        return self.attack if v in self.attackers else None


@dataclass
class Trained:
    """One :func:`train_vehicles` call's uploads, its CPU seconds and each vehicle's
    work (samples processed: steps × expected batch)."""

    vehicles: list[int]
    uploads: list[torch.Tensor]
    seconds: float
    work: dict[int, float]


def train_vehicles(
    model: nn.Module,
    datasets: Sequence[TensorData],
    config: LocalTrainingConfig,
    vehicles: Sequence[int],
    contexts: Sequence[AttackContext],
    attacks: Sequence[Attack | None],
    engines: Sequence[PrivacyEngine],
) -> Trained:
    """The vehicles' local round (``bmfl.training.fleet.fleet_uploads``), timed."""
    began = time.process_time()
    uploads = fleet_uploads(model, datasets, config, contexts, attacks, engines)
    seconds = time.process_time() - began
    work = {v: job_work(plan_upload(d, config, a).steps, config, len(d)) for v, d, a in zip(vehicles, datasets, attacks)}
    return Trained(list(vehicles), uploads, seconds, work)


class InProcess:
    """Trains the round's vehicles in this process, :data:`CHUNK` at a time."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def train(
        self, vehicles: Sequence[int], round_: int, reference: torch.Tensor, previous: torch.Tensor | None, edge_of
    ) -> Iterator[Trained]:
        f = self.fleet
        for lo in range(0, len(vehicles), CHUNK):
            vs = list(vehicles[lo : lo + CHUNK])
            contexts = [AttackContext(reference, f.generator(v), previous, round_, v, int(edge_of[v])) for v in vs]
            yield train_vehicles(
                f.model, [f.data(v) for v in vs], f.config, vs, contexts, [f.attack_of(v) for v in vs],
                [f.engine(v) for v in vs],
            )  # fmt: skip

    def close(self) -> None:
        """Nothing to release in-process."""
