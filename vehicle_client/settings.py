"""Fleet settings, read from ``BMFL_FLEET_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bmfl.privacy import DEFAULT_BUDGET
from bmfl.simulation.config import StragglerConfig


class FleetSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BMFL_FLEET_")

    cloud_url: str = Field("http://127.0.0.1:8000", description="cloud API: the edge directory (GET /edges) and task status")
    gateway_url: str | None = Field(None, description="/ipfs/{cid} gateway for global models (default: the vehicle's edge)")
    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the chain")
    deployment: Path = Field(Path("deployments/31337.json"), description="deployment file (contract addresses)")
    funder_key: SecretStr | None = Field(None, description="key that funds the vehicles with plain ETH transfers; unset: they must hold ETH")
    funding_wei: int = Field(10**17, gt=0, description="balance each vehicle is topped up to (when below half of it)")
    vehicles: int = Field(50, ge=1, description="number of vehicles")
    seed: int = Field(0, description="seeds keys, data partition, positions, attackers and mobility (never DP noise or batches: those are secret)")
    dataset: str = Field("mnist", description="dataset registry name; its training part is dealt to the vehicles")
    partition: Literal["iid", "complete_non_iid", "dirichlet"] = Field("dirichlet", description="how data is dealt")
    alpha: float = Field(0.9, gt=0, description="Dirichlet α of the dirichlet partition")
    categories: int = Field(1, gt=0, lt=2**32, description="data category bitmask the vehicles register with")
    attack: str | None = Field(None, description="attack registry name of the malicious vehicles (unset: none); a colluding one shapes the uploads each batch trains for an edge together, a white-box one is refused")
    attack_options: dict[str, Any] = Field(default_factory=dict, description='JSON options of the attack, e.g. {"gamma": -5}')
    attack_fraction: float = Field(0.1, ge=0, le=1, description="fraction of vehicles that attack (when ATTACK is set)")
    mobility: float = Field(0.0, ge=0, description="distance each vehicle moves per round (0: static); a new nearest edge means a handover")
    torch_threads: int = Field(0, ge=0, description="torch CPU threads for local training (0: torch's default)")
    train_batch: int = Field(8, ge=1, description="selected vehicles trained together (bmfl.training.fleet, the same uploads as one by one); their uploads go out while the next batch trains")
    epsilon_budget: float = Field(DEFAULT_BUDGET, gt=0, description="ε_max per vehicle at δ = 1e-5; a vehicle refuses to train past it, or without DP (inf: no limit)")
    report_epsilon: bool = Field(False, description="send each vehicle's ε so far with its uploads (it reveals q = B/n, hence the sample count, to the edge and in the cloud's task view)")
    receipts: Path | None = Field(None, description="JSON-lines file every edge-signed upload receipt is appended to: a vehicle's proof of an update an edge dropped (bmfl audit --receipts); unset: not kept")
    poll_interval_s: float = Field(0.5, gt=0, description="how often idle vehicles poll for work")
    stragglers: StragglerConfig = Field(
        default_factory=StragglerConfig,
        description='JSON: the simulator\'s compute model, e.g. {"kind": "slow_fraction", "seconds_per_sample": 0.01} '
        "(30 % of the vehicles 5× slower); each upload waits until its job's modelled time has passed (default: none, no wait)",
    )
