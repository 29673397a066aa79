"""Who a publisher's or payee's command acts as, and on which chain: the key comes from a
file (``--key-file``) or the ``BMFL_KEY`` variable, never from the command line (argv is
visible to every user of the machine and kept in shell history); the deployment file
from ``--deployment`` or, by default, the first that exists of ``deployments/<chain>.json``
and ``runs/stack/deployments/<chain>.json`` (where ``bmfl up`` writes it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

KEY_ENV = "BMFL_KEY"
DEFAULT_DEPLOYMENT_DIRS = (Path("deployments"), Path("runs/stack/deployments"))

KeyFile = typer.Option(
    None, "--key-file", envvar="BMFL_KEY_FILE", exists=True, dir_okay=False,
    help=f"file holding the account's key (0x-hex, one line); else ${KEY_ENV}",
)  # fmt: skip
RpcUrl = typer.Option("http://127.0.0.1:8545", "--rpc-url", envvar="BMFL_RPC_URL", help="JSON-RPC URL of the chain")
Deployment = typer.Option(
    None, "--deployment", envvar="BMFL_DEPLOYMENT",
    help="deployment file (default: deployments/<chain id>.json, else runs/stack/deployments/<chain id>.json)",
)  # fmt: skip
CloudUrl = typer.Option("http://127.0.0.1:8000", "--cloud-url", envvar="BMFL_CLOUD_URL", help="the cloud aggregator's URL")
Json = typer.Option(False, "--json", help="print JSON instead of text")


class KeyMissing(RuntimeError):
    """Neither a key file nor the variable gives a usable key."""


def load_key(key_file: Optional[Path]) -> str:
    """The 0x-hex key from ``key_file``, else from ``$BMFL_KEY``."""
    text = key_file.read_text().strip() if key_file is not None else os.environ.get(KEY_ENV, "").strip()
    if not text:
        raise KeyMissing(f"no key: pass --key-file FILE or set {KEY_ENV}")
    raw = text.removeprefix("0x")
    if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise KeyMissing("the key must be 32 bytes as hex (64 digits, optional 0x)")
    return "0x" + raw


def deployment_file(rpc_url: str, given: Optional[Path]) -> Path:
    """``given``, else the first default that exists for the chain at ``rpc_url``."""
    if given is not None:
        return given
    from web3 import Web3

    chain_id = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10})).eth.chain_id
    for directory in DEFAULT_DEPLOYMENT_DIRS:
        if (path := directory / f"{chain_id}.json").exists():
            return path
    raise FileNotFoundError(f"no deployment file for chain {chain_id} in {', '.join(map(str, DEFAULT_DEPLOYMENT_DIRS))}: pass --deployment")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` to stderr; the ``Exit`` to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def connect_account(key_file: Optional[Path], rpc_url: str, deployment: Optional[Path]):  # -> ChainAccess
    """The chain as the key's holder; exits 2 with a reason if the key or deployment is missing."""
    from service_kit.chain_access import connect

    try:
        key = load_key(key_file)
        return connect(rpc_url, deployment_file(rpc_url, deployment), key)
    except (KeyMissing, FileNotFoundError, RuntimeError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None


WEI_PER_ETH = 10**18


def eth(wei: int) -> str:
    """``1.000000 ETH (1000000000000000000 wei)``: both, so nothing is cut or rounded away."""
    return f"{wei / WEI_PER_ETH:.6f} ETH ({wei} wei)"
