"""Simulation configuration (TOML or YAML): the task's own vocabulary (``bmfl.task``)
plus fleet size, data, partition, attacks and mobility. Every field has a documented
default; an unknown field is an error, so a typo never silently falls back to a default.

The annotated example with every field is ``bmfl/configs/example.toml``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bmfl.task import TaskDraft


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: str = Field("mnist", description="dataset registry name (bmfl.data.available_datasets())")
    options: dict[str, Any] = Field(default_factory=dict, description="loader options, e.g. {source = 'npm'}")
    edge_test_samples: int | None = Field(
        None,
        ge=1,
        description="size of the publisher's private test set the edges get (N test samples drawn by the seed), used for "
        "self-reliability and consensus; None = the whole test set. Reported accuracy always uses the whole test set",
    )


class PartitionConfig(_Strict):
    kind: Literal["iid", "complete_non_iid", "dirichlet", "by_group"] = Field(
        "dirichlet", description="how training data is dealt to vehicles"
    )
    options: dict[str, Any] = Field(default_factory=lambda: {"alpha": 0.9}, description="e.g. alpha for dirichlet")


class AttackConfig(_Strict):
    name: str | None = Field(None, description="attack registry name (bmfl.attacks.available_attacks()); None = no attack")
    fraction: float = Field(0.0, ge=0, le=1, description="fraction of vehicles that are attackers, chosen once by the seed")
    options: dict[str, Any] = Field(default_factory=dict, description="attack options, e.g. {gamma = -10}")
    ideal_filter: bool = Field(
        False,
        description="reference run: the edges drop exactly the attackers' uploads (an ideal filter), which measures "
        "the accuracy the honest vehicles' data alone can reach",
    )


class AssignmentConfig(_Strict):
    """Which edge each vehicle uploads to."""

    kind: Literal["static", "mobility", "given"] = Field(
        "static",
        description="static: a seeded even deal of vehicles to edges (BMFL §V-B); given: the edges in ``edge_of`` "
        "(e.g. a deployment's associations, to replay it); mobility: ring-road driving with "
        "nearest-edge association and handover (bmfl.mobility)",
    )
    road_length_m: float = Field(10_000.0, gt=0, description="mobility: length of the ring road, edges evenly spaced")
    speed_mps: tuple[float, float] = Field((10.0, 30.0), description="mobility: range of vehicle speeds in m/s")
    round_seconds: float = Field(30.0, ge=0, description="mobility: driving time per aggregation round")
    edge_of: list[int] | None = Field(None, description="given: vehicle i's edge is edge_of[i], every round")


class StragglerConfig(_Strict):
    """Simulated wall clock (``bmfl.simulation.stragglers``): a vehicle's job takes
    samples × ``seconds_per_sample`` × its slowdown, plus a coverage gap before upload."""

    kind: Literal["none", "lognormal", "slow_fraction"] = Field(
        "none",
        description="none: every vehicle at speed 1; lognormal: slowdown exp(σ·N(0,1)) per vehicle; slow_fraction: "
        "a seeded ``slow_fraction`` of the vehicles is ``slowdown`` × slower (defaults: 30 % 5× slower)",
    )
    sigma: float = Field(0.5, ge=0, description="lognormal: σ of the log-slowdown")
    slow_fraction: float = Field(0.3, ge=0, le=1, description="slow_fraction: share of slow vehicles")
    slowdown: float = Field(5.0, ge=1, description="slow_fraction: how many times slower they are")
    seconds_per_sample: float = Field(1e-3, gt=0, description="simulated compute seconds per sample at speed 1")
    gap_probability: float = Field(0.0, ge=0, le=1, description="chance a job ends out of coverage")
    gap_mean_s: float = Field(10.0, ge=0, description="mean (exponential) wait for coverage before the upload")


class SimulationConfig(TaskDraft):
    """A task (``bmfl.task.TaskDraft``: model, rounds, target, fraction V, training,
    aggregation, rewards, seed) plus what only a simulation needs. The seed also deals
    the data and draws the attackers, the mobility and the training noise."""

    sizes_known_at_run: ClassVar[bool] = True  # σ from a target ε is planned on the partition's sizes

    name: str = Field("bmfl", description="run name, used for the output folder")
    vehicles: int = Field(50, ge=1, description="M, number of vehicles")
    edges: int = Field(5, ge=1, description="L, number of MEC edge servers; 1 = flat single-server FL")
    model_options: dict[str, Any] = Field(default_factory=dict, description="model factory options")
    data: DataConfig = Field(default_factory=DataConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    assignment: AssignmentConfig = Field(default_factory=AssignmentConfig)
    stragglers: StragglerConfig = Field(default_factory=StragglerConfig)
    output_dir: str = Field("runs", description="metrics, CSV and plots go to output_dir/name")
    insecure_reproducible_noise: bool = Field(
        True,
        description="INSECURE, research only: draw each vehicle's DP noise and batches from a generator seeded by "
        "the run's seed, so runs reproduce bit for bit (anyone who knows the seed can remove the noise); false: "
        "secret draws from os.urandom, as the vehicle client always does (bmfl.privacy.noise)",
    )
    sample_counts: list[int] | None = Field(
        None,
        description="the sample count each vehicle's uploads are weighted by (e.g. the noisy counts a deployment's "
        "vehicles registered on chain, to replay it); None = the true sizes",
    )

    @model_validator(mode="after")
    def _given_assignment_fits(self) -> "SimulationConfig":
        edge_of = self.assignment.edge_of
        if (self.assignment.kind == "given") != (edge_of is not None):
            raise ValueError("assignment.edge_of is given exactly when assignment.kind = 'given'")
        if edge_of is not None and (len(edge_of) != self.vehicles or not all(0 <= e < self.edges for e in edge_of)):
            raise ValueError("assignment.edge_of needs one edge in [0, edges) per vehicle")
        counts = self.sample_counts
        if counts is not None and (len(counts) != self.vehicles or min(counts) < 1):
            raise ValueError("sample_counts needs one positive count per vehicle")
        return self


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SimulationConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    raw.update(overrides or {})
    return SimulationConfig.model_validate(raw)
