"""A whole BMFL deployment on loopback as real processes: Anvil, the deployer, N edge
servers, the cloud and optionally a vehicle fleet (``python -m edge_node`` /
``cloud_aggregator`` / ``vehicle_client``), each configured through the environment
variables of its settings model (:mod:`launcher.topology`), the same topology as
``docker-compose.yml``.

Used by ``bmfl demo``, ``bmfl up`` and the end-to-end tests. Every process runs in its
own session and is stopped as a process group. With ``state_file`` the stack records
pids, ports and URLs as it starts, so :meth:`LocalStack.attach` (``bmfl down``,
``bmfl status``) finds it from another process. Local chains only: the accounts are
Anvil's well-known development keys.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from launcher import procs
from launcher.deployer import provision
from launcher.health import PROBES, NotReady
from launcher.topology import CLOUD, FIRST_EDGE, OPERATOR, PUBLISHER, Topology, settings_env
from chain.anvil import DEFAULT_MNEMONIC, find_anvil, free_port
from service_kit.serve import LISTEN_FD, listening_socket

__all__ = ["CLOUD", "FIRST_EDGE", "OPERATOR", "PUBLISHER", "LocalStack", "ServiceProcess", "anvil_args"]

CHAIN_ID = 31337
PORTS = {"chain": 8545, "cloud": 8000, "edge": 8100}
"""Fixed ports (``fixed_ports=True``, as in docker-compose.yml): edge i listens on 8100 + i."""


def anvil_args(host: str, port: int, chain_id: int, accounts: int, state: Path) -> list[str]:
    """Anvil's flags: funded dev accounts, the state loaded from and dumped to ``state``."""
    return [
        "--host", host, "--port", str(port), "--chain-id", str(chain_id), "--accounts", str(accounts),
        "--balance", "10000", "--mnemonic", DEFAULT_MNEMONIC, "--state", str(state), "--state-interval", "10",
    ]  # fmt: skip


class ServiceRecord(BaseModel):
    """What another process needs to find, probe and stop a service."""

    name: str
    pid: int
    started: int | None
    url: str
    log_path: Path
    probe: str
    probe_args: dict[str, Any] = {}
    stop_signal: int = signal.SIGTERM


class StackState(BaseModel):
    """The state file of a running stack."""

    run_dir: Path
    rpc_url: str
    blob_store: str
    deployment_file: Path | None
    services: list[ServiceRecord]


