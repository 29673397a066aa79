"""Read-only auditor: rebuild a task's records, consensus and payouts from chain data
alone (events, the records in ``recordRound`` calldata, views), check every vehicle
signature and the round protocol's order, compare everything with what the contract
credited, and check every model blob recorded on chain against its recorded digest."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict
from web3 import Web3

from bmfl.blobs.errors import BlobError, BlobIntegrityError, BlobNotFoundError, InvalidCIDError
from bmfl.consensus import edge_medians, elect_leader
from bmfl.incentives import Payouts, split_payouts
from bmfl.protocol.signing import SignatureError, update_message, verify
from chain.base import ContractRevert
from chain.deploy import Deployment
from chain.registry import RegistryClient
from chain.tasks import RecordedRound, Status, TaskInfo, TasksClient

if TYPE_CHECKING:
    from chain.reexecute import Reexecution


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


PAYEE_SECTIONS = ("vehicle payout", "block reward", "publisher")
Section = Literal[
    "vehicle payout", "block reward", "publisher", "total", "contribution", "median", "leader", "edge book",
    "signature", "protocol", "spec", "test set", "update", "verdict", "samples", "preliminary", "score", "global",
    "receipt",
]  # fmt: skip


class Comparison(_Frozen):
    """One number re-derived by the auditor next to the chain's; equal within
    ``tolerance`` (fixed-point units of re-executed floating-point results, else 0)."""

    section: Section
    subject: str
    recomputed: int
    on_chain: int
    tolerance: int = 0
    detail: str = ""
    account: str = ""
    """The payee's account (payee sections)."""

    @property
    def ok(self) -> bool:
        return abs(self.recomputed - self.on_chain) <= self.tolerance

    def line(self) -> str:
        """One line naming what differs."""
        within = f" (tolerance {self.tolerance})" if self.tolerance else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.section} {self.subject}: on chain {self.on_chain}, recomputed {self.recomputed}{within}{detail}"


class RecordedBlob(_Frozen):
    """A model blob the chain names: where, its CID and its sha2-256 digest (0x-hex)."""

    source: str
    cid: str
    digest: str


BlobStatus = Literal["ok", "digest_mismatch", "corrupt", "not_found", "unreachable", "invalid_cid", "missing_cid"]


class BlobCheck(_Frozen):
    blob: RecordedBlob
    status: BlobStatus
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class TaskAudit(_Frozen):
    """Everything checked about one task; it passes when every check does."""

    task_id: int
    status: Status
    rounds: int
    escrow: int
    comparisons: list[Comparison]
    blobs: list[BlobCheck]
    reexecuted: bool = False
    notes: list[str] = []

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.comparisons) and all(b.ok for b in self.blobs)


Event = Any
"""A decoded log (:class:`chain.base.ChainEvent`); its fields come from the ABI."""
Consensus = dict[int, tuple[dict[int, int], int]]
"""Finalized round → (median score of every recorded edge, leader)."""


@dataclass(frozen=True)
class TaskLogs:
    """A task's events and records, read once."""

    created: list[Event]
    started: list[Event]
    recorded: list[RecordedRound]
    closed: list[Event]
    scores: list[Event]
    leaders: list[Event]
    no_quorum: list[Event]
    finalized: list[Event]
    voided: list[Event]
    payouts: list[Event]
    finished: list[Event]
    swept: list[Event]
    cancelled: list[Event]


def _hex(digest: str) -> str:
    return "0x" + digest.removeprefix("0x").lower()


