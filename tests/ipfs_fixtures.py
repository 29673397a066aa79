"""A real IPFS node for the blob tests: js-ipfs (npm ``ipfs`` 0.66.1) started by
``scripts/ipfs-node.cjs`` with its Kubo-compatible RPC API and its gateway on free
127.0.0.1 ports, a temporary repo, no swarm transports and libp2p never started.

Skips (reason ``missing tool: ipfs …``) only when Node.js or the npm package is absent;
a node that is installed but does not come up fails the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
LAUNCHER = SCRIPTS / "ipfs-node.cjs"
POLYFILL = SCRIPTS / "promise-with-resolvers.cjs"
IPFS_VERSION = "0.66.1"
START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class IpfsNode:
    """A running node: RPC API and gateway base URLs, and its repo directory."""

    api: str
    gateway: str
    repo: Path
    pid: int


def missing_ipfs() -> str | None:
    """Why the node cannot run here (a ``missing tool: ipfs`` reason), or None."""
    if shutil.which("node") is None:
        return "missing tool: ipfs (no `node` on PATH; install Node.js 20+)"
    package = REPO_ROOT / "node_modules" / "ipfs" / "package.json"
    if not package.is_file() or not (REPO_ROOT / "node_modules" / "ipfs-daemon").is_dir():
        return "missing tool: ipfs (npm package `ipfs` not installed: run `make setup` / `npm ci --ignore-scripts`)"
    version = json.loads(package.read_text()).get("version")
    if version != IPFS_VERSION:
        return f"missing tool: ipfs {IPFS_VERSION} (node_modules has {version}: run `npm ci --ignore-scripts`)"
    return None


def _read_ready_line(proc: subprocess.Popen[bytes], out: Path, deadline: float) -> dict:
    """The launcher's JSON line ({"api", "gateway", "peer"}) from its stdout file."""
    while time.monotonic() < deadline and proc.poll() is None:
        for line in out.read_bytes().splitlines():
            if line.startswith(b"{") and line.endswith(b"}"):
                return json.loads(line)
        time.sleep(0.1)
    raise RuntimeError(f"ipfs node gave no address line (exit {proc.poll()}); stdout {out.read_bytes()[-500:]!r}")


def _wait_for_api(api: str, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        try:
            reply = httpx.post(f"{api}/api/v0/id", timeout=5.0)
            if reply.status_code == 200 and reply.json().get("ID"):
                return
            last = f"HTTP {reply.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"ipfs node API {api} did not answer /api/v0/id ({last})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def start_ipfs_node(repo: Path, out: Path, log: Path) -> tuple[IpfsNode, subprocess.Popen[bytes]]:
    """Start the launcher in its own process group; returns once the API answers.

    Its stdout (the address line) goes to ``out``, its stderr to ``log``.
    """
    command = ["node", "--require", str(POLYFILL), str(LAUNCHER), "--repo", str(repo)]
    with out.open("wb") as stdout, log.open("wb") as stderr:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            start_new_session=True, env={**os.environ, "IPFS_PATH": str(repo)},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        info = _read_ready_line(proc, out, deadline)
        _wait_for_api(info["api"], deadline)
    except BaseException as exc:
        _stop(proc)
        if isinstance(exc, RuntimeError):
            raise RuntimeError(f"{exc}\n--- node stderr ---\n{log.read_text(errors='replace')[-3000:]}") from None
        raise
    return IpfsNode(info["api"], info["gateway"], repo, proc.pid), proc


@pytest.fixture(scope="module")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    """One real IPFS node per test module (stopped with its whole process group)."""
    if reason := missing_ipfs():
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("ipfs")
    node, proc = start_ipfs_node(base / "repo", base / "node.out", base / "node.log")
    try:
        yield node
    finally:
        _stop(proc)
