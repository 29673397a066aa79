"""A service's view of the chain: its own key, the deployment, typed contract clients.

Transactions are signed locally with the service's key (web3's signing middleware), so
any JSON-RPC node works, not only one that holds the accounts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import RPCEndpoint
from web3.middleware import ExtraDataToPOAMiddleware, SignAndSendRawMiddlewareBuilder

from chain.deploy import Deployment
from chain.registry import RegistryClient
from chain.tasks import TasksClient


@dataclass
class ChainAccess:
    """``w3`` with ``account``'s signer, the deployment and clients sending from it."""

    w3: Web3
    account: LocalAccount
    deployment: Deployment
    registry: RegistryClient
    tasks: TasksClient
    lock: threading.Lock = field(default_factory=threading.Lock)  # one transaction at a time (nonces)

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def chain_id(self) -> int:
        return self.deployment.chain_id


def connect(rpc_url: str, deployment_file: str | Path, private_key: str, timeout: float = 30.0) -> ChainAccess:
    """Connect to ``rpc_url`` as the holder of ``private_key``; checks the chain id."""
    deployment = Deployment.model_validate_json(Path(deployment_file).read_text())
    # web3's request validation asks for the chain id before every call: answered from
    # the provider's cache after the first (it cannot change under a running service)
    provider = Web3.HTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout}, cache_allowed_requests=True, cacheable_requests={RPCEndpoint("eth_chainId")}
    )
    w3 = Web3(provider)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    account: LocalAccount = Account.from_key(private_key)
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(account), layer=0)
    if w3.eth.chain_id != deployment.chain_id:
        raise RuntimeError(f"{rpc_url} is chain {w3.eth.chain_id}, the deployment is for {deployment.chain_id}")
    return ChainAccess(
        w3=w3,
        account=account,
        deployment=deployment,
        registry=RegistryClient(w3, deployment.registry, account.address),
        tasks=TasksClient(w3, deployment.tasks, account.address),
    )
