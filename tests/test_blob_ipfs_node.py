"""The Kubo RPC client, the CID builder, the CLI and the gateway client against a real
IPFS node (js-ipfs 0.66.1 with its Kubo-compatible RPC API, see ``ipfs_fixtures``).

js-ipfs prints CIDv1 in base58btc (``zdj7…``, ``zb2r…``) where Kubo prints base32, so
these tests also hold the client to comparing CIDs as CIDs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from multiformats import CID
from typer.testing import CliRunner

from bmfl.blobs import kubo as kubo_module
from bmfl.blobs.cid import DEFAULT_PROFILE, PROFILES, compute_cid, parse_cid
from bmfl.blobs.errors import BlobError, BlobIntegrityError, BlobNotFoundError
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.blobs.kubo import KuboBlobStore, KuboCIDMismatchError, same_content
from bmfl.blobs.retry import RetryPolicy
from bmfl.blobs.store import BlobStat
from ipfs_fixtures import IpfsNode, ipfs_node  # noqa: F401
from launcher.cli import app

FAST = RetryPolicy(attempts=2, backoff_s=0.01)
CHUNK = DEFAULT_PROFILE.chunk_size
VECTORS = json.loads((Path(__file__).parent / "vectors" / "ipfs_cid_vectors.json").read_text())


def stream(seed: str, size: int) -> bytes:
    """Deterministic bytes: the ChaCha20 keystream of key sha256(seed), zero nonce."""
    key = hashlib.sha256(seed.encode()).digest()
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(size))


def vector_input(spec: dict) -> bytes:
    return spec["literal"].encode() if "literal" in spec else stream(spec["chacha20_seed"], spec["size"])


def node_add(node: IpfsNode, data: bytes, **options: str) -> str:
    """The CID string the node itself gives ``data`` under ``options`` (not stored)."""
    params = {"only-hash": "true", "pin": "false", **options}
    reply = httpx.post(f"{node.api}/api/v0/add", params=params, files={"file": ("f", data)}, timeout=120)
    assert reply.status_code == 200, reply.text
    return json.loads(reply.text.splitlines()[-1])["Hash"]


def profile_options(name: str) -> dict[str, str]:
    profile = PROFILES[name]
    return {
        "cid-version": str(profile.cid_version),
        "raw-leaves": "true" if profile.raw_leaves else "false",
        "chunker": f"size-{profile.chunk_size}",
    }


def block_file(node: IpfsNode, cid: CID) -> Path:
    """Where the node's repo keeps the block ``cid`` (flatfs: base32 of the multihash)."""
    name = base64.b32encode(bytes(cid.digest)).decode().rstrip("=") + ".data"
    found = list((node.repo / "blocks").rglob(name))
    assert len(found) == 1, f"block {cid} not found as {name} in {node.repo}"
    return found[0]


@pytest.fixture()
def store(ipfs_node: IpfsNode) -> KuboBlobStore:  # noqa: F811
    return KuboBlobStore(ipfs_node.api, retry=FAST)


