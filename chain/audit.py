"""Read-only auditor: rebuild a task's contributions, consensus and payouts from chain
data alone (events and views), check them against what the contract credited, and
check every model blob recorded on chain against its recorded digest."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict
from web3 import Web3

from bmfl.blobs.errors import BlobError, BlobIntegrityError, InvalidCIDError
from bmfl.consensus import edge_medians, elect_leader
from bmfl.incentives import Payouts, mean_accuracy, split_payouts
from chain.deploy import Deployment
from chain.registry import RegistryClient
from chain.tasks import Status, TaskInfo, TasksClient, unpack_records


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class PayoutAudit(_Frozen):
    """Recomputed payouts next to the contract's credits (addresses as keys)."""

    task_id: int
    recomputed: dict[str, int]
    credited: dict[str, int]
    dust: int
    returned: int

    @property
    def agrees(self) -> bool:
        """Whether every credit equals the recomputation, to the wei."""
        return self.recomputed == self.credited and self.dust == self.returned


PAYEE_SECTIONS = ("vehicle payout", "block reward", "publisher")
Section = Literal["vehicle payout", "block reward", "publisher", "total", "contribution", "median", "leader", "edge tally"]


class Comparison(_Frozen):
    """One number re-derived by the auditor next to the chain's."""

    section: Section
    subject: str
    recomputed: int
    on_chain: int

    @property
    def ok(self) -> bool:
        return self.recomputed == self.on_chain


class RecordedBlob(_Frozen):
    """A model blob the chain names: where, its CID and its sha2-256 digest (0x-hex)."""

    source: str
    cid: str
    digest: str


BlobStatus = Literal["ok", "digest_mismatch", "corrupt", "unreachable", "invalid_cid", "missing_cid"]


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

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.comparisons) and all(b.ok for b in self.blobs)


Event = Any
"""A decoded log (:class:`chain.base.ChainEvent`); its fields come from the ABI."""
Consensus = dict[int, tuple[dict[int, int], int]]
"""Finalized round → (median score of every recorded edge, leader)."""


@dataclass(frozen=True)
class TaskLogs:
    """A task's events, read once."""

    created: list[Event]
    started: list[Event]
    recorded: list[Event]
    scores: list[Event]
    leaders: list[Event]
    finalized: list[Event]
    payouts: list[Event]
    finished: list[Event]
    cancelled: list[Event]


def _hex(digest: str) -> str:
    return "0x" + digest.removeprefix("0x").lower()


