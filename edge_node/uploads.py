"""Accepting a vehicle's signed update: every check of ``docs/protocol.md`` in its order;
nothing is written unless all pass, and the update is committed before the receipt.
(Human-readable ``detail`` texts are marked ``pragma: no mutate``: tests assert the
status and ``reason``, which are the contract with clients.)"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Generic, TypeVar

import torch

from bmfl.blobs.codec import Digest, blob_digest
from bmfl.params import flatten
from bmfl.rounds import scores_uploads
from bmfl.protocol.schemas import TaskSpec, UploadReceipt
from bmfl.protocol.signing import SignatureError, checksum_address, receipt_message, sign, update_message, verify
from service_kit.problems import ProblemError
from chain.tasks import Phase, Status
from edge_node.chain_view import Head
from edge_node.node import EdgeNode
from edge_node.state import RoundRow, UpdateRow


T = TypeVar("T")
State = OrderedDict[str, torch.Tensor]


@dataclass(frozen=True)
class Upload:
    """The multipart form of ``POST /tasks/{id}/rounds/{r}/updates``."""

    vehicle: str
    signature: str | None
    epsilon: float | None
    blob: BinaryIO | None
    cid: str | None


def _read_blob(node: EdgeNode, upload: Upload) -> bytes:
    """The update's bytes, from the form or the blob store; 413 ``too_large`` over the limit."""
    limit = node.settings.max_update_bytes
    if (upload.blob is None) == (upload.cid is None):
        detail = "give exactly one of the file blob or the field cid"  # pragma: no mutate
        raise ProblemError(422, "invalid_request", detail)
    if upload.blob is not None:
        data = upload.blob.read(limit + 1)
        size = len(data)
    else:
        size = node.blob_size(upload.cid)  # type: ignore[arg-type]
        data = node.fetch(upload.cid) if size <= limit else b""  # type: ignore[arg-type]
    if size > limit:
        detail = f"{size} bytes > the {limit}-byte limit"  # pragma: no mutate
        raise ProblemError(413, "too_large", detail)
    return data


def _check_chain_round(node: EdgeNode, task_id: int, round_: int, head: Head) -> None:
    """The chain still takes records of the round: task active, round training, deadline
    ahead (at ``head``, read after the request arrived; the task's state as of it or newer)."""
    info = node.view.task(task_id)
    if (info.status, info.round, info.phase) != (Status.ACTIVE, round_, Phase.TRAINING):
        state = f"{info.status.name.lower()} at round {info.round}, phase {info.phase.name.lower()}"  # pragma: no mutate
        detail = f"on chain, task {task_id} is {state}"  # pragma: no mutate
        raise ProblemError(409, "round_not_open", detail)
    if head.timestamp > info.deadline:
        detail = f"round {round_} ended on chain at {info.deadline} (chain time {head.timestamp})"  # pragma: no mutate
        raise ProblemError(409, "deadline_passed", detail)


def _check_signature(node: EdgeNode, task_id: int, round_: int, upload: Upload, digest: Digest) -> None:
    if not upload.signature:
        detail = "the update carries no signature"  # pragma: no mutate
        raise ProblemError(401, "unsigned", detail)
    message = update_message(node.chain_id, task_id, round_, node.address, digest.raw)
    try:
        verify(message, upload.signature, checksum_address(upload.vehicle))
    except SignatureError as exc:
        raise ProblemError(401, "bad_signature", str(exc)) from None


def _decode(node: EdgeNode, task_id: int, round_: int, model: str, data: bytes) -> State:
    decoded, meta = node.decode(data, model, node.settings.max_update_bytes)
    if (meta.task, meta.round) != (str(task_id), round_):
        detail = f"blob is for task {meta.task!r} round {meta.round}, not task {task_id} round {round_}"  # pragma: no mutate
        raise ProblemError(422, "wrong_round", detail)
    return decoded


class _Deferred(Generic[T]):
    """A check run early, its answer (or its problem) given at the check's turn."""

    def __init__(self, check: Callable[[], T]) -> None:
        self.value: T | None = None
        self.problem: ProblemError | None = None
        try:
            self.value = check()
        except ProblemError as exc:
            self.problem = exc

    def result(self) -> T:
        if self.problem is not None:
            raise self.problem
        return self.value  # type: ignore[return-value]


