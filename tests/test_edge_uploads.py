"""Update uploads at a real edge: every refusal of docs/protocol.md with its status and
reason, in the contract's order, and with no change to the edge's SQLite state, its
round progress or the blob store; then acceptance by blob and by CID, and duplicates."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from bmfl.blobs.cid import compute_cid
from bmfl.blobs.codec import BlobMeta, blob_digest, decode_state, encode_state
from bmfl.protocol.schemas import TaskSpec
from bmfl.protocol.signing import receipt_message, recover, sign, update_message
from service_fixtures import EdgeStack, ServiceChain, Vehicle, create_task, start_edge_stack, update_blob
from service_fixtures import service_chain  # noqa: F401

TABLES = ("associations", "tasks", "rounds", "updates")
LIMIT = 200_000  # bytes; a bmfl_cnn update is about 88 kB


@dataclass
class Setup:
    stack: EdgeStack
    spec: TaskSpec
    honest: bytes  # a valid round-1 update of ``selected``
    selected: Vehicle
    by_cid: Vehicle
    unselected: Vehicle

    def form(
        self, blob: bytes | None, *, vehicle: str | None = None, signer: LocalAccount | None = None,
        round_: int = 1, edge: int = 0, signed: bool = True, **extra: str,
    ) -> dict[str, Any]:  # fmt: skip
        """Multipart fields of an upload to edge 0, signed by ``signer`` for ``round_`` and ``edge``."""
        signer = signer or self.selected.account
        digest = blob_digest(blob if blob is not None else self.stack.store.get(extra["cid"])).raw
        data = {"vehicle": vehicle or signer.address} | extra
        if signed:
            message = update_message(self.stack.chain.chain_id, self.spec.task_id, round_, self.stack.address(edge), digest)
            data["signature"] = sign(signer, message)
        files = {"blob": ("u.safetensors", blob, "application/octet-stream")} if blob is not None else None
        return {"data": data, "files": files}

    def post(self, form: dict[str, Any], task_id: int | None = None, round_: int = 1) -> httpx.Response:
        url = f"{self.stack.url(0)}/tasks/{task_id or self.spec.task_id}/rounds/{round_}/updates"
        return httpx.post(url, **form)

    def snapshot(self) -> tuple:
        with sqlite3.connect(self.stack.settings[0].state_dir / "edge.sqlite3") as db:
            tables = [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES]
        progress = httpx.get(f"{self.stack.url(0)}/tasks/{self.spec.task_id}/rounds/1").json()
        blobs = sorted(p.name for p in (self.stack.settings[0].state_dir.parent / "blobs").rglob("*") if p.is_file())
        return tables, progress, blobs


@pytest.fixture(scope="module")
def setup(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    stack = start_edge_stack(service_chain, tmp_path_factory.mktemp("edges"), max_update_bytes=LIMIT)
    try:
        spec = create_task(stack.chain, stack.data, category=4)
        stack.serve_task(spec)
        selected, by_cid = stack.vehicles_at(0, 2, 4, first_row=0)
        unselected = stack.vehicles_at(0, 1, 8, first_row=128)[0]
        stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
        assert stack.open_round(0, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid) == [
            selected.index, by_cid.index,
        ]  # fmt: skip
        honest = update_blob(stack.data.initial_model, spec, 1, selected)
        yield Setup(stack, spec, honest, selected, by_cid, unselected)
    finally:
        stack.stop()


def variant(setup: Setup, change: str, round_: int = 1, model: str = "bmfl_cnn") -> bytes:
    """The honest update re-encoded with one defect."""
    state, meta = decode_state(setup.honest, "bmfl_cnn")
    name = next(iter(state))
    if change == "shape":
        state[name] = state[name].reshape(-1)
    elif change == "nan":
        state[name][0] = float("nan")
    return encode_state(state, BlobMeta(meta.task, round_, meta.producer, model))


def test_rejections_change_nothing(setup: Setup) -> None:
    honest, stranger = setup.honest, Account.create()
    impostor, absent = setup.by_cid.account, str(compute_cid(b"never stored"))
    cases: list[tuple[str, dict[str, Any], dict[str, Any], int, str]] = [
        ("unknown task", setup.form(honest), {"task_id": 999}, 404, "unknown_task"),
        ("round not open here", setup.form(honest, round_=2), {"round_": 2}, 409, "round_not_open"),
        ("oversize", setup.form(honest + bytes(LIMIT)), {}, 413, "too_large"),
        ("unregistered", setup.form(honest, signer=stranger), {}, 403, "unregistered"),
        ("unselected", setup.form(honest, signer=setup.unselected.account), {}, 403, "not_selected"),
        ("unselected and unsigned", setup.form(honest, vehicle=setup.unselected.address, signed=False), {}, 403, "not_selected"),
        ("unsigned", setup.form(honest, signed=False), {}, 401, "unsigned"),
        ("wrongly signed", setup.form(honest, vehicle=setup.selected.address, signer=impostor), {}, 401, "bad_signature"),
        ("replayed: signed for round 2", setup.form(honest, round_=2), {}, 401, "bad_signature"),
        ("signed for the other edge", setup.form(honest, edge=1), {}, 401, "bad_signature"),
        ("malformed blob", setup.form(struct.pack("<Q", 8) + b"not json"), {}, 422, "malformed"),
        ("wrong shapes", setup.form(variant(setup, "shape")), {}, 422, "shape"),
        ("NaN", setup.form(variant(setup, "nan")), {}, 422, "non_finite"),
        ("named for another model", setup.form(variant(setup, "meta", model="mlp")), {}, 422, "model"),
        ("blob for round 2", setup.form(variant(setup, "meta", round_=2)), {}, 422, "wrong_round"),
        ("neither blob nor CID", {"data": {"vehicle": setup.selected.address}}, {}, 422, "invalid_request"),
        ("CID not in the store", {"data": {"vehicle": setup.selected.address, "cid": absent}}, {}, 422, "blob_unavailable"),
    ]  # fmt: skip
    before = setup.snapshot()
    for name, form, where, status, reason in cases:
        reply = setup.post(form, **where)
        assert (reply.status_code, reply.json()["reason"]) == (status, reason), name
        assert setup.snapshot() == before, name
    metrics = httpx.get(setup.stack.url(0) + "/metrics").text
    assert 'bmfl_edge_uploads_total{outcome="bad_signature"} 3.0' in metrics


def test_uploads_by_cid_check_the_signature(setup: Setup) -> None:
    """The blob named by a CID is verified like a sent one: a signature by another key,
    or over another digest, round, task, edge or chain, is refused and changes nothing.
    Runs before test_accepts_by_blob_and_by_cid_once, which takes this vehicle's upload."""
    blob = update_blob(setup.stack.data.initial_model, setup.spec, 1, setup.by_cid)
    cid = setup.stack.store.put(blob)
    vehicle, chain_id, task_id = setup.by_cid, setup.stack.chain.chain_id, setup.spec.task_id

    def signed(message: bytes) -> dict[str, Any]:
        return {"data": {"vehicle": vehicle.address, "cid": cid, "signature": sign(vehicle.account, message)}}

    def message(digest: bytes = blob_digest(blob).raw, chain: int = chain_id, task: int = task_id, round_: int = 1, edge: int = 0) -> bytes:
        return update_message(chain, task, round_, setup.stack.address(edge), digest)

    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("unsigned", setup.form(None, signer=vehicle.account, signed=False, cid=cid), 401, "unsigned"),
        ("signed by another vehicle", setup.form(None, vehicle=vehicle.address, signer=setup.selected.account, cid=cid), 401, "bad_signature"),
        ("signed by a stranger", setup.form(None, vehicle=vehicle.address, signer=Account.create(), cid=cid), 401, "bad_signature"),
        ("signature over another blob", signed(message(digest=blob_digest(setup.honest).raw)), 401, "bad_signature"),
        ("signed for round 2", setup.form(None, signer=vehicle.account, round_=2, cid=cid), 401, "bad_signature"),
        ("signed for the other edge", setup.form(None, signer=vehicle.account, edge=1, cid=cid), 401, "bad_signature"),
        ("signed for another task", signed(message(task=task_id + 1)), 401, "bad_signature"),
        ("signed for another chain", signed(message(chain=chain_id + 1)), 401, "bad_signature"),
        ("signature not hex", {"data": {"vehicle": vehicle.address, "cid": cid, "signature": "0x" + "zz" * 65}}, 401, "bad_signature"),
    ]  # fmt: skip
    before = setup.snapshot()
    for name, form, status, reason in cases:
        reply = setup.post(form)
        assert (reply.status_code, reply.json()["reason"]) == (status, reason), f"{name}: {reply.text}"
        assert setup.snapshot() == before, name
    # the rightly signed upload by CID is accepted in test_accepts_by_blob_and_by_cid_once


