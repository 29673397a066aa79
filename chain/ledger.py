"""Where a task's money went, read from the chain: the escrow, block rewards, payouts,
refunds, each payee's credit with what it has claimed and what is still outstanding, the
gas every transaction of the task cost, and the chain times of its milestones.

Credits are pull payments (``BMFLTasks.owed``, emptied by ``claim()`` across all tasks at
once), so per task a payee's *outstanding* is its credit here capped by what it is owed
now, and *claimed* the rest.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from web3 import Web3

from chain.registry import RegistryClient
from chain.tasks import TasksClient


class PayeeCredit(BaseModel):
    payee: str = Field(description="account credited")
    role: str = Field(description="edge (block rewards and nothing else), vehicle (payouts) or publisher (refund, sweep)")
    credited_wei: int = Field(description="credited by this task")
    claimed_wei: int = Field(description="part of the credit already withdrawn with claim()")
    outstanding_wei: int = Field(description="part of the credit still to claim (bmfl claim)")


class Ledger(BaseModel):
    escrow_wei: int = Field(description="ρ_total, sent with createTask")
    block_rewards_wei: int = Field(description="credited to the rounds' leader edges (ρ_b each)")
    payouts_wei: int = Field(description="credited to vehicles at settlement")
    returned_wei: int = Field(description="credited back to the publisher (cancelTask refund or sweep)")
    escrow_left_wei: int = Field(description="escrow not credited to anyone yet")
    claimed_wei: int
    outstanding_wei: int
    payees: list[PayeeCredit]
    gas_wei: int = Field(description="gas paid by every transaction of this task, by any sender")
    transactions: int = Field(description="transactions of this task (createTask, rounds, scores, settlement …)")


class Milestones(BaseModel):
    escrowed_at: int | None = Field(description="chain time (unix s) of createTask")
    finished_at: int | None = Field(description="chain time of finishTask or cancelTask")
    settle_after: int | None = Field(description="chain time from which payouts can be settled")


class LedgerReader:
    """Reads :class:`Ledger` values; transaction costs and block times are cached (immutable)."""

    def __init__(self, w3: Web3, tasks: TasksClient, registry: RegistryClient, from_block: int = 0) -> None:
        self.w3, self.tasks, self.registry, self.from_block = w3, tasks, registry, from_block
        self._gas: dict[str, int] = {}
        self._times: dict[int, int] = {}
        self._latest: dict[int, tuple[int, Ledger, Milestones]] = {}

    def read(self, task_id: int) -> tuple[Ledger, Milestones]:
        """The task's ledger and milestones, read again only once a new block is mined."""
        block = self.w3.eth.block_number
        cached = self._latest.get(task_id)
        if cached is None or cached[0] != block:
            cached = self._latest[task_id] = (block, self.ledger(task_id), self.milestones(task_id))
        return cached[1], cached[2]

    def _time(self, block: int) -> int:
        if block not in self._times:
            self._times[block] = int(self.w3.eth.get_block(block)["timestamp"])
        return self._times[block]

    def _tx_gas(self, tx_hash: str) -> int:
        if tx_hash not in self._gas:
            receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            self._gas[tx_hash] = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
        return self._gas[tx_hash]

    def _task_tx_hashes(self, task_id: int) -> set[str]:
        """Every transaction that logged an event of ``task_id`` (its id is the first indexed argument)."""
        logs = self.w3.eth.get_logs({
            "address": self.tasks.address, "fromBlock": self.from_block, "toBlock": "latest",
            "topics": [None, "0x" + task_id.to_bytes(32, "big").hex()],
        })  # fmt: skip
        return {"0x" + bytes(log["transactionHash"]).hex() for log in logs}

    def ledger(self, task_id: int) -> Ledger:
        info = self.tasks.task(task_id)
        ev = lambda name: self.tasks.events(name, self.from_block, taskId=task_id)  # noqa: E731
        credits: dict[tuple[str, str], int] = {}
        for e in ev("LeaderElected"):
            key = (self.registry.edge_at(e.leader), "edge")  # type: ignore[attr-defined]
            credits[key] = credits.get(key, 0) + e.blockReward  # type: ignore[attr-defined]
        for e in ev("PayoutCredited"):
            key = (e.payee, "vehicle")  # type: ignore[attr-defined]
            credits[key] = credits.get(key, 0) + e.amount  # type: ignore[attr-defined]
        returned = sum(e.refund for e in ev("TaskCancelled")) + sum(e.returned for e in ev("TaskSwept"))  # type: ignore[attr-defined]
        if returned:
            credits[(info.publisher, "publisher")] = returned
        payees = []
        for (payee, role), credited in sorted(credits.items()):
            outstanding = min(credited, self.tasks.owed(payee))
            payees.append(PayeeCredit(payee=payee, role=role, credited_wei=credited, claimed_wei=credited - outstanding, outstanding_wei=outstanding))
        block_rewards = sum(c for (_, role), c in credits.items() if role == "edge")
        payouts = sum(c for (_, role), c in credits.items() if role == "vehicle")
        hashes = self._task_tx_hashes(task_id)
        return Ledger(
            escrow_wei=info.escrow, block_rewards_wei=block_rewards, payouts_wei=payouts, returned_wei=returned,
            escrow_left_wei=info.escrow - block_rewards - payouts - returned,
            claimed_wei=sum(p.claimed_wei for p in payees), outstanding_wei=sum(p.outstanding_wei for p in payees),
            payees=payees, gas_wei=sum(self._tx_gas(h) for h in hashes), transactions=len(hashes),
        )  # fmt: skip

    def milestones(self, task_id: int) -> Milestones:
        ev = lambda name: self.tasks.events(name, self.from_block, taskId=task_id)  # noqa: E731
        created, finished = ev("TaskCreated"), ev("TaskFinished") or ev("TaskCancelled")
        return Milestones(
            escrowed_at=self._time(created[0].block_number) if created else None,
            finished_at=self._time(finished[0].block_number) if finished else None,
            settle_after=self.tasks.task(task_id).settle_after or None,
        )  # fmt: skip