def _intake_round(node: EdgeNode, spec: TaskSpec, base: int) -> RoundRow:
    """The open round that takes an update trained from round ``base``: ``base`` itself,
    or in an asynchronous task the newest open round t once ``base`` closed, with
    τ = t − ``base`` ≤ τ_max (docs/algorithms.md §15; beyond: 409 ``stale``)."""
    row = node.state.round(spec.task_id, base)
    latest = node.state.latest_round(spec.task_id) if spec.asynchrony.mode == "async" and row is not None else None
    if latest is not None and latest.round > base:
        if latest.round - base > spec.asynchrony.tau_max:
            detail = f"trained from round {base}, {latest.round - base} versions behind round {latest.round}: τ_max is {spec.asynchrony.tau_max}"  # pragma: no mutate
            raise ProblemError(409, "stale", detail)
        row = latest
    if row is None or row.phase != "open":
        detail = f"round {base} of task {spec.task_id} is not open at this edge"  # pragma: no mutate
        raise ProblemError(409, "round_not_open", detail)
    return row


def accept_update(node: EdgeNode, task_id: int, round_: int, upload: Upload) -> tuple[UploadReceipt, str]:
    """Check and persist one update trained from round ``round_`` (its base version, which
    the vehicle signs): its receipt and ``"accepted"``, or ``"resent"`` for the same update
    sent again (stored before: nothing is written); raises :class:`ProblemError` with the
    first failed check, in the order of docs/protocol.md. It enters :func:`_intake_round`.
    The chain's head is read while the update itself is read, and, for a vehicle this edge
    already knows as a trainer of the round, while its signature and blob are checked:
    those answers wait for their turn."""
    node.update_arrived()
    spec = node.task(task_id).spec
    row = _intake_round(node, spec, round_)
    trainers = row.selected if row.round == round_ else node.state.round(task_id, round_).selected  # type: ignore[union-attr]
    head = node.view.head_soon()
    data = _Deferred(lambda: _read_blob(node, upload))
    digest = blob_digest(data.value) if data.value is not None else None
    signed = decoded = None
    if digest is not None and node.known_index(upload.vehicle) in trainers:
        signed = _Deferred(lambda: _check_signature(node, task_id, round_, upload, digest))
        decoded = _Deferred(lambda: _decode(node, task_id, round_, spec.model, data.value))  # type: ignore[arg-type]
    _check_chain_round(node, task_id, row.round, head.result())
    blob = data.result()
    digest = digest or blob_digest(blob)
    vehicle = node.vehicle_index(upload.vehicle, fresh=False)
    address = checksum_address(upload.vehicle)
    if vehicle not in trainers:
        detail = f"vehicle {vehicle} is not a trainer of round {round_}"  # pragma: no mutate
        raise ProblemError(403, "not_selected", detail)
    (signed or _Deferred(lambda: _check_signature(node, task_id, round_, upload, digest))).result()
    if (stored := node.state.update_of(task_id, row.round, vehicle, round_)) is not None:
        return _sent_again(node, stored, round_, digest), "resent"
    state = (decoded or _Deferred(lambda: _decode(node, task_id, round_, spec.model, blob))).result()
    if upload.cid is None:
        cid = node.store.put(blob, pin=True)
    else:
        cid = upload.cid
        node.store.pin(cid)
    update = UpdateRow(task_id, row.round, vehicle, address, digest.hex0x, cid, upload.epsilon, upload.signature, round_)  # type: ignore[arg-type]
    refused = node.state.add_update(update)
    if refused == "duplicate" and (stored := node.state.update_of(task_id, row.round, vehicle, round_)) is not None:
        return _sent_again(node, stored, round_, digest), "resent"  # a twin of this upload was committed meanwhile
    if refused is not None:  # the round closed while this one was checked
        detail = f"vehicle {vehicle}, round {row.round}: {refused}"  # pragma: no mutate
        raise ProblemError(409, refused, detail)
    if scores_uploads(spec.aggregation, spec.training):  # α for the filter at close
        node.prescore(task_id, lambda: flatten(state))
    node.rehearsal(task_id, row.round)  # the close's work, once every trainer is in
    return _receipt(node, update), "accepted"


def _receipt(node: EdgeNode, update: UpdateRow) -> UploadReceipt:
    """The edge's signed promise to record ``update`` (``receipt_message``)."""
    message = receipt_message(node.chain_id, update.task_id, update.round, update.address, bytes.fromhex(update.digest[2:]))
    return UploadReceipt(
        task_id=update.task_id, round=update.round, vehicle=update.vehicle, digest=update.digest, cid=update.cid,
        signature=sign(node.chain.account, message),
    )  # fmt: skip


def _sent_again(node: EdgeNode, stored: UpdateRow, base: int, digest: Digest) -> UploadReceipt:
    """The receipt of ``stored`` when this upload is the same update sent again (same base
    and blob, signed by the vehicle: a re-send after a lost reply), else 409 ``duplicate``:
    a vehicle uploads once per round and once per base, and cannot replace its update."""
    if stored.base != base or stored.digest != digest.hex0x:
        detail = f"vehicle {stored.vehicle} already uploaded in round {stored.round} or from round {base}"  # pragma: no mutate
        raise ProblemError(409, "duplicate", detail)
    return _receipt(node, stored)
