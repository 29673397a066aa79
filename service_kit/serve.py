"""Run an ASGI app as a real uvicorn server: :func:`serve` in a service's own process
(on the socket its launcher bound, when it passed one), :class:`ServerThread` on
loopback in a thread of this process (tests, embedded use)."""

from __future__ import annotations

import os
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from chain.anvil import free_port

LISTEN_FD = "BMFL_LISTEN_FD"
"""Set by a launcher that bound the service's listening socket itself and passed it on."""


def serve(app: object, host: str, port: int, **kw: Any) -> None:
    """Run ``app`` under uvicorn until stopped: on the socket inherited through
    ``BMFL_LISTEN_FD`` when the launcher passed one, else bound to ``host:port``."""
    fd = os.environ.get(LISTEN_FD)
    if fd is None:
        uvicorn.run(app, host=host, port=port, **kw)  # type: ignore[arg-type]
        return
    inherited = socket.socket(fileno=int(fd))  # family and type read from the descriptor
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, **kw)).run(sockets=[inherited])  # type: ignore[arg-type]


class ServerThread:
    """``with ServerThread(app) as server: httpx.get(server.url + "/healthz")``."""

    def __init__(self, app: object, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
