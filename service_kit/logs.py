"""Service logs as text (default) or one JSON object per line (``log_format = "json"``):
every record carries the service, and task and round events carry ``task`` and
``round`` fields (``log.info(..., extra=task_fields(task_id, round_))``). The access
log — one line per request with method, path, status, milliseconds and the task and
round the path names — comes from :func:`install_access_log`."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["text", "json"]
FIELDS = ("task", "round", "method", "path", "status", "ms", "client")
TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"
_TASK_PATH = re.compile(r"/tasks/(\d+)(?:/rounds/(\d+))?")
access_log = logging.getLogger("bmfl.access")


def task_fields(task_id: int, round_: int | None = None) -> dict[str, int]:
    """``extra=`` of a task or round event."""
    return {"task": task_id} | ({} if round_ is None else {"round": round_})


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname.lower(), "service": self.service,
            "logger": record.name, "message": record.getMessage(),
        }  # fmt: skip
        line |= {k: getattr(record, k) for k in FIELDS if hasattr(record, k)}
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(service: str, fmt: LogFormat) -> None:
    """The root logger at INFO on stderr, in ``fmt``; httpx's per-request lines muted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def uvicorn_logging(fmt: LogFormat) -> dict[str, Any]:
    """``uvicorn.run`` keywords: in JSON, uvicorn's own loggers go through the root
    logger and its access log is replaced by :func:`install_access_log`'s."""
    return {"log_config": None, "access_log": False} if fmt == "json" else {}


class AccessLog:
    """ASGI middleware: one ``bmfl.access`` record per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"]
            fields: dict[str, Any] = {"method": scope["method"], "path": path, "status": status[0]}
            fields["ms"] = round(1000 * (time.perf_counter() - started), 1)
            fields["client"] = (scope.get("client") or ("", 0))[0]
            if m := _TASK_PATH.match(path):
                fields |= task_fields(int(m[1]), int(m[2]) if m[2] else None)
            access_log.info("%s %s %s", scope["method"], path, status[0], extra=fields)


def install_access_log(app: Any) -> None:
    app.add_middleware(AccessLog)
