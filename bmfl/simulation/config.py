"""Simulation configuration (TOML or YAML). Every field has a documented default; an
unknown field is an error, so a typo never silently falls back to a default."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bmfl.training import LocalTrainingConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: str = Field("mnist", description="dataset registry name (bmfl.data.available_datasets())")
    options: dict[str, Any] = Field(default_factory=dict, description="loader options, e.g. {source = 'npm'}")


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

    def local(self) -> LocalTrainingConfig:
        return LocalTrainingConfig(**self.model_dump(exclude={"accountant"}))


class AggregationConfig(_Strict):
    edge: str = Field("fedavg", description="edge (first) aggregation rule, by registry name")
    edge_options: dict[str, Any] = Field(default_factory=dict, description="options of the edge rule")
    cloud: str = Field("fedavg", description="cloud (second) aggregation rule: BMFL uses FedAvg (Eq. 3)")


class SimulationConfig(_Strict):
    name: str = Field("bmfl", description="run name, used for the output folder")
    seed: int = Field(0, description="seeds data split, partition, selection, training and noise")
    rounds: int = Field(10, ge=1, description="K, maximum aggregation rounds")
    target_accuracy: float | None = Field(None, description="stop once the global model reaches it")
    vehicles: int = Field(50, ge=1, description="M, number of vehicles")
    edges: int = Field(5, ge=1, description="L, number of MEC edge servers")
    fraction: float = Field(1.0, gt=0, le=1, description="V, fraction of an edge's vehicles selected per round")
    model: str = Field("bmfl_cnn", description="model registry name")
    model_options: dict[str, Any] = Field(default_factory=dict, description="model factory options")
    data: DataConfig = Field(default_factory=DataConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    output_dir: str = Field("runs", description="metrics, CSV and plots go to output_dir/name")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SimulationConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    raw.update(overrides or {})
    return SimulationConfig.model_validate(raw)
