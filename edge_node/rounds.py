"""The edge's round steps (docs/architecture.md "One round", steps 2, 4 and 5): select
trainers (``bmfl.rounds.select_trainers``), close (``bmfl.rounds.aggregate_edge``:
filters, robust aggregation, preliminary model and verdicts, then ``recordRound`` with
every update's vehicle signature and a manifest of the round in the blob store), score
every edge's preliminary model (``bmfl.rounds.cross_scores``, ``submitScores``), evaluate
a model. Every algorithm comes from the round core; this module adds HTTP state, blob
storage and chain calls. An edge records every round it opened, with no records when no
update arrived, so that the cloud can close recording before the deadline.

Each step is idempotent: a repeated call returns the stored result, and a step whose
transaction was mined before a crash is recognised from the chain's events (the edge's
own ``RoundRecorded`` / ``ScoresSubmitted``), never sent twice.

Asynchronous tasks (docs/algorithms.md §15): the cloud closes a round once the edge holds
S reports or ``timeout_s`` passed; uploads trained from an older round b enter the open
round t while t − b ≤ τ_max (``edge_node.uploads``), and the close applies the buffer
with the round core's ``apply_buffer`` (deltas rebased on w_t, staleness weights); each
record carries τ and θ·s(τ).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

import torch

from bmfl.blobs.codec import BlobMeta, blob_digest, encode_state
from bmfl.device import default_device
from bmfl.incentives import SCALE, to_fixed
from bmfl.models import create_model
from bmfl.params import flatten, load_vector, unflatten
from bmfl.privacy.engine import COUNT_NOISE
from bmfl.rounds import EdgeOutcome, close_edge, cross_scores, refused_in_a_row, rule_needs, select_trainers, task_edge_rule
from bmfl.rounds.standing import Standings, task_standings
from bmfl.protocol.schemas import (
    EdgeTask,
    EvaluateRequest,
    EvaluateResult,
    RoundClose,
    RoundOpen,
    RoundProgress,
    RoundSelection,
    ScoreRequest,
    ScoreResult,
    TaskSpec,
    TrainerOutcome,
)
from service_kit.logs import task_fields
from service_kit.problems import ProblemError
from bmfl.training import evaluate
from chain.records import TrainerRecord, fixed_reliability
from chain.tasks import Phase, TaskInfo, round_starts, standings_before
from edge_node.node import EdgeNode
from edge_node.state import RoundRow, UpdateRow

log = logging.getLogger("bmfl.edge")
PROGRESS_PHASE = {"open": "open", "closing": "closed", "closed": "closed", "expired": "closed", "scored": "scored"}
NO_DIGEST = b"\x00" * 32
REMEMBERED = frozenset({"evaluate", "test_loss", "training", "count_noise", "refusals"})
"""What an edge rule may take from the round for :meth:`RoundEngine.rehearse` to pay: the
test-set work behind these is remembered by content, the rest is cheap."""


@dataclass(frozen=True)
class Preliminary:
    """What ``recordRound`` carries (``cid`` empty and no records when nothing arrived)."""

    cid: str
    digest: bytes
    samples: int
    records: list[TrainerRecord]
    manifest_cid: str = ""


class RoundEngine:
    """Round steps of one edge, serialized by one lock (they are rare and short)."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node
        self._lock = threading.Lock()
        node.rehearsal = self.rehearse

    # ------------------------------------------------------------ open / progress

    def open(self, task_id: int, round_: int, req: RoundOpen) -> RoundSelection:
        """Select ⌈V·n⌉ matching associated vehicles (seeded, stateless: the same after a crash)."""
        task = self.node.task(task_id)
        with self._lock:
            if self.node.state.round(task_id, round_) is None:
                self._check_global(task_id, round_, req)
                spec = task.spec
                selected = select_trainers(self._candidates(spec), spec.fraction, spec.seed, task_id, round_, self.node.index)
                self.node.state.open_round(task_id, round_, req.global_cid, req.global_digest, sorted(selected))
                self.node.metrics.rounds.labels("open").inc()
                self.node.metrics.round.labels(str(task_id)).set(round_)
                log.info("task %s: round %s opened, trainers %s", task_id, round_, sorted(selected), extra=task_fields(task_id, round_))
                self._prescore(task, req.global_cid)  # α of w^{r-1}, the filter's reference
            row = self._round(task_id, round_)
        return RoundSelection(task_id=task_id, round=round_, edge=self.node.index, selected=row.selected)

    def progress(self, task_id: int, round_: int) -> RoundProgress:
        self.node.task(task_id)
        row = self._round(task_id, round_)
        received = self.node.state.uploaders(task_id, round_)
        return RoundProgress(
            task_id=task_id, round=round_, edge=self.node.index, phase=PROGRESS_PHASE[row.phase],  # type: ignore[arg-type]
            selected=row.selected, received=received,
        )  # fmt: skip

    def _round(self, task_id: int, round_: int) -> RoundRow:
        row = self.node.state.round(task_id, round_)
        if row is None:
            raise ProblemError(404, "unknown_round", f"round {round_} of task {task_id} was not opened here")
        return row

    def _chain_round(self, task_id: int, round_: int, phases: set[Phase], step: str) -> TaskInfo:
        info = self.node.chain.tasks.task(task_id)
        if info.round != round_ or info.phase not in phases:
            detail = f"cannot {step} round {round_}: the chain is at round {info.round}, phase {info.phase.name}"
            raise ProblemError(409, "wrong_phase", detail)
        return info

    def _events(self, name: str, task_id: int, round_: int, **filters: int) -> list:
        tasks = self.node.chain.tasks
        return tasks.events(name, self.node.chain.deployment.block_number, taskId=task_id, round=round_, **filters)

    def _check_global(self, task_id: int, round_: int, req: RoundOpen) -> None:
        """The round is in training on chain and started from the model the cloud names."""
        self._chain_round(task_id, round_, {Phase.TRAINING}, "open")
        started = self._events("RoundStarted", task_id, round_)
        chain_cid, chain_digest = started[-1].globalCid, started[-1].globalDigest  # type: ignore[attr-defined]
        named = (req.global_cid, req.global_digest.lower())
        if named != (chain_cid, chain_digest) or blob_digest(self.node.fetch(chain_cid)).hex0x != chain_digest:
            detail = f"round {round_} started from {chain_cid} ({chain_digest}); the cloud named {named}"
            raise ProblemError(409, "global_mismatch", detail)

    def _candidates(self, spec: TaskSpec) -> list[int]:
        """Associated vehicles, registered now, whose categories match the task's."""
        out = []
        self.node.view.head()  # registrations as of now, remembered for the uploads that follow
        for assoc in self.node.state.associated(self.node.address):
            vehicle = self.node.view.vehicle(assoc.vehicle_index)
            if vehicle.active and vehicle.categories & spec.category:
                out.append(assoc.vehicle_index)
        return out

    # ------------------------------------------------------------ close

    def close(self, task_id: int, round_: int) -> RoundClose:
        """Filter and aggregate the accepted updates, store the preliminary model, record
        the round on chain. (BAFDP would aggregate here after S reports: module docstring.)"""
        task = self.node.task(task_id)
        with self._lock:
            row = self._round(task_id, round_)
            if row.close is not None:
                return RoundClose.model_validate_json(row.close)
            if row.phase == "expired":
                raise ProblemError(409, "wrong_phase", f"round {round_} was superseded by a later round")
            updates = self.node.state.begin_close(task_id, round_)
            with self.node.metrics.close_seconds.time():
                result = self._record(task, round_, row, updates)
            self.node.state.finish_close(task_id, round_, result.model_dump_json())
            if result.preliminary_cid is not None:
                self._prescore(task, result.preliminary_cid)  # every edge scores it next
            self.node.metrics.rounds.labels("close").inc()
            log.info(
                "task %s: round %s closed with %d updates, preliminary %s", task_id, round_, len(updates), result.preliminary_cid,
                extra=task_fields(task_id, round_),
            )  # fmt: skip
        return result

    def _record(self, task: EdgeTask, round_: int, row: RoundRow, updates: list[UpdateRow]) -> RoundClose:
        task_id = task.spec.task_id
        prelim = self._recorded(task_id, round_)
        if prelim is None:
            self._chain_round(task_id, round_, {Phase.TRAINING}, "record")
            prelim = self._aggregate(task.spec, round_, row.global_cid, updates) if updates else Preliminary("", NO_DIGEST, 0, [])
            self.node.transact(
                lambda: self.node.chain.tasks.record_round(
                    task_id, round_, prelim.digest, prelim.cid, prelim.samples, prelim.records, prelim.manifest_cid
                )
            )
        by_vehicle = {u.vehicle: u for u in updates}
        trainers = [
            TrainerOutcome(
                vehicle=r.vehicle, address=by_vehicle[r.vehicle].address, digest="0x" + r.update_digest.hex(),
                reliability=r.reliability / SCALE, theta=r.theta / SCALE, malicious=r.malicious,
                epsilon=by_vehicle[r.vehicle].epsilon, upload_bytes=self.node.blob_size(by_vehicle[r.vehicle].cid),
            )  # fmt: skip
            for r in prelim.records
            if r.vehicle in by_vehicle
        ]
        return RoundClose(
            task_id=task_id, round=round_, edge=self.node.index, recorded=True, preliminary_cid=prelim.cid or None,
            preliminary_digest="0x" + prelim.digest.hex() if prelim.cid else None, samples=prelim.samples,
            trainers=trainers,
        )  # fmt: skip

    def _recorded(self, task_id: int, round_: int) -> Preliminary | None:
        """This edge's ``recordRound`` of the round, if it was mined already."""
        mined = self.node.chain.tasks.recorded_rounds(
            task_id, self.node.chain.deployment.block_number, round=round_, edge=self.node.index
        )
        if not mined:
            return None
        ev = mined[-1]
        return Preliminary(ev.preliminary_cid, ev.preliminary_digest, ev.samples, ev.decoded(), ev.manifest_cid)

    def rehearse(self, task_id: int, round_: int) -> None:
        """Once every trainer of an open synchronous round has uploaded here, run the
        close's rule on their updates in the background (``edge_node.scoring``), when the
        rule's test-set work is all remembered (accuracies and per-example losses: not
        FLTrust's root update or the per-class directions); the close then reads it back."""
        spec = self.node.task(task_id).spec
        if spec.asynchrony.mode == "async" or not rule_needs(spec.aggregation) <= REMEMBERED:
            return
        row = self.node.state.round(task_id, round_)
        if row is None or row.phase != "open" or self.node.state.update_count(task_id, round_) < len(row.selected):
            return  # every accepted upload asks: the rows are read only once they can cover the trainers
        updates = self.node.state.updates(task_id, round_)
        if {u.vehicle for u in updates} >= set(row.selected):
            self.node.rehearse(lambda: self._still_open(task_id, round_) and self._outcome(spec, round_, row.global_cid, updates))

    def _still_open(self, task_id: int, round_: int) -> bool:
        """A rehearsal queued behind others is dropped once its round has closed."""
        row = self.node.state.round(task_id, round_)
        return row is not None and row.phase == "open"

    def _outcome(
        self, spec: TaskSpec, round_: int, global_cid: str, updates: list[UpdateRow]
    ) -> tuple[EdgeOutcome, dict[int, float], dict, dict[int, int]]:
        """The round core's edge step (``bmfl.rounds.close_edge``) over ``updates``: its
        outcome, θ per vehicle, the state w^{r-1} and the declared sizes."""
        reference_state, _ = self.node.decode(self.node.fetch(global_cid), spec.model)
        reference = flatten(reference_state)
        uploads = {u.vehicle: flatten(self.node.decode(self.node.fetch(u.cid), spec.model)[0]) for u in updates}
        self.node.view.head()  # the registrations as of now: read once, then remembered until the registry logs
        sizes = {u.vehicle: self.node.view.vehicle(u.vehicle).samples for u in updates}
        test_set = self.node.test_set(spec.task_id)
        refused = 0  # rounds are refused only behind the cloud's guard: no chain read for the others
        if spec.aggregation.ratchet is not None:
            started = self.node.chain.tasks.events("RoundStarted", self.node.chain.deployment.block_number, taskId=spec.task_id)
            refused = refused_in_a_row(round_starts(started, round_))
        rule = task_edge_rule(
            spec.aggregation, create_model(spec.model, default_device()), test_set, self.node.scorer(spec.task_id),
            spec.training, COUNT_NOISE, refusals=lambda r: refused, test_loss=self.node.test_loss(spec.task_id),
        )  # fmt: skip
        bases = self._bases(spec, updates) if spec.asynchrony.mode == "async" else {}
        outcome, thetas = close_edge(rule, uploads, sizes, reference, round_, spec.asynchrony, bases, self._standings(spec, round_))
        return outcome, thetas, reference_state, sizes

    def _standings(self, spec: TaskSpec, round_: int) -> Standings | None:
        """The vehicles' standings in the task before ``round_``, from every edge's earlier
        records on chain (their Λ; ``bmfl.rounds.standing``), where the task keeps them."""
        if task_standings(spec, {}) is None:
            return None
        chain = self.node.chain
        recorded = chain.tasks.recorded_rounds(spec.task_id, chain.deployment.block_number)
        return task_standings(spec, standings_before(recorded, round_))

    def _aggregate(self, spec: TaskSpec, round_: int, global_cid: str, updates: list[UpdateRow]) -> Preliminary:
        """:meth:`_outcome`; the preliminary model (none when the rule cannot run: every
        update is then recorded flagged, none is left out) and the round's manifest go to
        the blob store."""
        outcome, thetas, reference_state, sizes = self._outcome(spec, round_, global_cid, updates)
        by_vehicle = {u.vehicle: u for u in updates}
        records = [
            TrainerRecord(
                vehicle=v, update_digest=bytes.fromhex(by_vehicle[v].digest.removeprefix("0x")),
                reliability=fixed_reliability(verdict.reliability), theta=to_fixed(thetas[v]),
                malicious=verdict.flagged, signature=bytes.fromhex(by_vehicle[v].signature.removeprefix("0x")),
                staleness=round_ - by_vehicle[v].base,
            )  # fmt: skip
            for v, verdict in outcome.verdicts.items()
        ]
        cid, digest = "", NO_DIGEST
        if outcome.preliminary is not None:
            meta = BlobMeta(task=str(spec.task_id), round=round_, producer=self.node.address, model=spec.model)
            blob = encode_state(unflatten(outcome.preliminary.cpu(), reference_state), meta)
            cid, digest = self.node.store.put(blob, pin=True), blob_digest(blob).raw
        manifest = {
            "task": spec.task_id, "round": round_, "edge": self.node.index, "global_cid": global_cid,
            "preliminary_cid": cid, "samples": outcome.samples, "user_level_epsilon": outcome.user_level_epsilon,
            "updates": [
                {
                    "vehicle": v, "address": by_vehicle[v].address, "cid": by_vehicle[v].cid,
                    "digest": by_vehicle[v].digest, "size": sizes[v], "reason": verdict.reason, "base": by_vehicle[v].base,
                }
                for v, verdict in outcome.verdicts.items()
            ],
        }  # fmt: skip
        manifest_cid = self.node.store.put(json.dumps(manifest, sort_keys=True).encode(), pin=True)
        return Preliminary(cid, digest, outcome.samples, records, manifest_cid)

    def _bases(self, spec: TaskSpec, updates: list[UpdateRow]) -> dict[int, tuple[int, torch.Tensor]]:
        """Vehicle → (base round, the global model that round started from)."""
        models = {}
        for base in {u.base for u in updates}:
            cid = self._round(spec.task_id, base).global_cid
            models[base] = flatten(self.node.decode(self.node.fetch(cid), spec.model)[0])
        return {u.vehicle: (u.base, models[u.base]) for u in updates}

    def _prescore(self, task: EdgeTask, cid: str) -> None:
        """Score the stored model ``cid`` on the test set in the background."""
        model = task.spec.model
        self.node.prescore(task.spec.task_id, lambda: flatten(self.node.decode(self.node.fetch(cid), model)[0]))

    # ------------------------------------------------------------ scores / evaluate

    def scores(self, task_id: int, round_: int, req: ScoreRequest) -> ScoreResult:
        """Score every recorded edge's preliminary model on the test set; ``submitScores``."""
        task = self.node.task(task_id)
        with self._lock:
            row = self._round(task_id, round_)
            if row.scores is not None:
                return ScoreResult.model_validate_json(row.scores)
            if row.close is None:
                raise ProblemError(409, "not_recorded", f"this edge has not recorded round {round_}")
            submitted = self._events("ScoresSubmitted", task_id, round_, evaluator=self.node.index)
            if submitted:
                fixed = list(submitted[-1].scores)  # type: ignore[attr-defined]
            else:
                info = self._chain_round(task_id, round_, {Phase.SCORING}, "score")
                fixed = self._score(task, round_, req, info.recorded_edges)
                self.node.transact(lambda: self.node.chain.tasks.submit_scores(task_id, fixed))
            result = ScoreResult(edge=self.node.index, scores=[s / SCALE for s in fixed])
            self.node.state.finish_scores(task_id, round_, result.model_dump_json())
            self.node.metrics.rounds.labels("scores").inc()
        return result

    def _score(self, task: EdgeTask, round_: int, req: ScoreRequest, recorded_edges: int) -> list[int]:
        """Fixed-point scores indexed by edge (0 where no preliminary model was recorded). The
        CIDs come from the chain's ``RoundRecorded``; the request's must agree where it names one."""
        spec = task.spec
        models = {}
        for ev in self._events("RoundRecorded", spec.task_id, round_):
            edge, cid, digest = ev.edge, ev.preliminaryCid, ev.preliminaryDigest.lower()  # type: ignore[attr-defined]
            if not cid:
                continue  # an empty record
            claimed = req.preliminaries.get(edge, cid)
            blob = self.node.fetch(cid)
            if claimed != cid or blob_digest(blob).hex0x != digest:
                raise ProblemError(422, "preliminary_mismatch", f"edge {edge} recorded {cid} ({digest}), got {claimed}")
            models[edge] = flatten(self.node.decode(blob, spec.model)[0])
        accuracies = cross_scores(models, self.node.scorer(spec.task_id))
        return [accuracies.get(e, 0) for e in range(recorded_edges.bit_length())]

    def evaluate(self, task_id: int, req: EvaluateRequest) -> EvaluateResult:
        """A model's accuracy and loss on the task's test set."""
        spec = self.node.task(task_id).spec
        vector = flatten(self.node.decode(self.node.fetch(req.cid), spec.model)[0])
        model = load_vector(create_model(spec.model, default_device()), vector)
        result = evaluate(model, self.node.test_set(task_id))
        return EvaluateResult(edge=self.node.index, accuracy=result.accuracy, loss=result.loss)
