"""Launch a local Anvil node (npm ``@foundry-rs/anvil``) on a free port, wait until it
answers, stop it cleanly, and keep its state across restarts via a state file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from chain.json_rpc import KeptAliveRpc

REPO_ROOT = Path(__file__).resolve().parent.parent

# Anvil's default mnemonic: accounts are deterministic and funded on every start.
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"


def dev_key(index: int) -> str:
    """Private key (0x-hex) of account ``index`` of :data:`DEFAULT_MNEMONIC` (BIP-44
    path m/44'/60'/0'/0/index), the keys Anvil funds on start. Local chains only."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEFAULT_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return "0x" + bytes(acct.key).hex()


def find_anvil() -> Path | None:
    """The Anvil binary: ``$BMFL_ANVIL``, the npm package's platform binary, or ``anvil`` on PATH."""
    if env := os.environ.get("BMFL_ANVIL"):
        return Path(env)
    for pkg in sorted((REPO_ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil")):
        if os.access(pkg, os.X_OK):
            return pkg
    found = shutil.which("anvil")
    return Path(found) if found else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rpc(url: str, method: str, params: list[object] | None = None, timeout: float = 2.0) -> object:
    """One JSON-RPC call on its own connection; raises :class:`~chain.json_rpc.NodeUnreachable`
    (an ``OSError``) on transport errors, :class:`~chain.json_rpc.JsonRpcError` on RPC errors."""
    client = KeptAliveRpc(url, timeout)
    try:
        return client.call(method, params or [])
    finally:
        client.close()


class AnvilNode:
    """A local Anvil process; use as a context manager or call :meth:`start` / :meth:`stop`.

    With ``state_path`` the chain is loaded from that file when it exists and dumped to
    it on :meth:`stop`, so a restart keeps contracts, tasks and balances.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        chain_id: int = 31337,
        state_path: Path | None = None,
        accounts: int = 20,
        balance_eth: int = 10_000,
        binary: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.chain_id = chain_id
        self.state_path = state_path
        self.accounts = accounts
        self.balance_eth = balance_eth
        self.binary = binary or find_anvil()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's HTTP JSON-RPC URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> "AnvilNode":
        """Start Anvil and wait until it answers JSON-RPC."""
        if self.binary is None:
            raise FileNotFoundError("no Anvil binary: run `npm ci` (package @foundry-rs/anvil) or set BMFL_ANVIL")
        if self.running:
            return self
        self.port = self.port or free_port(self.host)
        cmd = [
            str(self.binary),
            "--host", self.host,
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.accounts),
            "--balance", str(self.balance_eth),
            "--mnemonic", DEFAULT_MNEMONIC,
            "--silent",
        ]  # fmt: skip
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--state", str(self.state_path)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"anvil exited with {self._proc.returncode}: {err.strip()}")
            try:
                rpc(self.url, "eth_chainId", timeout=0.5)
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"anvil did not answer on {self.url} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Anvil gracefully (SIGINT, which dumps the state file), killing it if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> "AnvilNode":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
