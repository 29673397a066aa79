"""``bmfl blob put|get|cid``: operators' access to the blob stores."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from bmfl.blobs.cid import PROFILES, compute_cid
from bmfl.blobs.errors import BlobError
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.blobs.kubo import KuboBlobStore
from bmfl.blobs.local import LocalBlobStore
from bmfl.blobs.store import BlobStore

blob_app = typer.Typer(help="Content-addressed model blobs (IPFS CIDs).", no_args_is_help=True)

StoreOpt = typer.Option(Path("runs/blobs"), "--store", envvar="BMFL_BLOB_DIR", help="Local store directory.")
KuboOpt = typer.Option(None, "--kubo", envvar="BMFL_KUBO_API", help="Kubo RPC URL; overrides --store.")


def _open(store: Path, kubo: Optional[str]) -> BlobStore:
    return KuboBlobStore(kubo) if kubo else LocalBlobStore(store)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@blob_app.command("cid")
def cid_cmd(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    profile: str = typer.Option("v1_256k", help=f"Import profile: {', '.join(PROFILES)}."),
) -> None:
    """Print the CID Kubo would give FILE (nothing is stored)."""
    if profile not in PROFILES:
        raise _fail(ValueError(f"unknown profile {profile!r}"))
    with file.open("rb") as stream:
        typer.echo(str(compute_cid(stream, PROFILES[profile])))


@blob_app.command("put")
def put_cmd(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    store: Path = StoreOpt,
    kubo: Optional[str] = KuboOpt,
    pin: bool = typer.Option(False, "--pin", help="Pin the blob."),
) -> None:
    """Store FILE and print its CID."""
    try:
        typer.echo(_open(store, kubo).put(file.read_bytes(), pin=pin))
    except BlobError as exc:
        raise _fail(exc) from None


@blob_app.command("get")
def get_cmd(
    cid: str,
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here instead of stdout."),
    store: Path = StoreOpt,
    kubo: Optional[str] = KuboOpt,
    gateway: Optional[str] = typer.Option(None, "--gateway", envvar="BMFL_IPFS_GATEWAY", help="Gateway URL."),
) -> None:
    """Fetch CID (verified against it) to FILE or stdout."""
    try:
        data = GatewayClient(gateway).fetch(cid) if gateway else _open(store, kubo).get(cid)
    except BlobError as exc:
        raise _fail(exc) from None
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(data)
