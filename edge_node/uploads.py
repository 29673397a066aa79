"""Accepting a vehicle's signed update: every check of ``docs/protocol.md`` in its order;
nothing is written unless all pass, and the update is committed before the receipt.
(Human-readable ``detail`` texts are marked ``pragma: no mutate``: tests assert the
status and ``reason``, which are the contract with clients.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from eth_utils import to_checksum_address

from bmfl.blobs.codec import blob_digest
from bmfl.params import flatten
from bmfl.protocol.schemas import UploadReceipt
from bmfl.protocol.signing import SignatureError, receipt_message, sign, update_message, verify
from service_kit.problems import ProblemError
from chain.tasks import Phase, Status
from edge_node.node import EdgeNode
from edge_node.state import UpdateRow


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


def _check_chain_round(node: EdgeNode, task_id: int, round_: int) -> None:
    """The chain still takes records of the round: task active, round training, deadline
    ahead (a head read after the request arrived; the task's state as of it or newer)."""
    head = node.view.head()
    info = node.view.task(task_id)
    if (info.status, info.round, info.phase) != (Status.ACTIVE, round_, Phase.TRAINING):
        state = f"{info.status.name.lower()} at round {info.round}, phase {info.phase.name.lower()}"  # pragma: no mutate
        detail = f"on chain, task {task_id} is {state}"  # pragma: no mutate
        raise ProblemError(409, "round_not_open", detail)
    now = head.timestamp
    if now > info.deadline:
        detail = f"round {round_} ended on chain at {info.deadline} (chain time {now})"  # pragma: no mutate
        raise ProblemError(409, "deadline_passed", detail)


def accept_update(node: EdgeNode, task_id: int, round_: int, upload: Upload) -> UploadReceipt:
    """Check and persist one update; raises :class:`ProblemError` with the first failed check."""
    spec = node.task(task_id).spec
    row = node.state.round(task_id, round_)
    if row is None or row.phase != "open":
        detail = f"round {round_} of task {task_id} is not open at this edge"  # pragma: no mutate
        raise ProblemError(409, "round_not_open", detail)
    _check_chain_round(node, task_id, round_)
    data = _read_blob(node, upload)
    vehicle = node.vehicle_index(upload.vehicle, fresh=False)
    address = to_checksum_address(upload.vehicle)
    if vehicle not in row.selected:
        detail = f"vehicle {vehicle} is not a trainer of round {round_}"  # pragma: no mutate
        raise ProblemError(403, "not_selected", detail)
    digest = blob_digest(data)
    if not upload.signature:
        detail = "the update carries no signature"  # pragma: no mutate
        raise ProblemError(401, "unsigned", detail)
    try:
        verify(update_message(node.chain_id, task_id, round_, node.address, digest.raw), upload.signature, address)
    except SignatureError as exc:
        raise ProblemError(401, "bad_signature", str(exc)) from None
    if node.state.has_update(task_id, round_, vehicle):
        detail = f"vehicle {vehicle} already uploaded in round {round_}"  # pragma: no mutate
        raise ProblemError(409, "duplicate", detail)
    decoded, meta = node.decode(data, spec.model, node.settings.max_update_bytes)
    if (meta.task, meta.round) != (str(task_id), round_):
        detail = f"blob is for task {meta.task!r} round {meta.round}, not task {task_id} round {round_}"  # pragma: no mutate
        raise ProblemError(422, "wrong_round", detail)
    if upload.cid is None:
        cid = node.store.put(data, pin=True)
    else:
        cid = upload.cid
        node.store.pin(cid)
    update = UpdateRow(task_id, round_, vehicle, address, digest.hex0x, cid, upload.epsilon, upload.signature)
    refused = node.state.add_update(update)
    if refused is not None:  # the round closed, or a twin upload won, while this one was checked
        detail = f"vehicle {vehicle}, round {round_}: {refused}"  # pragma: no mutate
        raise ProblemError(409, refused, detail)
    node.prescore(task_id, lambda: flatten(decoded))  # α for the filter at close
    receipt = sign(node.chain.account, receipt_message(node.chain_id, task_id, round_, address, digest.raw))
    return UploadReceipt(task_id=task_id, round=round_, vehicle=vehicle, digest=digest.hex0x, cid=cid, signature=receipt)

