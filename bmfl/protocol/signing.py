"""EIP-191 signed messages of the round protocol (docs/architecture.md, "Identity, integrity, privacy").

Every message names the chain id and its purpose, so a signature made for one task,
round, edge or chain is worthless anywhere else (no replay across rounds or tasks):

- an update: ``BMFL update v1`` · chain · task · round · edge · blob digest;
- an upload receipt (edge → vehicle): ``BMFL receipt v1`` · chain · task · round ·
  vehicle · blob digest, the edge's promise to record the update (an omission proof);
- an association: ``BMFL associate v1`` · chain · vehicle · edge · position · time;
- a service request (cloud → edge, edge → edge): ``BMFL request v1`` · chain · method
  and path · sha2-256 of the body · time, sent in the headers below.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from functools import lru_cache

import coincurve
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils import is_address, to_checksum_address

SIGNATURE_HEADER = "X-BMFL-Signature"
TIME_HEADER = "X-BMFL-Time"
UPDATE_SIGNATURE_HEADER = "X-BMFL-Update-Signature"
"""A vehicle's signature of ``update_message`` on the edge's binary upload route."""
EPSILON_HEADER = "X-BMFL-Epsilon"
MAX_CLOCK_SKEW_S = 300


class SignatureError(ValueError):
    """A signature is malformed, stale or not from the expected account."""


ADDRESS_CHARS = 42
"""``0x`` and 40 hex digits: the longest address text the memos below keep."""


@lru_cache(maxsize=4096)
def _checksum(address: str) -> str:
    return to_checksum_address(address)


@lru_cache(maxsize=4096)
def _valid(address: str) -> bool:
    return is_address(address)


def checksum_address(address: str) -> str:
    """``eth_utils.to_checksum_address`` (a Keccak in Python each time), remembered for
    the most recent addresses: an edge checksums the same vehicles' addresses several
    times per upload. Longer texts are never kept (the memo stays small)."""
    return _checksum(address) if len(address) <= ADDRESS_CHARS else to_checksum_address(address)


def valid_address(address: str) -> bool:
    """``eth_utils.is_address`` (a mixed-case address must carry a correct checksum), remembered as above."""
    return len(address) <= ADDRESS_CHARS and _valid(address)


def update_message(chain_id: int, task_id: int, round_: int, edge: str, digest: bytes) -> str:
    """What a vehicle signs to upload the update with ``digest`` to ``edge``."""
    return (
        f"BMFL update v1\nchain {chain_id}\ntask {task_id}\nround {round_}\n"
        f"edge {checksum_address(edge)}\ndigest 0x{digest.hex()}"
    )


def receipt_message(chain_id: int, task_id: int, round_: int, vehicle: str, digest: bytes) -> str:
    """What an edge signs when it accepts ``vehicle``'s update with ``digest``."""
    return (
        f"BMFL receipt v1\nchain {chain_id}\ntask {task_id}\nround {round_}\n"
        f"vehicle {checksum_address(vehicle)}\ndigest 0x{digest.hex()}"
    )


def associate_message(chain_id: int, vehicle: str, edge: str, x: float, y: float, timestamp_ms: int) -> str:
    """What a vehicle signs to associate with ``edge`` at position (x, y)."""
    return (
        f"BMFL associate v1\nchain {chain_id}\nvehicle {checksum_address(vehicle)}\n"
        f"edge {checksum_address(edge)}\nposition {x:.3f},{y:.3f}\ntime {timestamp_ms}"
    )


def request_message(chain_id: int, method: str, path: str, body: bytes, timestamp_ms: int) -> str:
    """What a service signs to call another service's internal endpoint."""
    return (
        f"BMFL request v1\nchain {chain_id}\n{method.upper()} {path}\n"
        f"body {hashlib.sha256(body).hexdigest()}\ntime {timestamp_ms}"
    )


def _eip191_hash(message: str) -> bytes:
    """Keccak-256 of ``message`` with the EIP-191 ``personal_sign`` prefix (version 0x45)."""
    data = message.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def sign(account: LocalAccount, message: str) -> str:
    """EIP-191 ``personal_sign`` of ``message``, as 0x-hex (r ‖ s ‖ v, v = 27 or 28; RFC 6979
    nonces and low s from libsecp256k1, the same bytes as ``eth_account``'s, a fifth of the time)."""
    signature = coincurve.PrivateKey(bytes(account.key)).sign_recoverable(_eip191_hash(message), hasher=None)
    return "0x" + signature[:64].hex() + f"{signature[64] + 27:02x}"


def recover(message: str, signature: str) -> str:
    """The checksummed address that signed ``message`` (v = 27/28 or 0/1, as ``eth_account``
    takes it); :class:`SignatureError` if unreadable."""
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
        if len(raw) != 65:
            raise ValueError(f"a signature has 65 bytes, got {len(raw)}")
        v = raw[64] - 27 if raw[64] >= 27 else raw[64]
        if v not in (0, 1):
            raise ValueError(f"v must be 0, 1, 27 or 28, got {raw[64]}")
        public = coincurve.PublicKey.from_signature_and_message(raw[:64] + bytes([v]), _eip191_hash(message), hasher=None)
    except Exception as exc:  # coincurve raises several types for bad signatures
        raise SignatureError(f"unreadable signature: {exc}") from None
    return checksum_address("0x" + keccak(public.format(compressed=False)[1:])[-20:].hex())


def verify(message: str, signature: str, expected: str) -> None:
    """Raise :class:`SignatureError` unless ``expected`` signed ``message``."""
    signer = recover(message, signature)
    if signer != checksum_address(expected):
        raise SignatureError(f"signed by {signer}, expected {checksum_address(expected)}")


def now_ms() -> int:
    return int(time.time() * 1000)


def check_fresh(timestamp_ms: int, skew_s: float = MAX_CLOCK_SKEW_S) -> None:
    """Reject a timestamp more than ``skew_s`` away from now."""
    if abs(now_ms() - timestamp_ms) > skew_s * 1000:
        raise SignatureError(f"timestamp {timestamp_ms} is more than {skew_s:.0f} s from now")


def signed_headers(account: LocalAccount, chain_id: int, method: str, path: str, body: bytes) -> dict[str, str]:
    """Headers authenticating a service request (see :func:`request_message`)."""
    ts = now_ms()
    sig = sign(account, request_message(chain_id, method, path, body, ts))
    return {SIGNATURE_HEADER: sig, TIME_HEADER: str(ts)}


def request_signer(chain_id: int, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
    """The account that signed a service request; :class:`SignatureError` if missing or stale.
    ``headers`` must look names up case-insensitively (Starlette's and httpx's do)."""
    sig, ts = headers.get(SIGNATURE_HEADER), headers.get(TIME_HEADER)
    if not sig or not ts:
        raise SignatureError(f"missing {SIGNATURE_HEADER} / {TIME_HEADER} headers")
    try:
        timestamp = int(ts)
    except ValueError:
        raise SignatureError(f"{TIME_HEADER} is not an integer") from None
    check_fresh(timestamp)
    return recover(request_message(chain_id, method, path, body, timestamp), sig)
