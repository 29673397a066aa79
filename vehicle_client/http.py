"""Errors a vehicle gets back from the services, with the contract's ``reason`` code."""

from __future__ import annotations

import httpx


class ServiceError(RuntimeError):
    """A service refused a request (``reason``/``detail`` from its problem body) or
    could not be reached (``status`` 0, ``reason`` ``unreachable``)."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail


def expect(reply: httpx.Response, *statuses: int) -> httpx.Response:
    """``reply`` if its status is one of ``statuses``; else :class:`ServiceError`."""
    if reply.status_code in statuses:
        return reply
    try:
        body = reply.json()
        reason, detail = str(body["reason"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        reason, detail = "http_error", reply.text[:300]
    raise ServiceError(reply.status_code, reason, detail)


def send(client: httpx.Client, method: str, url: str, *statuses: int, **kwargs: object) -> httpx.Response:
    """One request; transport failures become :class:`ServiceError` ``unreachable``."""
    try:
        reply = client.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        raise ServiceError(0, "unreachable", f"{method} {url}: {exc}") from None
    return expect(reply, *statuses)
