"""Deploy the BMFL contracts and keep their addresses in a deployment file per chain id."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from web3 import Web3

from chain.registry import RegistryClient
from chain.tasks import TasksClient

DEPLOYMENTS_DIR = Path(os.environ.get("BMFL_DEPLOYMENTS_DIR", "deployments"))


class Deployment(BaseModel):
    """Where the contracts of one chain live."""

    model_config = ConfigDict(frozen=True)

    chain_id: int
    registry: str
    tasks: str
    operator: str
    block_number: int


def deploy(w3: Web3, operator: str, cloud: str | None = None) -> Deployment:
    """Deploy the registry (owned by ``operator``) and the task contract; optionally set the cloud."""
    registry, _ = RegistryClient.deploy(w3, operator, operator)
    tasks, receipt = TasksClient.deploy(w3, operator, registry.address)
    if cloud is not None:
        registry.set_cloud(cloud)
    return Deployment(
        chain_id=w3.eth.chain_id,
        registry=registry.address,
        tasks=tasks.address,
        operator=Web3.to_checksum_address(operator),
        block_number=receipt.block_number,
    )


def deployment_path(chain_id: int, directory: Path = DEPLOYMENTS_DIR) -> Path:
    """The deployment file of ``chain_id``."""
    return directory / f"{chain_id}.json"


def save_deployment(deployment: Deployment, directory: Path = DEPLOYMENTS_DIR) -> Path:
    """Write ``deployment`` to its file; returns the path."""
    path = deployment_path(deployment.chain_id, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(deployment.model_dump_json(indent=2) + "\n")
    return path


def load_deployment(chain_id: int, directory: Path = DEPLOYMENTS_DIR) -> Deployment:
    """Read the deployment of ``chain_id``; raises ``FileNotFoundError`` when there is none."""
    return Deployment.model_validate(json.loads(deployment_path(chain_id, directory).read_text()))


def is_deployed(w3: Web3, deployment: Deployment) -> bool:
    """Whether both contracts have code on the chain ``w3`` talks to."""
    return all(len(w3.eth.get_code(Web3.to_checksum_address(a))) > 0 for a in (deployment.registry, deployment.tasks))
