"""The chain as the upload checks see it: a fresh head per request, shared by the
requests that arrive together, and the tasks' and vehicles' on-chain state remembered
from head to head until a log of their contract says it may have changed.

Each request waits for a head read that *began after it arrived* (one read serves every
request waiting for it), so its deadline check sees chain time no older than today's
per-request read did. A remembered value stays valid exactly while no new block carries
a log of its contract: every change of a task's status, round, phase or deadline emits a
``BMFLTasks`` event, and every change of a vehicle's registration a ``BMFLRegistry`` one
(``contracts/src``). Each new head is checked against the last one: a child of it has its
own logs read (by block hash); a gap or a different parent (reorganisation) drops
everything remembered.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from hexbytes import HexBytes

from chain.json_rpc import JsonRpcError, KeptAliveRpc
from chain.registry import VehicleInfo
from chain.tasks import TaskInfo
from service_kit.chain_access import ChainAccess


@dataclass(frozen=True)
class Head:
    number: int
    hash: bytes
    parent: bytes
    timestamp: int


class ChainView:
    """Thread-safe; ``head()`` first, then ``task`` / ``is_active_vehicle`` as of that head or newer."""

    def __init__(self, chain: ChainAccess) -> None:
        self._chain = chain
        self._cond = threading.Condition()
        self._started = self._done = 0  # head reads begun / finished
        self._reading = False
        self._last: tuple[Head | None, BaseException | None] = (None, None)
        self._synced: Head | None = None  # the remembered values hold at this head
        self._tasks: dict[int, TaskInfo] = {}
        self._vehicles: dict[int, VehicleInfo] = {}
        self._epochs = [0, 0]  # bumped when the tasks' / the vehicles' values are dropped
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="chain-head")
        self._rpc = KeptAliveRpc(chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]  # one head read at a time

    def head_soon(self) -> Future[Head]:
        """:meth:`head` in a background thread (the caller does other work meanwhile)."""
        return self._pool.submit(self.head)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._rpc.close()

    def head(self) -> Head:
        """The latest block, read after this call began."""
        with self._cond:
            need = self._started + 1
            while self._done < need:
                if self._reading:
                    self._cond.wait()
                    continue
                self._reading, self._started = True, self._started + 1
                read = self._started
                self._cond.release()
                try:
                    result: tuple[Head | None, BaseException | None] = (self._advance(), None)
                except Exception as exc:
                    result = (None, exc)
                finally:
                    self._cond.acquire()
                    self._reading, self._done = False, read
                    self._cond.notify_all()
                self._last = result
            head, error = self._last
        if error is not None:
            raise error
        assert head is not None
        return head

    def _advance(self) -> Head:
        """Read the head; forget what the logs since the synced head may have changed."""
        block = self._rpc.call("eth_getBlockByNumber", ["latest", False])  # raw: web3 costs more than the call
        if not isinstance(block, dict):
            raise JsonRpcError(f"eth_getBlockByNumber answered {str(block)[:200]}")
        head = Head(int(block["number"], 16), HexBytes(block["hash"]), HexBytes(block["parentHash"]), int(block["timestamp"], 16))
        synced = self._synced
        if synced is not None and head.hash == synced.hash:
            return head
        drop = [True, True]
        if synced is not None and head.number == synced.number + 1 and head.parent == synced.hash:
            logs = self._chain.w3.eth.get_logs({"blockHash": HexBytes(head.hash)})
            emitters = {log["address"] for log in logs}
            drop = [self._chain.tasks.address in emitters, self._chain.registry.address in emitters]
        with self._cond:
            for i, memo in enumerate((self._tasks, self._vehicles)):
                if drop[i]:
                    memo.clear()
                    self._epochs[i] += 1
            self._synced = head
        return head

    def _remembered(self, i: int, memo: dict, key: int, read) -> object:  # type: ignore[type-arg]
        with self._cond:
            if key in memo:
                return memo[key]
            epoch, synced = self._epochs[i], self._synced
        assert synced is not None, "head() first"
        value = read(key, synced.number)
        with self._cond:
            if self._epochs[i] == epoch:  # no log since `synced`: the value holds at the newest head
                memo[key] = value
        return value

    def task(self, task_id: int) -> TaskInfo:
        """The task's on-chain state at the last head read or later."""
        return self._remembered(0, self._tasks, task_id, self._chain.tasks.task)  # type: ignore[return-value]

    def is_active_vehicle(self, index: int) -> bool:
        """Whether vehicle ``index`` is registered, at the last head read or later (the
        registry sets and clears its ``active`` flag with the bit ``isActiveVehicle`` reads)."""
        return self.vehicle(index).active

    def vehicle(self, index: int) -> VehicleInfo:
        """Vehicle ``index``'s registration, at the last head read or later: read once
        (opening a round reads every candidate's, the close every trainer's size, each
        upload its sender's) until a block carries a log of the registry."""
        return self._remembered(1, self._vehicles, index, self._chain.registry.vehicle)  # type: ignore[return-value]
