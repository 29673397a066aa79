"""The one-shot deployer (``python -m launcher.deployer``), configured by
``BMFL_DEPLOY_*`` variables: deploys the contracts from the operator's key unless the
deployment file already names contracts that exist on that chain, gives the cloud its
role, adds every listed edge that is not an active edge yet, tops up the accounts it is
told to fund (the fleet's funder: the operator's key stays with the deployer), and
writes the deployment file (``<chain id>.json``). Running it again changes nothing, or adds new edges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from eth_account import Account
from pydantic import AfterValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from web3 import Web3
from web3.middleware import ExtraDataToPOAMiddleware, SignAndSendRawMiddlewareBuilder

from chain.deploy import deploy, deployment_path, is_deployed, load_deployment, save_deployment
from chain.registry import RegistryClient

Address = Annotated[str, AfterValidator(Web3.to_checksum_address)]


class DeployerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BMFL_DEPLOY_")

    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the chain")
    operator_key: SecretStr = Field(description="the operator's key: deploys the contracts, owns the registry, adds the edges")
    cloud: Address = Field(description="address given the registry's cloud role")
    edges: list[Address] = Field(default_factory=list, description='JSON list of edge addresses to add, e.g. ["0x90F7…"]')
    deployments: Path = Field(Path("deployments"), description="directory the deployment file <chain id>.json is written to")
    fund: list[Address] = Field(
        default_factory=list, description="JSON list of accounts the operator tops up to fund_wei, e.g. the fleet's funder (its own key)"
    )
    fund_wei: int = Field(10 * 10**18, gt=0, description="balance each account in fund is topped up to")


def provision(settings: DeployerSettings) -> Path:
    """Deploy (or find) the contracts, set the cloud, add the edges; the deployment file."""
    w3 = Web3(Web3.HTTPProvider(settings.rpc_url, request_kwargs={"timeout": 60}))
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    operator = Account.from_key(settings.operator_key.get_secret_value())
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(operator), layer=0)
    chain_id = w3.eth.chain_id
    try:
        deployment = load_deployment(chain_id, settings.deployments)
        present = is_deployed(w3, deployment)
    except FileNotFoundError:
        present = False
    if not present:
        deployment = deploy(w3, operator.address)
        save_deployment(deployment, settings.deployments)
    registry = RegistryClient(w3, deployment.registry, operator.address)
    if registry.cloud() != settings.cloud:
        registry.set_cloud(settings.cloud)
    for edge in settings.edges:
        if not registry.is_edge(edge):
            registry.add_edge(edge)
    for account in settings.fund:
        if (balance := w3.eth.get_balance(account)) < settings.fund_wei:
            tx = w3.eth.send_transaction({"from": operator.address, "to": account, "value": settings.fund_wei - balance})
            w3.eth.wait_for_transaction_receipt(tx)
    return deployment_path(chain_id, settings.deployments)


def main() -> None:
    settings = DeployerSettings()  # type: ignore[call-arg]  (read from the environment)
    path = provision(settings)
    print(f"deployment {path}: cloud {settings.cloud}, {len(settings.edges)} edges\n{path.read_text()}", flush=True)


if __name__ == "__main__":
    main()
