"""Re-execution audit (``bmfl audit --reexecute``; docs/security.md, "Re-execution audit"):
with the test set the publisher reveals after the task (its digest is on chain), the
task's spec and every update blob the edges' manifests name, re-run each edge's filter
and aggregation, every cross-evaluation and the cloud's aggregation with the round core
(``bmfl.rounds``) and compare each flag, Λ, θ, sample count, preliminary model, score,
global model and accuracy with what the chain holds. Vehicles' upload receipts prove
omissions: an update an edge acknowledged but did not record.

Floating-point results are compared within :data:`TOLERANCE` fixed-point units
(θ, Λ, scores, accuracy: 1e-5) and models within :data:`MODEL_TOLERANCE` per
coordinate; flags, sample counts, digests and record sets must be equal.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from bmfl.aggregation.dp_fedavg import DpFedAvg, clipped_mean
from bmfl.blobs.codec import decode_state, model_spec
from bmfl.incentives import to_fixed
from bmfl.models import create_model
from bmfl.params import flatten, load_vector
from bmfl.privacy.engine import COUNT_NOISE
from bmfl.protocol.schemas import TaskSpec, UploadReceipt
from bmfl.protocol.signing import SignatureError, receipt_message, recover
from bmfl.protocol.testset import decode_test_set
from bmfl.rounds.standing import task_standings
from bmfl.rounds import (
    EdgeOutcome, Ratchet, aggregate_cloud, close_edge, cloud_rule, cross_scores, guard_cloud, refused_in_a_row,
    server_optimizer, task_edge_rule, task_scorer,
)  # fmt: skip
from bmfl.training import evaluate
from chain.audit import Auditor, Comparison, TaskLogs
from chain.base import ContractRevert
from chain.records import fixed_reliability
from chain.tasks import RecordedRound, TaskParams, round_starts, standings_before, task_params

TOLERANCE = 10
"""Fixed-point units (10⁻⁶) by which a re-executed θ, Λ, score or accuracy may differ."""
MODEL_TOLERANCE = 1e-5
"""Largest difference per coordinate between a re-executed model and the recorded one."""

Fetch = Callable[[str], bytes]


def noise_check(kept: torch.Tensor, reference: torch.Tensor, model: torch.Tensor, clip: float, sigma: float) -> Comparison:
    """A ``dp_fedavg`` model carries secret noise that nobody can re-draw, so it is checked
    statistically: K·(``model`` − the noiseless mean of the K ``kept`` uploads) must look
    like N(0, (σC)²) per coordinate — its root mean square within z = 4 standard errors
    (σC·4/√(2d)) of σC, in 10⁻⁶ units. A model replaced or shifted by more than the noise
    fails, and so does one without noise; a change hidden inside the noise cannot be told
    from it."""
    residual = (model.to(torch.float64) - clipped_mean(kept, reference, clip).to(torch.float64)) * kept.shape[0]
    expected = sigma * clip
    observed = float(residual.pow(2).mean().sqrt())
    tolerance = expected * 4 / math.sqrt(2 * residual.numel())
    return Comparison(section="preliminary", subject="preliminary model noise rms (10⁻⁶)", recomputed=round(observed * 1e6),
                      on_chain=round(expected * 1e6), tolerance=max(1, round(tolerance * 1e6)),
                      detail=f"K·(model − noiseless mean) has rms {observed:.4g}, σC = {expected:.4g}")  # fmt: skip


def read_receipts(paths: Iterable[Any]) -> list[UploadReceipt]:
    """Receipts from JSON-lines files (``vehicle_client`` keeps one per fleet) or folders of them."""
    out = []
    for path in paths:
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        for file in files:
            out += [UploadReceipt.model_validate_json(line) for line in file.read_text().splitlines() if line.strip()]
    return out


@contextmanager
def _deterministic() -> Iterator[None]:
    """One CPU thread and deterministic kernels, as the edges run (``BMFL_EDGE_TORCH_THREADS`` = 1)."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


