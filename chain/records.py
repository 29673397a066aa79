"""An edge's round records as ``BMFLTasks`` holds them: the packed, vehicle-signed record,
the Merkle tree the contract builds of a round's records, proofs of single records,
and the hash chain of an edge's record log (``RoundLog``).

Tree (``BMFLTasks._recordTree``): leaf = keccak(0x00 ‖ record), node = keccak(0x01 ‖ left ‖
right), leaves sorted by vehicle index and padded with zero hashes to a power of two; an
empty round has root 0. Log: h₀ = 0, hₖ = keccak(abi.encode(hₖ₋₁, round, root, count, Σθ)).
"""

from __future__ import annotations

import math

from eth_abi import encode as abi_encode
from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field

from bmfl.incentives import SCALE, to_fixed

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RECORD_BYTES = 117
"""``BMFLTasks.RECORD_BYTES``: vehicle 4 · digest 32 · Λ 8 · θ 8 · flags 1 · r 32 · yParity‖s 32."""
MAX_STALENESS = 127
"""``BMFLTasks.MAX_STALENESS``: τ lives in the 7 high bits of the flags byte (bit 0: flagged)."""


def fixed_reliability(value: float | None) -> int:
    """Λ in the record's fixed point, clamped to int64 (Λ = −∞ for a reversed update)."""
    if value is None or math.isnan(value):
        return 0
    bound = INT64_MAX / SCALE
    return max(INT64_MIN, min(INT64_MAX, to_fixed(max(-bound, min(bound, value)))))


class TrainerRecord(BaseModel):
    """One update an edge records: a flagged update has ``theta`` 0; ``signature`` is the
    vehicle's 65-byte signature of its update message (``bmfl.protocol.signing.update_message``)
    for its base version, the record's round − ``staleness`` (τ = 0 in a synchronous task)."""

    model_config = ConfigDict(frozen=True)

    vehicle: int = Field(ge=0, lt=2**32)
    update_digest: bytes = Field(min_length=32, max_length=32)
    reliability: int = Field(ge=-(2**63), lt=2**63)
    theta: int = Field(ge=0, lt=2**64)
    malicious: bool = False
    signature: bytes = Field(min_length=65, max_length=65)
    staleness: int = Field(0, ge=0, le=MAX_STALENESS)

    def pack(self) -> bytes:
        """The record's packed bytes (``RECORD_BYTES``), with the signature in EIP-2098 form."""
        return (
            self.vehicle.to_bytes(4, "big") + self.update_digest + self.reliability.to_bytes(8, "big", signed=True)
            + self.theta.to_bytes(8, "big") + bytes([self.malicious | self.staleness << 1])
            + compact_signature(self.signature)
        )  # fmt: skip

    @classmethod
    def unpack(cls, raw: bytes) -> TrainerRecord:
        """The inverse of :meth:`pack`."""
        if len(raw) != RECORD_BYTES:
            raise ValueError(f"a record has {RECORD_BYTES} bytes, got {len(raw)}")
        return cls(
            vehicle=int.from_bytes(raw[:4], "big"), update_digest=raw[4:36],
            reliability=int.from_bytes(raw[36:44], "big", signed=True), theta=int.from_bytes(raw[44:52], "big"),
            malicious=raw[52] & 1 == 1, signature=expand_signature(raw[53:117]), staleness=raw[52] >> 1,
        )  # fmt: skip


def record_vehicle(record: bytes) -> int:
    """The vehicle index of a packed record, without decoding the rest."""
    return int.from_bytes(record[:4], "big")


def record_theta(record: bytes) -> int:
    """θ of a packed record, without decoding the rest."""
    return int.from_bytes(record[44:52], "big")


def compact_signature(signature: bytes) -> bytes:
    """EIP-2098: (r, s, v) → r ‖ (yParity << 255 | s)."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    parity = v - 27 if v >= 27 else v
    if parity not in (0, 1):
        raise ValueError(f"signature v must be 27 or 28, got {v}")
    return r + (s | (parity << 255)).to_bytes(32, "big")


def expand_signature(compact: bytes) -> bytes:
    """EIP-2098: r ‖ yParity‖s → (r, s, v)."""
    vs = int.from_bytes(compact[32:64], "big")
    return compact[:32] + (vs & ((1 << 255) - 1)).to_bytes(32, "big") + bytes([27 + (vs >> 255)])


def pack_records(records: list[TrainerRecord]) -> bytes:
    """Records sorted by vehicle (the contract requires it) and packed for ``recordRound``."""
    return b"".join(r.pack() for r in sorted(records, key=lambda r: r.vehicle))


def unpack_records(packed: bytes) -> list[TrainerRecord]:
    """Decode the ``records`` argument of ``recordRound``."""
    if len(packed) % RECORD_BYTES:
        raise ValueError(f"{len(packed)} bytes is not a whole number of {RECORD_BYTES}-byte records")
    return [TrainerRecord.unpack(packed[i : i + RECORD_BYTES]) for i in range(0, len(packed), RECORD_BYTES)]


def leaf(record: bytes) -> bytes:
    return keccak(b"\x00" + record)


def _node(left: bytes, right: bytes) -> bytes:
    return keccak(b"\x01" + left + right)


def _levels(packed: list[bytes]) -> list[list[bytes]]:
    size = 1
    while size < len(packed):
        size <<= 1
    level = [leaf(r) for r in packed] + [b"\x00" * 32] * (size - len(packed))
    levels = [level]
    while len(level) > 1:
        level = [_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def records_root(packed: list[bytes]) -> bytes:
    """The root ``recordRound`` computes of the packed, sorted records (0 when empty)."""
    return _levels(packed)[-1][0] if packed else b"\x00" * 32


def record_proofs(packed: list[bytes]) -> list[list[bytes]]:
    """Every record's Merkle proof (sibling hashes from its leaf up to the root), by
    position, from one tree: O(n) hashes."""
    levels = _levels(packed) if packed else []
    return [[level[p >> d ^ 1] for d, level in enumerate(levels[:-1])] for p in range(len(packed))]


class RoundLog(BaseModel):
    """One entry of an edge's record log (``BMFLTasks.RoundLog``)."""

    model_config = ConfigDict(frozen=True)

    round: int
    root: bytes
    count: int
    theta_total: int

    def as_tuple(self) -> tuple[int, bytes, int, int]:
        return (self.round, self.root, self.count, self.theta_total)


def log_hash(entries: list[RoundLog]) -> bytes:
    """``BMFLTasks.logHash`` of an edge whose record log is ``entries``."""
    h = b"\x00" * 32
    for e in entries:
        h = keccak(abi_encode(["bytes32", "uint16", "bytes32", "uint32", "uint64"], [h, *e.as_tuple()]))
    return h
