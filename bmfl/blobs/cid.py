"""CIDs equal to Kubo's ``ipfs add`` for the same bytes and import profile.

Relation to the on-chain digest (sha2-256 of the whole blob): when the blob fits in one
chunk and leaves are raw (``v1_256k``: blobs up to 256 KiB, every ``bmfl_cnn`` model),
the CID is ``bafkrei…`` and its multihash digest *is* that sha2-256. A larger blob's CID
names the root dag-pb node of its DAG, whose hash differs from the blob's; the chain
still stores the blob's sha2-256, and anyone holding the bytes recomputes both.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from multiformats import CID

from bmfl.blobs.errors import BlobIntegrityError, InvalidCIDError
from bmfl.blobs.unixfs import BalancedBuilder

BLOCK_SIZE_LIMIT = 1 << 20  # Kubo refuses chunks above 1 MiB


@dataclass(frozen=True)
class Profile:
    """An import configuration: chunk size, links per node, raw leaves, CID version."""

    chunk_size: int
    max_links: int
    raw_leaves: bool
    cid_version: int

    def __post_init__(self) -> None:
        if not 0 < self.chunk_size <= BLOCK_SIZE_LIMIT:
            raise ValueError(f"chunk_size must be in 1..{BLOCK_SIZE_LIMIT}")
        if self.max_links < 2:
            raise ValueError("max_links must be at least 2")
        if self.cid_version not in (0, 1) or (self.cid_version == 0 and self.raw_leaves):
            raise ValueError("CIDv0 needs dag-pb leaves; use cid_version 0 or 1")


PROFILES: dict[str, Profile] = {
    "v0": Profile(262144, 174, raw_leaves=False, cid_version=0),
    "v1_256k": Profile(262144, 174, raw_leaves=True, cid_version=1),
    "v1_2025": Profile(1048576, 1024, raw_leaves=True, cid_version=1),
}
DEFAULT_PROFILE = PROFILES["v1_256k"]  # `ipfs add --cid-version 1 --raw-leaves`


def _chunks(source: bytes | BinaryIO, size: int) -> Iterator[bytes]:
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    while chunk := stream.read(size):
        while len(chunk) < size and (more := stream.read(size - len(chunk))):
            chunk += more
        yield chunk


def compute_cid(source: bytes | BinaryIO, profile: Profile = DEFAULT_PROFILE) -> CID:
    """The CID Kubo gives ``source`` (bytes or a binary stream read to its end)."""
    chunks = _chunks(source, profile.chunk_size)
    return BalancedBuilder(chunks, profile.max_links, profile.raw_leaves, profile.cid_version).build().cid


RAW_SHA256 = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1 · raw codec · sha2-256 · 32 bytes


def cid_text(data: bytes, profile: Profile = DEFAULT_PROFILE) -> str:
    """``str(compute_cid(data, profile))``; a blob that is one raw leaf (every ``bmfl_cnn``
    update under ``v1_256k``) is named straight from its sha2-256, without building a DAG."""
    if profile.raw_leaves and len(data) <= profile.chunk_size:
        return "b" + base64.b32encode(RAW_SHA256 + hashlib.sha256(data).digest()).decode().lower().rstrip("=")
    return str(compute_cid(data, profile))


def parse_cid(text: str) -> CID:
    """Decode a CID string (any multibase; v1 comes back in canonical base32).

    Only sha2-256 CIDs with the raw or dag-pb codec are accepted.
    """
    try:
        cid = CID.decode(text)
    except (ValueError, LookupError, TypeError) as exc:  # multiformats raises all three
        raise InvalidCIDError(f"not a CID: {text!r}") from exc
    if cid.hashfun.name != "sha2-256" or cid.codec.name not in ("raw", "dag-pb"):
        raise InvalidCIDError(f"unsupported CID {text!r} ({cid.codec.name}, {cid.hashfun.name})")
    return cid if cid.version == 0 else cid.set(base="base32")


def verify_cid(data: bytes, cid: CID | str, profile: Profile = DEFAULT_PROFILE) -> None:
    """Raise :class:`BlobIntegrityError` unless ``data`` is what ``cid`` names.

    A raw CID is checked directly against the sha2-256 of ``data``; a dag-pb CID by
    rebuilding the DAG with ``profile`` when its CID version matches, else with the
    default of that version (``v0`` or :data:`DEFAULT_PROFILE`).
    """
    expected = parse_cid(cid) if isinstance(cid, str) else cid
    if expected.codec.name == "raw":
        ok = len(data) <= BLOCK_SIZE_LIMIT and hashlib.sha256(data).digest() == expected.raw_digest
    else:
        if profile.cid_version != expected.version:
            profile = PROFILES["v0"] if expected.version == 0 else DEFAULT_PROFILE
        ok = compute_cid(data, profile) == expected
    if not ok:
        raise BlobIntegrityError(f"{len(data)} bytes do not match CID {expected}")