@dataclass
class ServiceProcess:
    """One service as a process group, logging to ``log_path``; ``probe`` names its
    readiness check in :data:`launcher.health.PROBES`, called with ``url``. A service
    given a ``listener`` (a BMFL service, :func:`service_kit.serve.serve`) inherits it
    as its socket; on a restart it gets a new one bound to its URL's port."""

    name: str
    command: list[str]
    env: dict[str, str]
    url: str
    log_path: Path
    probe: str = "service"
    probe_args: dict[str, Any] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    pid: int | None = None
    started: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    listener: socket.socket | None = field(default=None, repr=False)
    inherits_socket: bool = False

    def __post_init__(self) -> None:
        self.inherits_socket = self.inherits_socket or self.listener is not None

    @property
    def running(self) -> bool:
        return self.pid is not None and procs.is_running(self.pid, self.started)

    def start(self) -> None:
        env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"} | self.env
        listener, self.listener = self.listener, None
        if listener is None and self.inherits_socket:
            url = urlsplit(self.url)
            listener = listening_socket(url.hostname or "127.0.0.1", url.port or 80)
        if listener is None:
            self.proc = procs.spawn(self.command, env, self.log_path)
        else:
            with listener:
                self.proc = procs.spawn(self.command, env | {LISTEN_FD: str(listener.fileno())}, self.log_path, (listener.fileno(),))
        self.pid, self.started = self.proc.pid, procs.start_time(self.proc.pid)

    def health(self) -> dict[str, Any]:
        """The probe's answer; raises :class:`NotReady`."""
        return PROBES[self.probe](self.url, **self.probe_args)

    def wait_healthy(self, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}:\n{self.tail()}")
            try:
                return self.health()
            except NotReady as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s ({exc}); see {self.log_path}") from None
            time.sleep(0.2)

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the process group (``stop_signal``, then SIGKILL); False if it had to be killed."""
        pid, self.pid = self.pid, None
        graceful = True
        if pid is not None and procs.start_time(pid) in (None, self.started):
            graceful = procs.stop_group(pid, self.stop_signal, timeout)
        if self.proc is not None:
            self.proc.wait()
            self.proc = None
        return graceful

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_healthy()

    def record(self) -> ServiceRecord:
        assert self.pid is not None
        return ServiceRecord(
            name=self.name, pid=self.pid, started=self.started, url=self.url, log_path=self.log_path,
            probe=self.probe, probe_args=self.probe_args, stop_signal=self.stop_signal,
        )  # fmt: skip

    @classmethod
    def from_record(cls, record: ServiceRecord) -> "ServiceProcess":
        """A service started by another process (it cannot be restarted from here)."""
        return cls(
            record.name, [], {}, record.url, record.log_path, record.probe, record.probe_args,
            record.stop_signal, record.pid, record.started,
        )  # fmt: skip


@dataclass
class LocalStack:
    """``with LocalStack(run_dir, edges=5) as stack: ...``; ``vehicles > 0`` adds a fleet;
    ``blob_store`` defaults to the directory ``run_dir/blobs``; ``log_format`` (text or
    json) is the edges' and the cloud's."""

    run_dir: Path
    edges: int = 5
    round_timeout_s: float = 300.0
    host: str = "127.0.0.1"
    vehicles: int = 0
    seed: int = 0
    blob_store: str = ""
    fixed_ports: bool = False
    state_file: Path | None = None
    log_format: str = "text"
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    deployment_file: Path | None = None
    listeners: dict[str, socket.socket] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.blob_store = self.blob_store or str(self.run_dir / "blobs")

    @property
    def rpc_url(self) -> str:
        return self.services["chain"].url

    @property
    def cloud(self) -> ServiceProcess:
        return self.services["cloud"]

    @property
    def edge_services(self) -> list[ServiceProcess]:
        return [self.services[f"edge-{i}"] for i in range(self.edges)]

    def topology(self) -> Topology:
        """The ports: the edges' and the cloud's sockets are bound here and held in
        ``listeners`` until their services inherit them (no other process can take one
        meanwhile); Anvil binds its own port, picked free a moment before it starts."""

        def port(role: str, offset: int = 0) -> int:
            wanted = PORTS[role] + offset if self.fixed_ports else 0
            if role == "chain":
                return wanted or free_port(self.host)
            name = "cloud" if role == "cloud" else f"edge-{offset}"
            self.listeners[name] = listening_socket(self.host, wanted)
            return int(self.listeners[name].getsockname()[1])

        return Topology(
            host=self.host, chain_port=port("chain"), cloud_port=port("cloud"),
            edge_ports=tuple(port("edge", i) for i in range(self.edges)), chain_id=CHAIN_ID,
            deployments=self.run_dir / "deployments", blob_store=self.blob_store, state_root=self.run_dir,
            round_timeout_s=self.round_timeout_s,
        )  # fmt: skip

    def _service(self, name: str, command: list[str], env: dict[str, str], url: str, **kw: Any) -> ServiceProcess:
        service = ServiceProcess(
            name, command, env, url, self.run_dir / "logs" / f"{name}.log", listener=self.listeners.pop(name, None), **kw
        )  # fmt: skip
        self.services[name] = service
        service.start()
        self.save_state()
        return service

    def start(self) -> "LocalStack":
        """Chain, deployment, edges and cloud (started together; the cloud waits for the
        edges), then the fleet; returns once every service is ready."""
        anvil = find_anvil()
        if anvil is None:
            raise FileNotFoundError("no Anvil binary: run `npm ci` (package @foundry-rs/anvil) or set BMFL_ANVIL")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        topo = self.topology()
        (self.run_dir / "chain").mkdir(exist_ok=True)
        accounts = max(20, FIRST_EDGE + self.edges)
        args = anvil_args(self.host, topo.chain_port, CHAIN_ID, accounts, self.run_dir / "chain" / "state.json")
        self._service("chain", [str(anvil), *args], {}, topo.rpc_url, probe="chain", stop_signal=signal.SIGINT).wait_healthy()
        self.deployment_file = provision(topo.deployer())
        python = sys.executable
        for i in range(self.edges):
            env = settings_env(topo.edge(i)) | {"BMFL_EDGE_LOG_FORMAT": self.log_format}
            self._service(f"edge-{i}", [python, "-m", "edge_node"], env, topo.edge_url(i))
        env = settings_env(topo.cloud()) | {"BMFL_CLOUD_LOG_FORMAT": self.log_format}
        self._service("cloud", [python, "-m", "cloud_aggregator"], env, topo.cloud_url)
        for service in [*self.edge_services, self.cloud]:
            service.wait_healthy()
        if self.vehicles:
            fleet = settings_env(topo.fleet(self.vehicles, self.seed))
            self._service(
                "fleet", [python, "-m", "vehicle_client"], fleet, topo.cloud_url, probe="fleet",
                probe_args={"vehicles": self.vehicles},
            ).wait_healthy(timeout=300.0)
        return self

    def save_state(self) -> None:
        if self.state_file is None:
            return
        state = StackState(
            run_dir=self.run_dir, rpc_url=self.rpc_url, blob_store=self.blob_store,
            deployment_file=self.deployment_file, services=[s.record() for s in self.services.values() if s.pid is not None],
        )  # fmt: skip
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        tmp.replace(self.state_file)

    @classmethod
    def attach(cls, state_file: Path) -> "LocalStack":
        """The stack another process started and recorded in ``state_file``."""
        state = StackState.model_validate_json(state_file.read_text())
        services = {r.name: ServiceProcess.from_record(r) for r in state.services}
        edges = sum(name.startswith("edge-") for name in services)
        return cls(
            state.run_dir, edges=edges, blob_store=state.blob_store, state_file=state_file, services=services,
            deployment_file=state.deployment_file,
        )  # fmt: skip

    def stop(self, timeout: float = 15.0) -> dict[str, bool]:
        """Stop every service, the last started first; name → stopped without SIGKILL."""
        stopped = {name: service.stop(timeout) for name, service in reversed(list(self.services.items()))}
        for listener in self.listeners.values():  # a start that failed before every service began
            listener.close()
        self.listeners.clear()
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        return stopped

    def __enter__(self) -> "LocalStack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def wait_settled(cloud_url: str, task_id: int, timeout_s: float = 120) -> dict:
    """The cloud's view of the task once it settled every payee, failed or was cancelled
    (or once ``timeout_s`` passed)."""
    import httpx

    from cloud_aggregator.status import SETTLED

    deadline = time.monotonic() + timeout_s
    while True:
        view = httpx.get(f"{cloud_url}/tasks/{task_id}", timeout=30).json()
        if view["detail"] == SETTLED or view["status"] in ("failed", "cancelled") or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def run_task(stack: LocalStack, fleet: Any, draft: Any, test_set: Any, timeout_s: float = 600) -> tuple[int, dict]:
    """Publish ``draft`` with ``test_set`` from the publisher's key, let ``fleet`` (set up,
    ``vehicle_client.fleet.Fleet``) train until the task ends, and return the task id and
    the cloud's view once every payee is settled."""
    import threading

    from chain.anvil import dev_key
    from launcher.publisher import Publisher
    from service_kit.chain_access import connect

    publisher = Publisher(connect(stack.rpc_url, stack.deployment_file, dev_key(PUBLISHER)), stack.cloud.url)
    task_id = publisher.publish(draft, test_set)["task_id"]
    stop = threading.Event()
    worker = threading.Thread(target=fleet.run, kwargs={"stop_event": stop, "task_ids": [task_id], "show_progress": False})
    worker.start()
    worker.join(timeout_s)
    stop.set()
    return task_id, wait_settled(stack.cloud.url, task_id)