class Auditor:
    """Queries a deployment without ever sending a transaction."""

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.tasks = TasksClient(w3, deployment.tasks)
        self.registry = RegistryClient(w3, deployment.registry)
        self.from_block = deployment.block_number

    def task(self, task_id: int) -> TaskInfo:
        """The task's current state."""
        return self.tasks.task(task_id)

    def logs(self, task_id: int) -> TaskLogs:
        """Every event of the task."""
        names = ("TaskCreated", "RoundStarted", "RoundRecorded", "ScoresSubmitted", "LeaderElected",
                 "RoundFinalized", "PayoutCredited", "TaskFinished", "TaskCancelled")  # fmt: skip
        return TaskLogs(*(self.tasks.events(n, self.from_block, taskId=task_id) for n in names))

    # ------------------------------------------------------------ re-derivation

    def contributions(self, task_id: int, logs: TaskLogs | None = None) -> dict[int, dict[int, int]]:
        """C_{m,ℓ} (edge → vehicle → summed θ) rebuilt from ``RoundRecorded`` logs."""
        out: dict[int, dict[int, int]] = {}
        for ev in (logs or self.logs(task_id)).recorded:
            per = out.setdefault(ev.edge, {})
            for rec in unpack_records(ev.records):
                per[rec.vehicle] = per.get(rec.vehicle, 0) + (0 if rec.malicious else rec.theta)
        return out

    def consensus(self, task_id: int, logs: TaskLogs | None = None) -> Consensus:
        """Per finalized round, every recorded edge's median score and the leader
        (``bmfl.consensus.edge_medians`` / ``elect_leader``, the contract's ``finalizeRound``),
        re-derived from the ``ScoresSubmitted`` and ``RoundRecorded`` logs."""
        logs = logs or self.logs(task_id)
        out: Consensus = {}
        for ev in logs.leaders:
            recorded = {x.edge for x in logs.recorded if x.round == ev.round}
            scores = {x.evaluator: x.scores for x in logs.scores if x.round == ev.round}
            medians = edge_medians(scores, recorded)
            out[ev.round] = ({e: medians[e] for e in sorted(recorded)}, elect_leader(medians, recorded))
        return out

    def recompute(self, task_id: int, logs: TaskLogs | None = None) -> Payouts:
        """``bmfl.incentives.split_payouts`` over the re-derived consensus and contributions."""
        logs = logs or self.logs(task_id)
        info = self.task(task_id)
        consensus = self.consensus(task_id, logs)
        leaders = [leader for _, (_, leader) in sorted(consensus.items())]
        per_edge: dict[int, list[int]] = {}
        for medians, _ in consensus.values():
            for e, m in medians.items():
                per_edge.setdefault(e, []).append(m)
        accuracy = {e: mean_accuracy(a) for e, a in per_edge.items()}
        return split_payouts(info.escrow, info.block_reward, leaders, accuracy, self.contributions(task_id, logs))

    def audit_payouts(self, task_id: int) -> PayoutAudit:
        """Compare the recomputation with the ``PayoutCredited`` / ``TaskFinished`` logs."""
        logs = self.logs(task_id)
        ref = self.recompute(task_id, logs)
        credited: dict[str, int] = {}
        for ev in logs.payouts:
            credited[ev.payee] = credited.get(ev.payee, 0) + ev.amount
        recomputed = {self.registry.vehicle_at(v): w for v, w in ref.vehicles.items() if w}  # type: ignore[arg-type]
        returned = logs.finished[0].returned if logs.finished else -1
        return PayoutAudit(task_id=task_id, recomputed=recomputed, credited=credited, dust=ref.dust, returned=returned)

    # ------------------------------------------------------------ comparisons

    def compare(self, task_id: int, logs: TaskLogs | None = None) -> list[Comparison]:
        """Every re-derived number next to the chain's: contributions (``contribution``
        view), medians and leaders (``LeaderElected``), edge tallies (``edgeTally``),
        block rewards, and once the task is over its payouts, refund and totals."""
        logs = logs or self.logs(task_id)
        info = self.task(task_id)
        out = [
            Comparison(section="contribution", subject=f"edge {e} vehicle {v}", recomputed=c,
                       on_chain=self.tasks.contribution(task_id, e, v))  # fmt: skip
            for e, per in sorted(self.contributions(task_id, logs).items())
            for v, c in sorted(per.items())
        ]
        consensus = self.consensus(task_id, logs)
        elected = {ev.round: ev for ev in logs.leaders}
        for r, (medians, leader) in sorted(consensus.items()):
            on_chain = elected[r].medians
            for e, m in medians.items():
                theirs = on_chain[e] if e < len(on_chain) else -1
                out.append(Comparison(section="median", subject=f"round {r} edge {e}", recomputed=m, on_chain=theirs))
            out.append(Comparison(section="leader", subject=f"round {r}", recomputed=leader, on_chain=elected[r].leader))
        out += self._tallies(task_id, consensus)
        out += self._block_rewards(info, consensus, logs)
        if info.status == Status.FINISHED:
            out += self._payouts(task_id, info, logs)
        elif info.status == Status.CANCELLED:
            refund = info.escrow - len(consensus) * info.block_reward
            refunded = sum(ev.refund for ev in logs.cancelled)
            subject = f"{info.publisher} (refund)"
            out.append(Comparison(section="publisher", subject=subject, recomputed=refund, on_chain=refunded))
        return out

    def _tallies(self, task_id: int, consensus: Consensus) -> list[Comparison]:
        accuracy: Counter[int] = Counter()
        recorded: Counter[int] = Counter()
        led = Counter(leader for _, leader in consensus.values())
        for medians, _ in consensus.values():
            accuracy.update(medians)
            recorded.update(medians.keys())
        out = []
        for e in sorted(set(recorded) | set(led)):
            tally = self.tasks.edge_tally(task_id, e)
            pairs = {"accuracy sum": (accuracy[e], tally.accuracy_sum), "rounds recorded": (recorded[e], tally.rounds_recorded),
                     "rounds led": (led[e], tally.rounds_led)}  # fmt: skip
            out += [Comparison(section="edge tally", subject=f"edge {e} {name}", recomputed=mine, on_chain=theirs)
                    for name, (mine, theirs) in pairs.items()]  # fmt: skip
        return out

    def _block_rewards(self, info: TaskInfo, consensus: Consensus, logs: TaskLogs) -> list[Comparison]:
        mine: Counter[int] = Counter()
        for _, leader in consensus.values():
            mine[leader] += info.block_reward
        theirs: Counter[int] = Counter()
        for ev in logs.leaders:
            theirs[ev.leader] += ev.blockReward
        return [
            Comparison(section="block reward", subject=f"edge {e} {self.registry.edge_at(e)}", recomputed=mine[e],
                       on_chain=theirs[e])  # fmt: skip
            for e in sorted(set(mine) | set(theirs))
        ]

    def _payouts(self, task_id: int, info: TaskInfo, logs: TaskLogs) -> list[Comparison]:
        ref = self.recompute(task_id, logs)
        credited: Counter[tuple[str, int]] = Counter()
        for ev in logs.payouts:
            credited[(ev.payee, ev.edge)] += ev.amount
        recomputed: dict[tuple[str, int], int] = {}
        labels: dict[str, str] = {}
        for e, per in ref.per_edge.items():
            for v, amount in per.items():
                address = self.registry.vehicle_at(v)  # type: ignore[arg-type]
                labels[address] = f"vehicle {v} {address}"
                if amount:
                    recomputed[(address, e)] = amount  # type: ignore[index]
        payees = sorted(set(recomputed) | set(credited), key=lambda k: (k[1], labels.get(k[0], k[0])))
        out = [
            Comparison(section="vehicle payout", subject=f"{labels.get(a, a)} @ edge {e}",
                       recomputed=recomputed.get((a, e), 0), on_chain=credited[(a, e)])  # fmt: skip
            for a, e in payees
        ]
        finished = logs.finished[0] if logs.finished else None
        returned = finished.returned if finished else -1
        subject = f"{info.publisher} (returned)"
        out.append(Comparison(section="publisher", subject=subject, recomputed=ref.dust, on_chain=returned))
        if finished is not None:
            everything = sum(credited.values()) + sum(ev.blockReward for ev in logs.leaders) + returned
            out += [
                Comparison(section="total", subject="available", recomputed=ref.available, on_chain=finished.available),
                Comparison(section="total", subject="paid to vehicles", recomputed=sum(ref.vehicles.values()),
                           on_chain=finished.paid),  # fmt: skip
                Comparison(section="total", subject="escrow = payouts + block rewards + returned",
                           recomputed=info.escrow, on_chain=everything),  # fmt: skip
            ]
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
        named += [(ev, f"round {ev.round} edge {ev.edge} preliminary", ev.preliminaryCid, ev.preliminaryDigest)
                  for ev in logs.recorded]  # fmt: skip
        named += [(ev, f"round {ev.round} global", ev.globalCid, ev.globalDigest) for ev in logs.finalized]
        named.sort(key=lambda n: (n[0].block_number, n[0].log_index))
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

    def audit(self, task_id: int, fetch: Callable[[str], bytes]) -> TaskAudit:
        """The full audit of a task: every comparison and every recorded blob."""
        logs = self.logs(task_id)
        info = self.task(task_id)
        return TaskAudit(
            task_id=task_id, status=info.status, rounds=len(logs.leaders), escrow=info.escrow,
            comparisons=self.compare(task_id, logs), blobs=self.check_blobs(self.recorded_blobs(task_id, logs), fetch),
        )  # fmt: skip


def _fetch(fetch: Callable[[str], bytes], cid: str) -> bytes | tuple[BlobStatus, str]:
    try:
        return fetch(cid)
    except InvalidCIDError as exc:
        return "invalid_cid", str(exc)
    except BlobIntegrityError as exc:
        return "corrupt", str(exc)
    except (BlobError, httpx.HTTPError, OSError) as exc:  # not found, gateway down or failing
        return "unreachable", f"{type(exc).__name__}: {exc}"
