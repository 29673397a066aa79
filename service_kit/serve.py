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

LISTEN_FD = "BMFL_LISTEN_FD"
"""Set by a launcher that bound the service's listening socket itself and passed it on."""


def listening_socket(host: str, port: int = 0) -> socket.socket:
    """A TCP socket listening on ``host:port`` (0: a port the kernel picks). Bound here and
    handed to a server (a thread, or a service process), its port cannot be taken by
    anyone else between the moment it is chosen and the moment the server starts
    accepting (requests queue in the socket meanwhile)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def serve(app: object, host: str, port: int, **kw: Any) -> None:
    """Run ``app`` under uvicorn until stopped: on the socket inherited through
    ``BMFL_LISTEN_FD`` when the launcher passed one, else bound to ``host:port``."""
    fd = os.environ.get(LISTEN_FD)
    if fd is None:
        uvicorn.run(app, host=host, port=port, **kw)  # type: ignore[arg-type]
        return
    inherited = socket.socket(fileno=int(fd))  # family and type read from the descriptor
    if inherited.getsockname()[1] != port:  # a launcher and its settings that disagree
        raise ValueError(f"{LISTEN_FD}={fd} listens on port {inherited.getsockname()[1]}, the settings say {port}")
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, **kw)).run(sockets=[inherited])  # type: ignore[arg-type]


class ServerThread:
    """``with ServerThread(app) as server: httpx.get(server.url + "/healthz")``."""

    def __init__(self, app: object, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.socket = listening_socket(host, port or 0)  # held from now on: nobody else can take the port
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name=f"uvicorn:{self.port}", daemon=True
        )

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
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.socket.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
