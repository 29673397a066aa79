"""Simulation configuration (TOML or YAML). Every field has a documented default; an
unknown field is an error, so a typo never silently falls back to a default.

The annotated example with every field is ``bmfl/configs/example.toml``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bmfl.training import LocalTrainingConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: str = Field("mnist", description="dataset registry name (bmfl.data.available_datasets())")
    options: dict[str, Any] = Field(default_factory=dict, description="loader options, e.g. {source = 'npm'}")
    edge_test_samples: int | None = Field(
        None,
        ge=1,
        description="size of the publisher's private test set the edges get (the first N test samples), used for "
        "self-reliability and consensus; None = the whole test set. Reported accuracy always uses the whole test set",
    )


class PartitionConfig(_Strict):
    kind: Literal["iid", "complete_non_iid", "dirichlet", "by_group"] = Field(
        "dirichlet", description="how training data is dealt to vehicles"
    )
    options: dict[str, Any] = Field(default_factory=lambda: {"alpha": 0.9}, description="e.g. alpha for dirichlet")


class TrainingConfig(_Strict):
    """Local training (BMFL Algorithm 1); defaults are the paper's."""

    epochs: int = Field(5, ge=1, description="E, local epochs per round")
    batch_size: int = Field(64, ge=1, description="B, (expected) batch size")
    lr: float = Field(0.01, gt=0, description="η, learning rate")
    momentum: float = Field(0.9, ge=0, description="β, momentum")
    dp: bool = Field(True, description="differentially private training")
    clip: float = Field(1.0, gt=0, description="C, per-sample clipping norm")
    noise_multiplier: float = Field(2.0, ge=0, description="σ, noise std is σ·C")
    delta: float = Field(1e-5, gt=0, lt=1, description="δ at which ε is reported")
    sampling: Literal["poisson", "fixed"] = Field("poisson", description="batch sampling; the accountant assumes poisson")
    accountant: Literal["rdp", "pld"] = Field("rdp", description="privacy accountant")
    max_steps: int | None = Field(
        None, ge=1, description="cap on local steps per round (local iterations); None = E full epochs (the paper)"
    )

    def local(self) -> LocalTrainingConfig:
        return LocalTrainingConfig(**self.model_dump(exclude={"accountant"}))


class FilterConfig(_Strict):
    """One update filter by registry name (bmfl.filters.available_filters()). The
    ``self_reliability`` filter gets its test-set evaluator from the simulator."""

    name: str = Field(..., description="filter registry name: self_reliability, l2_norm")
    options: dict[str, Any] = Field(default_factory=dict, description="filter options, e.g. {tolerance = 0.5}")


class AggregationConfig(_Strict):
    edge: str = Field("fedavg", description="edge (first) aggregation rule, by registry name")
    edge_options: dict[str, Any] = Field(default_factory=dict, description="options of the edge rule")
    edge_filters: list[FilterConfig] = Field(
        default_factory=list, description="filters run at every edge before its rule, in order (BMFL: self_reliability)"
    )
    cloud: str = Field("fedavg", description="cloud (second) aggregation rule: BMFL uses FedAvg (Eq. 3)")
    cloud_options: dict[str, Any] = Field(default_factory=dict, description="options of the cloud rule")
    cloud_filters: list[FilterConfig] = Field(default_factory=list, description="filters run at the cloud before its rule")


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

    kind: Literal["static", "mobility"] = Field(
        "static",
        description="static: a seeded even deal of vehicles to edges (BMFL §V-B); mobility: ring-road driving with "
        "nearest-edge association and handover (bmfl.mobility)",
    )
    road_length_m: float = Field(10_000.0, gt=0, description="mobility: length of the ring road, edges evenly spaced")
    speed_mps: tuple[float, float] = Field((10.0, 30.0), description="mobility: range of vehicle speeds in m/s")
    round_seconds: float = Field(30.0, ge=0, description="mobility: driving time per aggregation round")


class IncentiveConfig(_Strict):
    """Payout split at the end of the task (BMFL Eq. 26–29, bmfl.incentives)."""

    escrow_wei: int = Field(10**18, ge=0, description="ρ_total, the task's escrowed reward in wei")
    block_reward_wei: int = Field(10**15, ge=0, description="ρ_b, paid to each round's leader edge")


class SimulationConfig(_Strict):
    name: str = Field("bmfl", description="run name, used for the output folder")
    seed: int = Field(0, description="seeds data split, partition, attackers, selection, mobility, training and noise")
    rounds: int = Field(10, ge=1, description="K, maximum aggregation rounds")
    target_accuracy: float | None = Field(None, description="stop once the global model reaches it (classification)")
    vehicles: int = Field(50, ge=1, description="M, number of vehicles")
    edges: int = Field(5, ge=1, description="L, number of MEC edge servers; 1 = flat single-server FL")
    fraction: float = Field(1.0, gt=0, le=1, description="V, fraction of an edge's vehicles selected per round")
    model: str = Field("bmfl_cnn", description="model registry name")
    model_options: dict[str, Any] = Field(default_factory=dict, description="model factory options")
    data: DataConfig = Field(default_factory=DataConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    assignment: AssignmentConfig = Field(default_factory=AssignmentConfig)
    incentives: IncentiveConfig = Field(default_factory=IncentiveConfig)
    output_dir: str = Field("runs", description="metrics, CSV and plots go to output_dir/name")

    @model_validator(mode="after")
    def _escrow_covers_block_rewards(self) -> "SimulationConfig":
        if self.incentives.escrow_wei < self.rounds * self.incentives.block_reward_wei:
            raise ValueError("incentives.escrow_wei must cover rounds × block_reward_wei")
        return self


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SimulationConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    raw.update(overrides or {})
    return SimulationConfig.model_validate(raw)
