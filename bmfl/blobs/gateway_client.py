"""Trustless retrieval from any ``/ipfs/{cid}`` gateway (Kubo's or :mod:`bmfl.blobs.gateway`).

The gateway is not trusted: the bytes are checked against the CID before they are
returned, so a wrong, truncated or oversized answer is refused.
"""

from __future__ import annotations

import httpx

from bmfl.blobs.cid import DEFAULT_PROFILE, Profile, parse_cid, verify_cid
from bmfl.blobs.errors import BlobNotFoundError, RemoteError
from bmfl.blobs.retry import RetryPolicy, request


class GatewayClient:
    """Fetch and verify blobs from the gateway at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        max_bytes: int = 256 << 20,
        profile: Profile = DEFAULT_PROFILE,
    ) -> None:
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._retry = retry
        self._max_bytes = max_bytes
        self._profile = profile

    def close(self) -> None:
        self._client.close()

    def fetch(self, cid: str) -> bytes:
        """The verified bytes of ``cid`` (:class:`BlobIntegrityError` if they do not match)."""
        key = str(parse_cid(cid))
        reply = request(self._client, "GET", f"/ipfs/{key}", policy=self._retry, max_bytes=self._max_bytes)
        if reply.status_code == 404:
            raise BlobNotFoundError(f"gateway has no {key}")
        if reply.status_code != 200:
            raise RemoteError(f"gateway GET /ipfs/{key}: HTTP {reply.status_code}")
        verify_cid(reply.content, key, self._profile)
        return reply.content
