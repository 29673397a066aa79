"""A :class:`BlobStore` over Kubo's HTTP RPC API (``/api/v0``), trusting nothing it says.

``add`` is sent with the import options that reproduce :data:`DEFAULT_PROFILE`, and the
CID the node answers must name the same content as the one computed here: both are
decoded and compared as CIDs (codec and multihash), since nodes print the same CID in
different multibases (Kubo ``bafy…`` base32, js-ipfs ``zdj7…`` base58btc) and CIDv0
``Qm…`` is the same dag-pb root as its CIDv1. ``cat`` output is verified too. Works
against Kubo and js-ipfs (the tests run a real js-ipfs node), whose error messages for
a block the node does not hold differ (see :data:`_NOT_FOUND`).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from multiformats import CID

from bmfl.blobs.cid import DEFAULT_PROFILE, compute_cid, parse_cid, verify_cid
from bmfl.blobs.errors import BlobIntegrityError, BlobNotFoundError, InvalidCIDError, RemoteError
from bmfl.blobs.retry import Reply, RetryPolicy, request
from bmfl.blobs.store import BlobStat, BlobStore

_ADD_OPTIONS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": f"size-{DEFAULT_PROFILE.chunk_size}",
    "hash": "sha2-256",
}

# How nodes say "no such block here": Kubo ("block was not found locally (offline)",
# "ipld: could not find …"), js-ipfs ("ENOENT: no such file …", "… does not exist").
_NOT_FOUND = ("not found", "could not find", "enoent", "does not exist")


class KuboCIDMismatchError(BlobIntegrityError):
    """Kubo named the added bytes with a CID other than the locally computed one."""


def same_content(a: CID, b: CID) -> bool:
    """Whether two CIDs name the same block: same codec and multihash, any version or base."""
    return a.codec.code == b.codec.code and bytes(a.digest) == bytes(b.digest)


def _kubo_message(reply: Reply) -> str:
    try:
        return str(json.loads(reply.content)["Message"])
    except (ValueError, KeyError, TypeError):
        return reply.content[:200].decode("utf-8", "replace")


def _not_found(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _NOT_FOUND)


class KuboBlobStore(BlobStore):
    """Blobs in a Kubo node reached at ``api_url`` (for example ``http://127.0.0.1:5001``)."""

    def __init__(
        self,
        api_url: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        max_bytes: int = 256 << 20,
    ) -> None:
        self._client = httpx.Client(base_url=api_url.rstrip("/") + "/api/v0", timeout=timeout_s)
        self._retry = retry
        self._max_bytes = max_bytes

    def close(self) -> None:
        self._client.close()

    def _call(self, endpoint: str, params: dict[str, str], **kwargs: Any) -> Reply:
        return request(
            self._client, "POST", endpoint, params=params, policy=self._retry, max_bytes=self._max_bytes, **kwargs
        )

    def _failed(self, what: str, reply: Reply) -> RemoteError | BlobNotFoundError:
        message = _kubo_message(reply)
        text = f"kubo {what}: HTTP {reply.status_code}: {message}"
        return BlobNotFoundError(text) if _not_found(message) else RemoteError(text)

    def _json(self, endpoint: str, params: dict[str, str], **kwargs: Any) -> dict[str, Any]:
        reply = self._call(endpoint, params, **kwargs)
        if reply.status_code != 200:
            raise self._failed(endpoint, reply)
        lines = [line for line in reply.content.splitlines() if line.strip()]
        try:
            answer = json.loads(lines[-1])
        except (IndexError, ValueError) as exc:
            raise RemoteError(f"kubo {endpoint}: unreadable reply") from exc
        if not isinstance(answer, dict):
            raise RemoteError(f"kubo {endpoint}: unreadable reply")
        return answer

    def put(self, data: bytes, *, pin: bool = False) -> str:
        expected = compute_cid(data, DEFAULT_PROFILE)
        params = {**_ADD_OPTIONS, "pin": "true" if pin else "false"}
        answer = self._json("/add", params, files={"file": ("blob", data, "application/octet-stream")})
        named = str(answer.get("Hash", ""))
        try:
            got = parse_cid(named)
        except InvalidCIDError:
            raise KuboCIDMismatchError(f"kubo returned CID {named!r}, computed {expected}") from None
        if not same_content(got, expected):
            raise KuboCIDMismatchError(f"kubo returned CID {named!r}, computed {expected}")
        return str(expected)

    def get(self, cid: str) -> bytes:
        key = str(parse_cid(cid))
        reply = self._call("/cat", {"arg": key})
        if reply.status_code != 200:
            raise self._failed(f"cat {key}", reply)
        verify_cid(reply.content, key, DEFAULT_PROFILE)
        return reply.content

    def has(self, cid: str) -> bool:
        reply = self._call("/block/stat", {"arg": str(parse_cid(cid)), "offline": "true"})
        if reply.status_code == 200:
            return True
        if _not_found(_kubo_message(reply)):
            return False
        raise RemoteError(f"kubo block/stat: HTTP {reply.status_code}: {_kubo_message(reply)}")

    def pin(self, cid: str) -> None:
        wanted = parse_cid(cid)
        answer = self._json("/pin/add", {"arg": str(wanted)})
        pins = answer.get("Pins")
        try:
            pinned = isinstance(pins, list) and any(same_content(parse_cid(str(p)), wanted) for p in pins)
        except InvalidCIDError:
            pinned = False
        if not pinned:
            raise RemoteError(f"kubo pin/add {wanted}: answered {pins!r}")

    def stat(self, cid: str) -> BlobStat:
        key = str(parse_cid(cid))
        if not self.has(key):
            raise BlobNotFoundError(f"kubo does not hold {key}")
        size = self._json("/files/stat", {"arg": f"/ipfs/{key}", "offline": "true"})["Size"]
        pins = self._call("/pin/ls", {"arg": key, "type": "recursive"})
        if pins.status_code != 200 and "not pinned" not in _kubo_message(pins):
            raise RemoteError(f"kubo pin/ls: HTTP {pins.status_code}: {_kubo_message(pins)}")
        return BlobStat(cid=key, size=int(size), pinned=pins.status_code == 200)
