"""JSON-RPC calls over one kept-alive HTTP connection: the chain node's wire format in one
place (``chain.anvil.rpc`` makes one-off calls with it, the edge reads every head with it).

web3's provider goes through ``requests``, which looks up proxies and ``.netrc`` and
builds a session request for every call: interpreter time that an edge pays once per
upload for the chain's head (17 % of its GIL-held samples during intake; 9 % this way).
This client keeps one ``http.client`` connection and reconnects once when the node
closed it (every method it is used for on a kept connection is a read, so sending it
again is harmless). One caller at a time.
"""

from __future__ import annotations

import base64
import http.client
import json
from typing import Any
from urllib.parse import unquote, urlsplit


class JsonRpcError(RuntimeError):
    """The node answered with an error, or with something that is not JSON-RPC."""


class NodeUnreachable(ConnectionError):
    """The node did not answer: refused, reset or timed out, or an HTTP error status
    (services answer 503 ``chain_unavailable``, as for web3's connection errors)."""


class KeptAliveRpc:
    """``call(method, params)`` → the ``result`` of a JSON-RPC 2.0 reply from ``url``."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an HTTP(S) JSON-RPC URL: {url!r}")
        self._https, self._host, self._port, self._timeout = parts.scheme == "https", parts.hostname, parts.port, timeout
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json"}
        if parts.username is not None:  # http://user:password@node/ as web3's provider takes it
            token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self._timeout)

    def call(self, method: str, params: list[Any]) -> Any:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}).encode()
        while True:
            fresh = self._conn is None
            conn = self._conn = self._conn or self._connect()
            try:
                conn.request("POST", self._path, body, self._headers)
                reply = conn.getresponse()
                data = reply.read()
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if fresh:  # a new connection failed: the node is down
                    raise NodeUnreachable(f"{method}: {type(exc).__name__}: {exc}") from exc
                continue  # the node closed a kept-alive connection: once more on a new one
            if reply.status != 200:
                raise NodeUnreachable(f"{method}: HTTP {reply.status} {data[:200]!r}")
            try:
                answer = json.loads(data)
            except ValueError:
                raise JsonRpcError(f"{method}: not JSON: {data[:200]!r}") from None
            if not isinstance(answer, dict) or "result" not in answer:
                raise JsonRpcError(f"{method} answered {str(answer)[:200]}")
            return answer["result"]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