def test_accepts_by_blob_and_by_cid_once(setup: Setup) -> None:
    receipt = setup.post(setup.form(setup.honest, epsilon="2.5"))
    assert receipt.status_code == 202, receipt.text
    body = receipt.json()
    assert body == {
        "task_id": setup.spec.task_id, "round": 1, "vehicle": setup.selected.index,
        "digest": blob_digest(setup.honest).hex0x, "cid": setup.stack.store.put(setup.honest),
        "signature": body["signature"],
    }  # fmt: skip
    # the edge's signed promise to record this update: the vehicle's proof if it is omitted
    promise = receipt_message(setup.stack.chain.chain_id, setup.spec.task_id, 1, setup.selected.address, blob_digest(setup.honest).raw)
    assert recover(promise, body["signature"]) == setup.stack.address(0)
    before = setup.snapshot()
    again = setup.post(setup.form(setup.honest))  # the same update sent again, as after a lost reply
    assert (again.status_code, again.json()) == (202, body)
    assert setup.snapshot() == before
    assert 'bmfl_edge_uploads_total{outcome="resent"} 1.0' in httpx.get(setup.stack.url(0) + "/metrics").text
    other = update_blob(setup.stack.data.initial_model, setup.spec, 1, setup.selected, seed=1)  # another update
    twice = setup.post(setup.form(other))
    assert (twice.status_code, twice.json()["reason"]) == (409, "duplicate")
    assert setup.snapshot() == before  # refused before its blob reaches the store

    cid = setup.stack.store.put(update_blob(setup.stack.data.initial_model, setup.spec, 1, setup.by_cid))
    by_cid = setup.post(setup.form(None, signer=setup.by_cid.account, cid=cid))
    assert by_cid.status_code == 202, by_cid.text
    progress = httpx.get(f"{setup.stack.url(0)}/tasks/{setup.spec.task_id}/rounds/1").json()
    assert progress["received"] == [setup.selected.index, setup.by_cid.index]
    with sqlite3.connect(setup.stack.settings[0].state_dir / "edge.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT vehicle, cid, epsilon FROM updates ORDER BY vehicle").fetchall()
    assert rows == [(setup.selected.index, receipt.json()["cid"], 2.5), (setup.by_cid.index, cid, None)]