class Reexecution:
    """Re-runs one task from public data (the chain, the blob store) plus what the
    publisher reveals (``spec``, ``test_set``) and what vehicles hold (``receipts``)."""

    def __init__(self, auditor: Auditor, fetch: Fetch, spec: TaskSpec, test_set: bytes, receipts: list[UploadReceipt]) -> None:
        self.auditor, self.fetch, self.spec, self.test_set_blob, self.receipts = auditor, fetch, spec, test_set, receipts
        self.notes: list[str] = []
        self._models: dict[str, torch.Tensor | None] = {}

    def run(self, task_id: int, logs: TaskLogs) -> list[Comparison]:
        """Every re-executed comparison of the task (the spec and test set first: without
        them nothing else can run)."""
        out = self._spec(task_id, logs) + self._test_set(task_id)
        if not all(c.ok for c in out):
            self.notes.append("re-execution skipped: the spec or the test set does not match the chain")
            return out
        self.test = decode_test_set(self.test_set_blob).to("cpu")
        self.model = create_model(self.spec.model, "cpu")
        with _deterministic():
            self.scorer = task_scorer(self.model, self.test)
            for recorded in logs.recorded:
                out += self._edge(task_id, recorded, logs)
            out += self._scores(logs) + self._globals(logs)
        return out + self._absent(logs) + self._receipts(task_id, logs)

    # ------------------------------------------------------------ inputs

    def _spec(self, task_id: int, logs: TaskLogs) -> list[Comparison]:
        """The spec's on-chain fields equal the ``TaskCreated`` event's."""
        if self.spec.task_id != task_id or not logs.created:
            return [Comparison(section="spec", subject=f"spec names task {self.spec.task_id}", recomputed=task_id, on_chain=self.spec.task_id)]
        created = logs.created[0]
        logged = TaskParams.from_created(created).model_dump() | {"escrow": created.escrow}
        try:
            mine = task_params(self.spec, logged["initial_model_digest"], logged["initial_model_cid"], logged["test_set_digest"])
        except ValueError as exc:
            return [Comparison(section="spec", subject="spec fits createTask", recomputed=1, on_chain=0, detail=str(exc))]
        mine_d = mine.model_dump() | {"escrow": self.spec.reward_wei}
        return [
            Comparison(section="spec", subject=f"field {k}", recomputed=1, on_chain=int(logged[k] == v),
                       detail=f"spec {v!r}, TaskCreated {logged[k]!r}" if logged[k] != v else "")  # fmt: skip
            for k, v in mine_d.items()
        ]

    def _test_set(self, task_id: int) -> list[Comparison]:
        digest = hashlib.sha256(self.test_set_blob).digest()
        on_chain = self.auditor.task(task_id).test_set_digest
        ok = digest == on_chain
        detail = "" if ok else f"revealed sha2-256 0x{digest.hex()}, testSetDigest 0x{on_chain.hex()}"
        return [Comparison(section="test set", subject="revealed test set matches testSetDigest", recomputed=1, on_chain=int(ok), detail=detail)]

    def _vector(self, cid: str) -> torch.Tensor | None:
        """A model blob decoded and flattened (None if it cannot be fetched or decoded)."""
        if cid not in self._models:
            try:
                self._models[cid] = flatten(decode_state(self.fetch(cid), model_spec(self.spec.model))[0])
            except Exception as exc:  # unreachable, corrupt or not a model: reported by the caller
                self.notes.append(f"model {cid}: {type(exc).__name__}: {exc}")
                self._models[cid] = None
        return self._models[cid]

    def _started(self, logs: TaskLogs, round_: int) -> tuple[str, str]:
        ev = [e for e in logs.started if e.round == round_][-1]
        return ev.globalCid, ev.globalDigest.lower()

    # ------------------------------------------------------------ edges

    def _manifest(self, recorded: RecordedRound) -> dict[int, dict[str, Any]] | str:
        """Vehicle → its manifest entry, or why there is none."""
        if not recorded.manifest_cid:
            return "no manifest CID recorded"
        try:
            manifest = json.loads(self.fetch(recorded.manifest_cid))
            entries = {int(u["vehicle"]): u for u in manifest["updates"]}
        except Exception as exc:
            return f"manifest {recorded.manifest_cid}: {type(exc).__name__}: {exc}"
        if (manifest.get("round"), manifest.get("edge")) != (recorded.round, recorded.edge):
            return f"manifest {recorded.manifest_cid} names round {manifest.get('round')} edge {manifest.get('edge')}"
        return entries

    def _edge(self, task_id: int, recorded: RecordedRound, logs: TaskLogs) -> list[Comparison]:
        """One edge-round: each record's update blob by its manifest CID (sha2-256 = the
        signed digest), then ``close_edge`` with the task's rule (``apply_buffer`` from each
        record's base version round − τ in an asynchronous task): flags, Λ, θ·s(τ), samples
        and the preliminary model."""
        where = f"round {recorded.round} edge {recorded.edge}"
        records = {r.vehicle: r for r in recorded.decoded()}
        out: list[Comparison] = []
        manifest = self._manifest(recorded) if records else {}
        if isinstance(manifest, str):
            return [Comparison(section="update", subject=f"{where} manifest", recomputed=1, on_chain=0, detail=manifest)]
        uploads: dict[int, torch.Tensor] = {}
        for v, rec in records.items():
            entry = manifest.get(v)
            vector, detail = None, ""
            if entry is None:
                detail = "not in the edge's manifest"
            else:
                try:
                    blob = self.fetch(str(entry["cid"]))
                except Exception as exc:
                    blob, detail = None, f"update {entry['cid']}: {type(exc).__name__}: {exc}"
                if blob is not None and hashlib.sha256(blob).digest() != rec.update_digest:
                    detail = f"blob {entry['cid']} has sha2-256 0x{hashlib.sha256(blob).hexdigest()}, the record 0x{rec.update_digest.hex()}"
                elif blob is not None:
                    vector = self._vector(str(entry["cid"]))
                    detail = "" if vector is not None else "the blob does not decode as the task's model"
            out.append(Comparison(section="update", subject=f"{where} vehicle {v} blob", recomputed=1, on_chain=int(not detail), detail=detail))
            if vector is not None:
                uploads[v] = vector
        out += [Comparison(section="update", subject=f"{where} vehicle {v} listed in the manifest but not recorded",
                           recomputed=0, on_chain=1) for v in sorted(set(manifest) - set(records))]  # fmt: skip
        if len(uploads) != len(records):
            self.notes.append(f"{where}: not re-executed (an update blob is missing)")
            return out
        reference = self._vector(self._started(logs, recorded.round)[0])
        if reference is None:
            self.notes.append(f"{where}: not re-executed (the round's global model is unavailable)")
            return out
        bases = self._bases(recorded, logs)
        if bases is None:
            self.notes.append(f"{where}: not re-executed (a base version's global model is unavailable)")
            return out
        sizes = {v: self.auditor.registry.vehicle(v).samples for v in uploads}
        refused = refused_in_a_row(round_starts(logs.started, recorded.round))
        rule = task_edge_rule(self.spec.aggregation, self.model, self.test, self.scorer, self.spec.training, COUNT_NOISE,
                              refusals=lambda r: refused)  # fmt: skip
        standing = task_standings(self.spec, standings_before(logs.recorded, recorded.round))
        outcome, thetas = close_edge(rule, uploads, sizes, reference, recorded.round, self.spec.asynchrony, bases, standing)
        for v, rec in records.items():
            verdict = outcome.verdicts[v]
            subject = f"{where} vehicle {v}"
            out += [
                Comparison(section="verdict", subject=f"{subject} flagged", recomputed=int(verdict.flagged), on_chain=int(rec.malicious),
                           detail=f"re-executed: {verdict.reason or 'kept'}" if verdict.flagged != rec.malicious else ""),
                Comparison(section="verdict", subject=f"{subject} θ" + (f"·s(τ = {rec.staleness})" if rec.staleness else ""),
                           recomputed=to_fixed(thetas[v]), on_chain=rec.theta, tolerance=TOLERANCE),
                Comparison(section="verdict", subject=f"{subject} Λ", recomputed=fixed_reliability(verdict.reliability),
                           on_chain=rec.reliability, tolerance=TOLERANCE),
            ]  # fmt: skip
        out.append(Comparison(section="samples", subject=where, recomputed=outcome.samples, on_chain=recorded.samples))
        if self.spec.aggregation.edge.name == "dp_fedavg":
            out.append(self._noisy_model(where, uploads, outcome, reference, recorded.preliminary_cid))
        else:
            out.append(self._model(f"{where} preliminary model", outcome.preliminary, recorded.preliminary_cid))
        return out

    def _bases(self, recorded: RecordedRound, logs: TaskLogs) -> dict[int, tuple[int, torch.Tensor]] | None:
        """Vehicle → (base round = round − τ on chain, that round's global model from its
        ``RoundStarted``); None when a model is unavailable. Empty for a synchronous task."""
        if self.spec.asynchrony.mode == "sync":
            return {}
        out = {}
        for rec in recorded.decoded():
            base = recorded.round - rec.staleness
            model = self._vector(self._started(logs, base)[0])
            if model is None:
                return None
            out[rec.vehicle] = (base, model)
        return out

    def _noisy_model(
        self, where: str, uploads: dict[int, torch.Tensor], outcome: EdgeOutcome, reference: torch.Tensor, cid: str
    ) -> Comparison:
        """A ``dp_fedavg`` edge's model, checked by :func:`noise_check` (its noise is secret)."""
        kept = [uploads[v] for v in sorted(uploads) if not outcome.verdicts[v].flagged]
        theirs = self._vector(cid) if cid else None
        if not kept or theirs is None:
            return self._model(f"{where} preliminary model", outcome.preliminary, cid)
        rule = DpFedAvg(**self.spec.aggregation.edge.options)
        comparison = noise_check(torch.stack(kept), reference, theirs, rule.clip, rule.noise_multiplier)
        return comparison.model_copy(update={"subject": f"{where} {comparison.subject}", "detail": f"{cid}: {comparison.detail}"})

    def _model(self, subject: str, mine: torch.Tensor | None, cid: str) -> Comparison:
        """A re-executed model next to the one recorded under ``cid`` (none: empty CID),
        as the largest coordinate difference in 10⁻⁶ units."""
        if mine is None or not cid:
            return Comparison(section="preliminary" if "preliminary" in subject else "global", subject=f"{subject} exists",
                              recomputed=int(mine is not None), on_chain=int(bool(cid)))  # fmt: skip
        theirs = self._vector(cid)
        section = "preliminary" if "preliminary" in subject else "global"
        if theirs is None:
            return Comparison(section=section, subject=f"{subject} fetchable", recomputed=1, on_chain=0, detail=f"CID {cid}")
        diff = float((mine.to(torch.float64) - theirs.to(torch.float64)).abs().max()) if mine.shape == theirs.shape else math.inf
        units = math.ceil(diff * 1e6) if math.isfinite(diff) else 2**63
        detail = f"{cid} differs from the re-executed model by up to {diff:.3g} per coordinate"
        return Comparison(section=section, subject=f"{subject} largest coordinate difference (10⁻⁶)", recomputed=units,
                          on_chain=0, tolerance=round(MODEL_TOLERANCE * 1e6), detail=detail)  # fmt: skip

    # ------------------------------------------------------------ consensus and cloud

    def _scores(self, logs: TaskLogs) -> list[Comparison]:
        """Each edge's submitted scores of the recorded preliminary models, re-evaluated."""
        out = []
        for r in sorted({ev.round for ev in logs.scores}):
            models = {x.edge: self._vector(x.preliminary_cid) for x in logs.recorded if x.round == r and x.preliminary_cid}
            usable = {e: m for e, m in models.items() if m is not None}
            mine = cross_scores(usable, self.scorer) if usable else {}
            for ev in (e for e in logs.scores if e.round == r):
                for e, theirs in enumerate(ev.scores):
                    if e in models and models[e] is None:
                        continue  # its blob is reported by the blob checks
                    out.append(Comparison(section="score", subject=f"round {r} edge {ev.evaluator} scored edge {e}",
                                          recomputed=mine.get(e, 0), on_chain=theirs, tolerance=TOLERANCE))  # fmt: skip
        return out

    def _globals(self, logs: TaskLogs) -> list[Comparison]:
        """Each finalized global model: ``aggregate_cloud`` over the recorded preliminaries
        (weighted by their recorded samples), then the task's server optimiser, whose
        state is rebuilt round by round from the recorded w^{r−1} and the re-executed
        aggregates, and the task's ratchet, which judges each re-executed w^r by its
        re-evaluated accuracy; and its test-set accuracy."""
        out = []
        server = server_optimizer(self.spec.aggregation, self.spec.rounds)  # its state: a pure function of the rounds before
        tolerance = self.spec.aggregation.ratchet if self.spec.asynchrony.mode == "sync" else None
        ratchet = None if tolerance is None else Ratchet(tolerance)  # the cloud's rollback guard (bmfl.rounds.ratchet)
        stateful = self.spec.aggregation.server.name != "paper" or ratchet is not None
        for ev in sorted(logs.finalized, key=lambda e: e.round):
            r = ev.round
            recorded = [x for x in logs.recorded if x.round == r and x.preliminary_cid]
            models = {x.edge: self._vector(x.preliminary_cid) for x in recorded}
            reference_cid, reference_digest = self._started(logs, r)
            reference = self._vector(reference_cid)
            if reference is None or any(m is None for m in models.values()):
                self.notes.append(f"round {r} global model: not re-executed (a model blob is unavailable)")
                if stateful:
                    state = "ratchet" if ratchet is not None else f"{server.name} state"
                    self.notes.append(f"rounds after {r}: not re-executed (the {state} needs round {r})")
                    break
                continue
            samples = {x.edge: x.samples for x in recorded}
            outcome = aggregate_cloud(cloud_rule(self.spec.aggregation), models, samples, reference, r, server)  # type: ignore[arg-type]
            if outcome is None:
                same = ev.globalDigest.lower() == reference_digest
                out.append(Comparison(section="global", subject=f"round {r} global model is w^(r-1) (no edge carried data)",
                                      recomputed=1, on_chain=int(same)))  # fmt: skip
                accuracy = self._accuracy(reference)
            else:
                accuracy = self._accuracy(outcome.model)
                if ratchet is not None:  # it judges w^r on the test set and may put the best model so far instead
                    outcome = guard_cloud(outcome, accuracy, ratchet, r, server)
                    if outcome.rolled_back_to is not None:
                        accuracy = self._accuracy(outcome.model)
                out.append(self._model(f"round {r} global model", outcome.model, ev.globalCid))
            out.append(Comparison(section="global", subject=f"round {r} accuracy", recomputed=to_fixed(accuracy),
                                  on_chain=ev.accuracy, tolerance=TOLERANCE))  # fmt: skip
        return out

    def _accuracy(self, model: torch.Tensor) -> float:
        """The test-set accuracy of a flat model (0 for a regression task, as the cloud records)."""
        return evaluate(load_vector(self.model, model), self.test).accuracy or 0.0

    # ------------------------------------------------------------ invariants and receipts

    def _absent(self, logs: TaskLogs) -> list[Comparison]:
        """Every edge active when recording closed recorded (``RecordingClosed.absentEdges`` = 0)."""
        return [
            Comparison(section="protocol", subject=f"round {ev.round} edge {e} (active) recorded", recomputed=1, on_chain=0)
            for ev in logs.closed for e in range(ev.absentEdges.bit_length()) if ev.absentEdges >> e & 1
        ]  # fmt: skip

    def _receipts(self, task_id: int, logs: TaskLogs) -> list[Comparison]:
        """Every receipt an edge signed for this task names a record of that edge, round,
        vehicle and digest."""
        chain_id = self.auditor.tasks.w3.eth.chain_id
        recorded = {(x.round, x.edge): {r.vehicle: r.update_digest for r in x.decoded()} for x in logs.recorded}
        registry = self.auditor.registry
        edges = {registry.edge_at(i): i for i in range(registry.edge_count())}  # removed edges included
        out = []
        for receipt in (r for r in self.receipts if r.task_id == task_id):
            try:
                address = self.auditor.vehicle_account(receipt.vehicle)
                digest = bytes.fromhex(receipt.digest.removeprefix("0x"))
                signer = recover(receipt_message(chain_id, task_id, receipt.round, address, digest), receipt.signature)
                edge = edges[signer]
            except (SignatureError, ContractRevert, ValueError, KeyError) as exc:
                self.notes.append(f"receipt of vehicle {receipt.vehicle} round {receipt.round} ignored: not signed by an edge ({exc})")
                continue
            got = recorded.get((receipt.round, edge), {}).get(receipt.vehicle)
            detail = "" if got == digest else ("not recorded" if got is None else f"recorded digest 0x{got.hex()}")
            out.append(Comparison(section="receipt", subject=f"round {receipt.round} edge {edge} vehicle {receipt.vehicle} "
                                  f"acknowledged update {receipt.digest} recorded", recomputed=1, on_chain=int(not detail),
                                  detail=detail))  # fmt: skip
        return out
