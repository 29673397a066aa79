"""Settling a finished task from the chain alone: every edge's record log and each
payee's records with their Merkle proofs, sent to ``BMFLTasks.settle`` in pages of a
bounded size (no transaction grows with the number of payees)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from chain.base import ContractRevert, Receipt
from chain.records import record_proofs, record_theta, record_vehicle
from chain.tasks import PayeeClaim, RecordedRound, RoundLog, Status, TasksClient

PAGE_SIZE = 100
"""Payees per ``settle`` transaction: about 60k gas each for a few rounds, far below
Anvil's 2^24 per-transaction cap."""


@dataclass(frozen=True)
class EdgeLog:
    """An edge's ``recordRound`` calls in chain order (its log, ``RoundLog`` by ``RoundLog``)."""

    edge: int
    rounds: list[RecordedRound]

    @property
    def entries(self) -> list[RoundLog]:
        return [r.entry for r in self.rounds]

    def claims(self) -> list[PayeeClaim]:
        """Every vehicle with a θ > 0 record here, with all such records proven."""
        by_vehicle: dict[int, list[tuple[int, int, bytes, list[bytes]]]] = defaultdict(list)
        for index, recorded in enumerate(self.rounds):
            proofs = record_proofs(recorded.records)  # one tree per round, not one per record
            for position, packed in enumerate(recorded.records):
                if record_theta(packed) > 0:
                    by_vehicle[record_vehicle(packed)].append((index, position, packed, proofs[position]))
        return [PayeeClaim(vehicle=v, records=recs) for v, recs in sorted(by_vehicle.items())]


def edge_logs(tasks: TasksClient, task_id: int, from_block: int = 0) -> dict[int, EdgeLog]:
    """Edge index → its record log in ``task_id``."""
    rounds: dict[int, list[RecordedRound]] = defaultdict(list)
    for recorded in tasks.recorded_rounds(task_id, from_block):
        rounds[recorded.edge].append(recorded)
    return {e: EdgeLog(e, rs) for e, rs in sorted(rounds.items())}


def settle_task(tasks: TasksClient, task_id: int, from_block: int = 0, page_size: int = PAGE_SIZE) -> list[Receipt]:
    """Credit every payee of the finished task (pages of ``page_size`` payees per edge). One
    event query finds the payees credited before (an earlier run, or anyone settling part
    of a payee's records); only those are asked whether anything of theirs is left."""
    credited = {(ev.edge, ev.vehicle) for ev in tasks.events("PayoutCredited", from_block, taskId=task_id)}  # type: ignore[attr-defined]
    receipts = []
    for log in edge_logs(tasks, task_id, from_block).values():
        claims = [c for c in log.claims() if not _settled(tasks, task_id, log.edge, c, credited)]
        for start in range(0, len(claims), page_size):
            receipts.append(tasks.settle(task_id, log.edge, log.entries, claims[start : start + page_size]))
    return receipts


def settle_when_open(tasks: TasksClient, task_id: int, from_block: int = 0, page_size: int = PAGE_SIZE) -> list[Receipt] | None:
    """:func:`settle_task`, or ``None`` while the chain's own clock has not passed the
    task's ``settleAfter`` (the contract answers ``SettlementClosed`` to a finished,
    unswept task only then). A caller timing the challenge period by its own clock may be
    early: Anvil, for one, counts from the whole second it started in, so its clock can
    trail the host's by up to a second."""
    try:
        return settle_task(tasks, task_id, from_block, page_size)
    except ContractRevert as exc:
        info = tasks.task(task_id)
        if exc.name == "SettlementClosed" and info.status == Status.FINISHED and not info.swept:
            return None
        raise


def _settled(tasks: TasksClient, task_id: int, edge: int, claim: PayeeClaim, credited: set[tuple[int, int]]) -> bool:
    """Whether every record of ``claim`` is settled already."""
    if (edge, claim.vehicle) not in credited:
        return False
    total = sum(record_theta(packed) for _, _, packed, _ in claim.records)
    return tasks.settled_theta(task_id, edge, claim.vehicle) == total
