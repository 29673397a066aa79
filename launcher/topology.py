"""The BMFL topology — chain, deployer, N edges, cloud, vehicle fleet — as the settings
objects each service reads (:class:`DeployerSettings`, :class:`EdgeSettings`,
:class:`CloudSettings`, :class:`FleetSettings`).

:func:`settings_env` turns a settings object into the ``BMFL_*`` variables that
reproduce it: the local launcher starts every process with them, and
``docker-compose.yml`` sets the same variables for the same roles (a test checks both
against these models). Local chains only: the keys are Anvil's development keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eth_account import Account
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from launcher.deployer import DeployerSettings
from chain.anvil import dev_key
from cloud_aggregator.settings import CloudSettings, EdgeEndpoint
from edge_node.settings import EdgeSettings

if TYPE_CHECKING:
    from vehicle_client.settings import FleetSettings

OPERATOR, CLOUD, PUBLISHER, FIRST_EDGE = 0, 1, 2, 3
FLEET = 100
"""Indices of the Anvil development accounts each role uses; the fleet's funder is
beyond the accounts Anvil funds (the deployer funds it from the operator)."""


RING_SLOTS = 5


def edge_position(i: int, radius_km: float = 5.0) -> tuple[float, float]:
    """Where edge ``i`` sits, whatever the number of edges: rings of five evenly spaced
    slots, ring k at radius (k + 1)·``radius_km``, each ring turned by half a slot (the
    first ring is compose's five edges), so ``bmfl up --edges N`` never moves an edge."""
    ring, slot = divmod(i, RING_SLOTS)
    angle = 2 * math.pi * (slot + ring / 2) / RING_SLOTS
    return radius_km * (ring + 1) * math.cos(angle), radius_km * (ring + 1) * math.sin(angle)


def edge_positions(count: int, radius_km: float = 5.0) -> list[tuple[float, float]]:
    """Positions of edges 0 … count − 1 (:func:`edge_position`)."""
    return [edge_position(i, radius_km) for i in range(count)]


def env_name(settings: type[BaseSettings], field: str) -> str:
    """The environment variable of ``field`` (``BMFL_EDGE_`` + ``RPC_URL``)."""
    return str(settings.model_config.get("env_prefix", "")) + field.upper()


def settings_env(settings: BaseSettings) -> dict[str, str]:
    """The variables that reproduce the fields ``settings`` was given explicitly
    (secrets in clear: for a child process's environment only)."""
    env: dict[str, str] = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, (str, int, float, Path)):
            text = str(value)
        else:
            text = json.dumps(settings.model_dump(mode="json", include={name})[name])
        env[env_name(type(settings), name)] = text
    return env


@dataclass(frozen=True)
class Topology:
    """Addresses, ports and folders of one local deployment."""

    host: str
    chain_port: int
    cloud_port: int
    edge_ports: tuple[int, ...]
    chain_id: int
    deployments: Path
    blob_store: str
    state_root: Path
    round_timeout_s: float = 300.0

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.chain_port}"

    @property
    def deployment(self) -> Path:
        return self.deployments / f"{self.chain_id}.json"

    @property
    def cloud_url(self) -> str:
        return f"http://{self.host}:{self.cloud_port}"

    def edge_url(self, i: int) -> str:
        return f"http://{self.host}:{self.edge_ports[i]}"

    def deployer(self) -> DeployerSettings:
        edges = [Account.from_key(dev_key(FIRST_EDGE + i)).address for i in range(len(self.edge_ports))]
        return DeployerSettings(
            rpc_url=self.rpc_url, operator_key=SecretStr(dev_key(OPERATOR)),
            cloud=Account.from_key(dev_key(CLOUD)).address, edges=edges, deployments=self.deployments,
            fund=[Account.from_key(dev_key(FLEET)).address],
        )  # fmt: skip

    def edge(self, i: int) -> EdgeSettings:
        x, y = edge_positions(len(self.edge_ports))[i]
        return EdgeSettings(
            rpc_url=self.rpc_url, deployment=self.deployment, private_key=SecretStr(dev_key(FIRST_EDGE + i)),
            blob_store=self.blob_store, state_dir=self.state_root / f"edge-{i}", cloud_url=self.cloud_url,
            x=x, y=y, host=self.host, port=self.edge_ports[i],
        )  # fmt: skip

    def cloud(self) -> CloudSettings:
        edges = [EdgeEndpoint(url=self.edge_url(i), x=x, y=y) for i, (x, y) in enumerate(edge_positions(len(self.edge_ports)))]
        return CloudSettings(
            rpc_url=self.rpc_url, deployment=self.deployment, private_key=SecretStr(dev_key(CLOUD)),
            blob_store=self.blob_store, state_dir=self.state_root / "cloud", edges=edges,
            round_timeout_s=self.round_timeout_s, host=self.host, port=self.cloud_port,
        )  # fmt: skip

    def fleet(self, vehicles: int, seed: int = 0) -> FleetSettings:
        from vehicle_client.settings import FleetSettings  # vehicle_client imports torch

        return FleetSettings(
            cloud_url=self.cloud_url, rpc_url=self.rpc_url, deployment=self.deployment,
            funder_key=SecretStr(dev_key(FLEET)), vehicles=vehicles, seed=seed,
        )  # fmt: skip