SIZES = {
    "empty": 0,
    "one byte": 1,
    "one full chunk": CHUNK,
    "one chunk plus one byte": CHUNK + 1,
    "three chunks and a bit": 3 * CHUNK + 12345,
    "174 chunks plus one byte (depth 2)": 174 * CHUNK + 1,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_our_cid_is_the_nodes(ipfs_node: IpfsNode, size: int) -> None:  # noqa: F811
    data = stream(f"size-{size}", size)
    named = node_add(ipfs_node, data, **profile_options("v1_256k"), hash="sha2-256")
    ours = compute_cid(data)
    assert same_content(parse_cid(named), ours), (named, str(ours))
    assert str(parse_cid(named)) == str(ours)  # the same CID once both are in base32


@pytest.mark.parametrize(
    "vector",
    VECTORS["vectors"],
    ids=[v["name"] for v in VECTORS["vectors"]],
)
def test_shared_vectors_are_the_nodes(ipfs_node: IpfsNode, vector: dict) -> None:  # noqa: F811
    named = node_add(ipfs_node, vector_input(vector["input"]), **profile_options(vector["profile"]))
    assert same_content(CID.decode(named), CID.decode(vector["cid"])), (named, vector["cid"])


def test_put_get_has_pin_stat_round_trip(ipfs_node: IpfsNode, store: KuboBlobStore) -> None:  # noqa: F811
    data = stream("round trip", 2 * CHUNK + 7)
    cid = store.put(data)
    assert cid == str(compute_cid(data)) and cid.startswith("bafy")
    assert store.has(cid) and store.get(cid) == data
    assert store.stat(cid) == BlobStat(cid, len(data), pinned=False)
    store.pin(cid)
    assert store.stat(cid).pinned
    small = b"pinned on put"
    small_cid = store.put(small, pin=True)
    assert small_cid == str(compute_cid(small)) and small_cid.startswith("bafkrei")
    assert store.stat(small_cid) == BlobStat(small_cid, len(small), pinned=True)
    # the node's own base58 spelling of the CID is accepted too
    assert store.get(compute_cid(data).encode("base58btc")) == data
    store.close()


def test_absent_blob(store: KuboBlobStore) -> None:
    absent = str(compute_cid(b"never stored on this node"))
    assert not store.has(absent)
    with pytest.raises(BlobNotFoundError):
        store.stat(absent)
    with pytest.raises(BlobNotFoundError):
        store.get(absent)
    with pytest.raises(BlobNotFoundError):
        store.pin(absent)


def test_node_answering_another_cid_is_refused(store: KuboBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # import options other than ours make the node build another DAG: its CID must be refused
    monkeypatch.setitem(kubo_module._ADD_OPTIONS, "cid-version", "0")
    monkeypatch.setitem(kubo_module._ADD_OPTIONS, "raw-leaves", "false")
    with pytest.raises(KuboCIDMismatchError, match="Qm"):
        store.put(stream("other dag", CHUNK + 1))


@pytest.mark.parametrize("size", [1000, 2 * CHUNK + 1], ids=["raw leaf", "multi-chunk"])
def test_tampered_blob_is_detected(ipfs_node: IpfsNode, store: KuboBlobStore, size: int) -> None:  # noqa: F811
    data = stream(f"tamper-{size}", size)
    cid = store.put(data)
    gateway = GatewayClient(ipfs_node.gateway, retry=FAST)
    assert gateway.fetch(cid) == data
    leaf = compute_cid(data[:CHUNK])  # the first raw leaf (the whole blob when it is one chunk)
    path = block_file(ipfs_node, leaf)
    original = path.read_bytes()
    assert original == data[:CHUNK]
    path.chmod(0o644)
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same length, one bit off
    try:
        with pytest.raises(BlobIntegrityError):
            store.get(cid)
        with pytest.raises(BlobIntegrityError):
            gateway.fetch(cid)
    finally:
        path.write_bytes(original)
    assert store.get(cid) == data


def test_gateway_fetch_is_verified(ipfs_node: IpfsNode, store: KuboBlobStore) -> None:  # noqa: F811
    data = stream("gateway", 3 * CHUNK + 1)
    cid = store.put(data)
    client = GatewayClient(ipfs_node.gateway, retry=FAST)
    assert client.fetch(cid) == data
    assert client.fetch(compute_cid(data).encode("base58btc")) == data
    with pytest.raises(BlobError):
        client.fetch(str(compute_cid(b"not on the node")))
    client.close()


def test_cli_put_and_get_with_kubo(ipfs_node: IpfsNode, tmp_path: Path) -> None:  # noqa: F811
    data = stream("cli", CHUNK + 99)
    src = tmp_path / "model.safetensors"
    src.write_bytes(data)
    runner = CliRunner()
    result = runner.invoke(app, ["blob", "put", "--kubo", ipfs_node.api, "--pin", str(src)])
    assert result.exit_code == 0, result.output
    cid = result.output.strip()
    assert cid == str(compute_cid(data))
    assert KuboBlobStore(ipfs_node.api, retry=FAST).stat(cid).pinned
    out = tmp_path / "out.bin"
    result = runner.invoke(app, ["blob", "get", cid, "--kubo", ipfs_node.api, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == data
    out.unlink()
    result = runner.invoke(app, ["blob", "get", cid, "--gateway", ipfs_node.gateway, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == data
