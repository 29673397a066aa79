"""HTTP requests with timeouts, bounded retries with exponential backoff, size limits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from bmfl.blobs.errors import BlobTooLargeError, RemoteError

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; waits ``backoff_s · 2^k`` (capped) between them."""

    attempts: int = 4
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2**attempt)


@dataclass(frozen=True)
class Reply:
    status_code: int
    content: bytes


def request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    max_bytes: int | None = None,
    **kwargs: Any,
) -> Reply:
    """Send a request, retrying transport errors and 429/502/503/504.

    Other statuses are returned for the caller to interpret. Raises :class:`RemoteError`
    once ``policy.attempts`` tries have failed, :class:`BlobTooLargeError` (not retried)
    when the body exceeds ``max_bytes``.
    """
    last = ""
    for attempt in range(policy.attempts):
        if attempt:
            time.sleep(policy.delay(attempt - 1))
        try:
            with client.stream(method, url, **kwargs) as response:
                if response.status_code in RETRY_STATUSES:
                    last = f"HTTP {response.status_code}"
                    continue
                body = bytearray()
                for part in response.iter_bytes():
                    body += part
                    if max_bytes is not None and len(body) > max_bytes:
                        raise BlobTooLargeError(f"{method} {url}: body exceeds {max_bytes} bytes")
                return Reply(response.status_code, bytes(body))
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
    raise RemoteError(f"{method} {url} failed after {policy.attempts} attempts ({last})")
