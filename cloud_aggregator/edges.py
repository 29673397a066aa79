"""The cloud's clients of the edges' internal API, each call signed with the cloud key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel

from bmfl.protocol.schemas import (
    EdgeInfo, EdgeTask, EvaluateRequest, EvaluateResult, RoundClose, RoundOpen, RoundProgress, RoundSelection,
    ScoreRequest, ScoreResult,
)  # fmt: skip
from bmfl.blobs.errors import RemoteError
from bmfl.blobs.retry import RetryPolicy
from bmfl.blobs.retry import request as send_with_retry
from bmfl.protocol.signing import signed_headers

RETRY = RetryPolicy(attempts=6, backoff_s=0.5, max_backoff_s=8.0)
"""An edge restarting, or answering 503 while its chain node or blob store is down, is
retried for about 15 s; every edge call is idempotent."""


class EdgeCallError(RuntimeError):
    """An edge answered with an error or could not be reached."""


@dataclass
class EdgeClient:
    info: EdgeInfo
    account: LocalAccount
    chain_id: int
    timeout_s: float = 120.0
    http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # one pooled client per edge: a client per call cost an SSL context (tens of ms
        # of CPU) and a TCP handshake on every progress poll
        self.http = httpx.Client(timeout=self.timeout_s)

    def _send(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> httpx.Response:
        headers = signed_headers(self.account, self.chain_id, method, path, body) | {"Content-Type": content_type}
        try:
            reply = send_with_retry(self.http, method, self.info.url + path, policy=RETRY, content=body, headers=headers)
        except RemoteError as exc:
            raise EdgeCallError(f"edge {self.info.index} ({self.info.url}) unreachable: {exc}") from None
        if reply.status_code >= 400:
            text = reply.content[:300].decode(errors="replace")
            raise EdgeCallError(f"edge {self.info.index} {method} {path}: HTTP {reply.status_code} {text}")
        return httpx.Response(reply.status_code, content=reply.content)

    def _json(self, method: str, path: str, payload: BaseModel | None = None) -> dict:
        body = payload.model_dump_json().encode() if payload is not None else b""
        return self._send(method, path, body).json()

    def put_task(self, task: EdgeTask, test_set: bytes) -> None:
        """Give the edge the task and the publisher's private test set (multipart, signed)."""
        files = {"task": (None, task.model_dump_json(), "application/json"), "test_set": ("test_set", test_set)}
        form = httpx.Request("PUT", self.info.url, files=files)
        self._send("PUT", f"/tasks/{task.spec.task_id}", form.read(), form.headers["Content-Type"])

    def open_round(self, task_id: int, round_: int, request: RoundOpen) -> RoundSelection:
        return RoundSelection.model_validate(self._json("POST", f"/tasks/{task_id}/rounds/{round_}/open", request))

    def progress(self, task_id: int, round_: int) -> RoundProgress:
        return RoundProgress.model_validate(self._json("GET", f"/tasks/{task_id}/rounds/{round_}"))

    def close_round(self, task_id: int, round_: int) -> RoundClose:
        return RoundClose.model_validate(self._json("POST", f"/tasks/{task_id}/rounds/{round_}/close"))

    def scores(self, task_id: int, round_: int, request: ScoreRequest) -> ScoreResult:
        return ScoreResult.model_validate(self._json("POST", f"/tasks/{task_id}/rounds/{round_}/scores", request))

    def evaluate(self, task_id: int, request: EvaluateRequest) -> EvaluateResult:
        return EvaluateResult.model_validate(self._json("POST", f"/tasks/{task_id}/evaluate", request))


def discover(endpoints: list, account: LocalAccount, chain_id: int, registry) -> list[EdgeClient]:
    """Ask each configured edge who it is (``/healthz`` gives its address) and find its
    index on chain; the directory is ordered by edge index."""
    clients = []
    for ep in endpoints:
        try:
            health = httpx.get(ep.url.rstrip("/") + "/healthz", timeout=10).json()
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise EdgeCallError(f"edge {ep.url} unreachable: {exc}") from None
        address = health["address"]
        info = EdgeInfo(index=registry.edge_index(address), address=address, url=ep.url.rstrip("/"), x=ep.x, y=ep.y)
        clients.append(EdgeClient(info, account, chain_id))
    return sorted(clients, key=lambda c: c.info.index)