class Auditor:
    """Queries a deployment without ever sending a transaction."""

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.tasks = TasksClient(w3, deployment.tasks)
        self.registry = RegistryClient(w3, deployment.registry)
        self.from_block = deployment.block_number
        self._accounts: dict[int, str] = {}

    def vehicle_account(self, vehicle: int) -> str:
        """The account behind vehicle index ``vehicle`` (asked once per vehicle)."""
        if vehicle not in self._accounts:
            self._accounts[vehicle] = self.registry.vehicle_at(vehicle)
        return self._accounts[vehicle]

    def task(self, task_id: int) -> TaskInfo:
        """The task's current state."""
        return self.tasks.task(task_id)

    def logs(self, task_id: int) -> TaskLogs:
        """Every event of the task, and every ``recordRound`` with its records."""
        ev = {n: self.tasks.events(n, self.from_block, taskId=task_id) for n in (
            "TaskCreated", "RoundStarted", "RecordingClosed", "ScoresSubmitted", "LeaderElected", "NoQuorum",
            "RoundFinalized", "RecordVoided", "PayoutCredited", "TaskFinished", "TaskSwept", "TaskCancelled")}  # fmt: skip
        recorded = self.tasks.recorded_rounds(task_id, self.from_block)
        return TaskLogs(ev["TaskCreated"], ev["RoundStarted"], recorded, *(ev[n] for n in list(ev)[2:]))

    # ------------------------------------------------------------ re-derivation

    def _voided(self, logs: TaskLogs) -> set[tuple[int, int, int]]:
        """(edge, round, vehicle) of every record voided on chain."""
        return {(ev.edge, ev.round, ev.vehicle) for ev in logs.voided}

    def contributions(self, task_id: int, logs: TaskLogs | None = None) -> dict[int, dict[int, int]]:
        """C_{m,ℓ} (edge → vehicle → summed θ) from the records in ``recordRound`` calldata,
        without the records voided on chain."""
        logs = logs or self.logs(task_id)
        voided = self._voided(logs)
        out: dict[int, dict[int, int]] = {}
        for recorded in logs.recorded:
            per = out.setdefault(recorded.edge, {})
            for rec in recorded.decoded():
                if (recorded.edge, recorded.round, rec.vehicle) not in voided:
                    per[rec.vehicle] = per.get(rec.vehicle, 0) + rec.theta
        return out

    def consensus(self, task_id: int, logs: TaskLogs | None = None) -> Consensus:
        """Per finalized round with a quorum, every recorded edge's consensus score and the
        leader (``bmfl.consensus.edge_medians`` / ``elect_leader``, the contract's
        ``finalizeRound``), re-derived from the ``ScoresSubmitted`` logs and the records."""
        logs = logs or self.logs(task_id)
        out: Consensus = {}
        for ev in logs.finalized:
            recorded = {x.edge for x in logs.recorded if x.round == ev.round}
            scores = {x.evaluator: x.scores for x in logs.scores if x.round == ev.round}
            medians = edge_medians(scores, recorded) if recorded else None
            if medians is not None:
                out[ev.round] = ({e: medians[e] for e in sorted(recorded)}, elect_leader(medians, recorded))
        return out

    def recompute(self, task_id: int, logs: TaskLogs | None = None) -> Payouts:
        """``bmfl.incentives.split_payouts`` over the re-derived consensus and contributions."""
        logs = logs or self.logs(task_id)
        info = self.task(task_id)
        consensus = self.consensus(task_id, logs)
        leaders = [leader for _, (_, leader) in sorted(consensus.items())]
        contributions = self.contributions(task_id, logs)
        scores: Counter[int] = Counter({e: 0 for e in contributions})
        for medians, _ in consensus.values():
            scores.update(medians)
        return split_payouts(info.escrow, info.block_reward, leaders, dict(scores), contributions)

    # ------------------------------------------------------------ comparisons

    def compare(self, task_id: int, logs: TaskLogs | None = None) -> list[Comparison]:
        """Every re-derived number next to the chain's: vehicle signatures, the round
        protocol's order, contributions and edge books (``edgeBook``), medians and leaders
        (``LeaderElected`` / ``NoQuorum``), block rewards, and once the task is over its
        payouts (credited, or ``payoutFor`` until settled), refund and totals."""
        logs = logs or self.logs(task_id)
        info = self.task(task_id)
        out = self._signatures(task_id, logs) + self._protocol(logs)
        consensus = self.consensus(task_id, logs)
        elected = {ev.round: ev for ev in logs.leaders}
        for ev in logs.finalized:
            mine = consensus.get(ev.round)
            theirs = elected.get(ev.round)
            if mine is None or theirs is None:
                out.append(Comparison(section="leader", subject=f"round {ev.round} has a consensus",
                                      recomputed=int(mine is not None), on_chain=int(theirs is not None)))  # fmt: skip
                continue
            medians, leader = mine
            for e, m in medians.items():
                got = theirs.medians[e] if e < len(theirs.medians) else -1
                out.append(Comparison(section="median", subject=f"round {ev.round} edge {e}", recomputed=m, on_chain=got))
            out.append(Comparison(section="leader", subject=f"round {ev.round}", recomputed=leader, on_chain=theirs.leader))
        out += self._books(task_id, consensus, logs)
        out += self._block_rewards(info, consensus, logs)
        if info.status == Status.FINISHED:
            out += self._payouts(task_id, info, logs)
        elif info.status == Status.CANCELLED:
            refund = info.escrow - len(consensus) * info.block_reward
            refunded = sum(ev.refund for ev in logs.cancelled)
            subject = f"{info.publisher} (refund)"
            out.append(Comparison(section="publisher", subject=subject, recomputed=refund, on_chain=refunded, account=info.publisher))
        return out

    def _signatures(self, task_id: int, logs: TaskLogs) -> list[Comparison]:
        """Every record is signed by its vehicle for this task, its base version (round − τ)
        and edge, or was voided; and no edge counts one vehicle's upload from one base
        version twice (an asynchronous replay, ``challengeReplay``) unless the repeat was voided."""
        chain_id = self.tasks.w3.eth.chain_id
        voided = self._voided(logs)
        edges = {e: self.registry.edge_at(e) for e in {r.edge for r in logs.recorded}}
        seen: set[tuple[int, int, int]] = set()
        out = []
        for recorded in logs.recorded:
            for rec in recorded.decoded():
                base = recorded.round - rec.staleness
                message = update_message(chain_id, task_id, base, edges[recorded.edge], rec.update_digest)
                is_voided = (recorded.edge, recorded.round, rec.vehicle) in voided
                try:
                    verify(message, "0x" + rec.signature.hex(), self.vehicle_account(rec.vehicle))
                    valid = True
                except (SignatureError, ContractRevert):  # an unknown vehicle index reverts
                    valid = is_voided
                subject = f"round {recorded.round} edge {recorded.edge} vehicle {rec.vehicle}"
                out.append(Comparison(section="signature", subject=subject, recomputed=1, on_chain=int(valid)))
                key = (recorded.edge, rec.vehicle, base)
                if key in seen and not is_voided:
                    out.append(Comparison(section="protocol", subject=f"{subject} repeats its upload from version {base}",
                                          recomputed=0, on_chain=1))  # fmt: skip
                seen.add(key)
        return out

    def _protocol(self, logs: TaskLogs) -> list[Comparison]:
        """Every score was submitted after recording closed."""
        closed = {ev.round: (ev.block_number, ev.log_index) for ev in logs.closed}
        out = []
        for ev in logs.scores:
            after = ev.round in closed and (ev.block_number, ev.log_index) > closed[ev.round]
            subject = f"round {ev.round} edge {ev.evaluator} scored after recording closed"
            out.append(Comparison(section="protocol", subject=subject, recomputed=1, on_chain=int(after)))
        return out

    def _books(self, task_id: int, consensus: Consensus, logs: TaskLogs) -> list[Comparison]:
        scores: Counter[int] = Counter()
        led = Counter(leader for _, leader in consensus.values())
        for medians, _ in consensus.values():
            scores.update(medians)
        recorded = Counter(r.edge for r in logs.recorded)
        contributions = self.contributions(task_id, logs)
        out = []
        for e in sorted(set(recorded) | set(led)):
            book = self.tasks.edge_book(task_id, e)
            pairs = {"score sum": (scores[e], book.score_sum), "rounds recorded": (recorded[e], book.rounds_recorded),
                     "rounds led": (led[e], book.rounds_led),
                     "contributions": (sum(contributions.get(e, {}).values()), book.theta_total)}  # fmt: skip
            out += [Comparison(section="edge book", subject=f"edge {e} {name}", recomputed=mine, on_chain=theirs)
                    for name, (mine, theirs) in pairs.items()]  # fmt: skip
        return out

    def _block_rewards(self, info: TaskInfo, consensus: Consensus, logs: TaskLogs) -> list[Comparison]:
        mine: Counter[int] = Counter()
        for _, leader in consensus.values():
            mine[leader] += info.block_reward
        theirs: Counter[int] = Counter()
        for ev in logs.leaders:
            theirs[ev.leader] += ev.blockReward
        accounts = {e: self.registry.edge_at(e) for e in set(mine) | set(theirs)}
        return [
            Comparison(section="block reward", subject=f"edge {e} {accounts[e]}", recomputed=mine[e],
                       on_chain=theirs[e], account=accounts[e])  # fmt: skip
            for e in sorted(accounts)
        ]

    def _payouts(self, task_id: int, info: TaskInfo, logs: TaskLogs) -> list[Comparison]:
        """Each payee's recomputed payout next to its credit (or, before it is settled, the
        contract's ``payoutFor`` of its contribution), the publisher's return and the totals."""
        ref = self.recompute(task_id, logs)
        contributions = self.contributions(task_id, logs)
        credited: Counter[tuple[int, int]] = Counter()
        for ev in logs.payouts:
            credited[(ev.edge, ev.vehicle)] += ev.amount
        out = []
        for e, per in sorted(ref.per_edge.items()):
            for v, amount in sorted(per.items()):
                if contributions[e][v] == 0:
                    continue  # flagged every time: nothing to pay
                settled = (e, v) in credited
                theirs = credited[(e, v)] if settled else self.tasks.payout_for(task_id, e, contributions[e][v])
                state = "credited" if settled else "owed, not settled yet"
                subject = f"vehicle {v} {self.vehicle_account(v)} @ edge {e} ({state})"
                out.append(Comparison(section="vehicle payout", subject=subject, recomputed=amount, on_chain=theirs,
                                      account=self.vehicle_account(v)))  # fmt: skip
        finished = logs.finished[0] if logs.finished else None
        if finished is not None:
            out.append(Comparison(section="total", subject="available", recomputed=ref.available, on_chain=finished.available))
        paid = sum(credited.values())
        out.append(Comparison(section="total", subject="paid to vehicles so far", recomputed=paid, on_chain=info.payouts_paid))
        if info.swept:
            returned = sum(ev.returned for ev in logs.swept)
            out.append(Comparison(section="publisher", subject=f"{info.publisher} (returned)",
                                  recomputed=ref.available - paid, on_chain=returned, account=info.publisher))  # fmt: skip
            everything = paid + sum(ev.blockReward for ev in logs.leaders) + returned
            out.append(Comparison(section="total", subject="escrow = payouts + block rewards + returned",
                                  recomputed=info.escrow, on_chain=everything))  # fmt: skip
        return out

    def balances(self, accounts: set[str]) -> dict[str, tuple[int, int]]:
        """Account → (wei claimed so far, wei credited and not claimed yet), over every task
        (``claim()`` pays an account everything it is owed at once)."""
        out = {}
        for account in sorted(accounts):
            claimed = sum(ev.amount for ev in self.tasks.events("Claimed", self.from_block, account=account))
            out[account] = (claimed, self.tasks.owed(account))
        return out

    # ------------------------------------------------------------ blobs

    def recorded_blobs(self, task_id: int, logs: TaskLogs | None = None) -> list[RecordedBlob]:
        """Every model blob the chain names, in chain order: the initial model
        (``TaskCreated``), each round's global model (``RoundStarted``,
        ``RoundFinalized``) and each edge's preliminary model (``RoundRecorded``)."""
        logs = logs or self.logs(task_id)
        named: list[tuple[Event, str, str, str]] = []
        named += [(ev, "initial model", ev.initialModelCid, ev.initialModelDigest) for ev in logs.created]
        named += [(ev, f"round {ev.round} start", ev.globalCid, ev.globalDigest) for ev in logs.started]
        named += [(ev, f"round {ev.round} global", ev.globalCid, ev.globalDigest) for ev in logs.finalized]
        named.sort(key=lambda n: (n[0].block_number, n[0].log_index))
        named += [(r, f"round {r.round} edge {r.edge} preliminary", r.preliminary_cid, "0x" + r.preliminary_digest.hex())
                  for r in logs.recorded if r.preliminary_cid]  # fmt: skip
        return [RecordedBlob(source=source, cid=cid, digest=_hex(digest)) for _, source, cid, digest in named]

    def check_blobs(self, blobs: list[RecordedBlob], fetch: Callable[[str], bytes]) -> list[BlobCheck]:
        """Fetch each CID once with ``fetch`` (which must verify the bytes against the
        CID, as ``GatewayClient.fetch`` and ``BlobStore.get`` do) and compare the
        bytes' sha2-256 with the digest recorded on chain."""
        fetched: dict[str, bytes | tuple[BlobStatus, str]] = {}
        out = []
        for blob in blobs:
            if not blob.cid:
                out.append(BlobCheck(blob=blob, status="missing_cid", detail="no CID recorded on chain"))
                continue
            if blob.cid not in fetched:
                fetched[blob.cid] = _fetch(fetch, blob.cid)
            got = fetched[blob.cid]
            if isinstance(got, tuple):
                out.append(BlobCheck(blob=blob, status=got[0], detail=got[1]))
                continue
            actual = "0x" + hashlib.sha256(got).hexdigest()
            if actual != blob.digest:
                out.append(BlobCheck(blob=blob, status="digest_mismatch", detail=f"blob sha2-256 is {actual}"))
            else:
                out.append(BlobCheck(blob=blob, status="ok"))
        return out

    def audit(
        self, task_id: int, fetch: Callable[[str], bytes] | None, reexecution: Reexecution | None = None
    ) -> TaskAudit:
        """The full audit of a task: every comparison, every recorded blob (unless
        ``fetch`` is None) and, with ``reexecution``, the re-executed rounds."""
        logs = self.logs(task_id)
        info = self.task(task_id)
        comparisons = self.compare(task_id, logs)
        if reexecution is not None:
            comparisons += reexecution.run(task_id, logs)
        blobs = self.check_blobs(self.recorded_blobs(task_id, logs), fetch) if fetch is not None else []
        return TaskAudit(
            task_id=task_id, status=info.status, rounds=len(logs.finalized), escrow=info.escrow,
            comparisons=comparisons, blobs=blobs, reexecuted=reexecution is not None,
            notes=reexecution.notes if reexecution is not None else [],
        )  # fmt: skip


def _fetch(fetch: Callable[[str], bytes], cid: str) -> bytes | tuple[BlobStatus, str]:
    try:
        return fetch(cid)
    except InvalidCIDError as exc:
        return "invalid_cid", str(exc)
    except BlobIntegrityError as exc:
        return "corrupt", str(exc)
    except BlobNotFoundError:
        return "not_found", f"blob {cid} is not in the store: it was never uploaded there, or was removed"
    except (BlobError, httpx.HTTPError, OSError) as exc:  # not found, gateway down or failing
        return "unreachable", f"{type(exc).__name__}: {exc}"
