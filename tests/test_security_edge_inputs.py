"""The malformed-input catalogue at real edges (uvicorn on loopback, real Anvil): each bad
request gets its 4xx and reason, and neither edge's SQLite state, test sets or blob store
changes. Complements tests/test_edge_uploads.py (the checks in protocol order) with the
codec's defects over HTTP, bad hex and lengths, signatures for another task or chain,
wrong content types, oversized and deeply nested bodies, signed internal calls gone
wrong, a raced duplicate, and uploads to finished, cancelled and expired rounds.

The module's tests share one chain; the last one moves the chain's clock past every
deadline, so it stays last."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from eth_account import Account

from bmfl.blobs.codec import blob_digest
from bmfl.protocol.schemas import TaskSpec
from bmfl.protocol.signing import SIGNATURE_HEADER, TIME_HEADER, associate_message, now_ms, request_message, sign
from chain.anvil import dev_key
from security_fixtures import assert_refused, edge_state, upload_form, variant
from service_fixtures import (
    CLOUD, EdgeStack, ServiceChain, Vehicle, create_task, signed_request, start_edge_stack,
    update_blob,
)  # fmt: skip
from service_fixtures import service_chain  # noqa: F401

LIMIT = 2_000_000  # bytes: room for a blob with a 1 MiB header, so the codec sees it
HUGE = 2**70


@dataclass
class Catalogue:
    stack: EdgeStack
    spec: TaskSpec
    honest: bytes
    a: Vehicle  # selected; its honest update is never accepted here
    b: Vehicle  # selected
    gone: Vehicle  # selected, then deregistered
    other: Vehicle  # associated, not selected

    @property
    def task_id(self) -> int:
        return self.spec.task_id

    @property
    def chain(self) -> ServiceChain:
        return self.stack.chain

    def form(self, blob: bytes, by: Vehicle | None = None, **changes: Any) -> dict[str, Any]:
        """A signed upload of ``blob`` by ``by`` (default ``a``); ``changes`` alter what is
        signed (task_id, round_, chain_id, edge) or the fields sent."""
        signer = (by or self.a).account
        signed = {k: changes.pop(k) for k in ("task_id", "round_", "chain_id", "edge") if k in changes}
        form = upload_form(
            signer, signed.get("chain_id", self.chain.chain_id), signed.get("task_id", self.task_id),
            signed.get("round_", 1), signed.get("edge", self.stack.address(0)), blob,
        )  # fmt: skip
        form["data"].update(changes)
        return form

    def post(self, form: dict[str, Any], task_id: int | None = None, round_: int = 1) -> httpx.Response:
        url = f"{self.stack.url(0)}/tasks/{task_id or self.task_id}/rounds/{round_}/updates"
        return httpx.post(url, timeout=60, **form)

    def state(self) -> tuple:
        blobs = self.stack.settings[0].state_dir.parent / "blobs"
        return tuple(edge_state(s.state_dir, blobs) for s in self.stack.settings)


@pytest.fixture(scope="module")
def cat(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalogue]:
    stack = start_edge_stack(service_chain, tmp_path_factory.mktemp("edges"), max_update_bytes=LIMIT)
    try:
        spec = create_task(stack.chain, stack.data, category=64)
        stack.serve_task(spec)
        a, b, gone = stack.vehicles_at(0, 3, 64, first_row=0)
        other = stack.vehicles_at(0, 1, 128, first_row=192)[0]
        stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
        selected = stack.open_round(0, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid)
        assert selected == sorted([a.index, b.index, gone.index])
        stack.chain.access("0x" + bytes(gone.account.key).hex()).registry.deregister_vehicle()
        honest = update_blob(stack.data.initial_model, spec, 1, a)
        yield Catalogue(stack, spec, honest, a, b, gone, other)
    finally:
        stack.stop()


def check(cat: Catalogue, cases: list[tuple[str, Any, int, str]]) -> None:
    """Every case is refused as stated and changes nothing; the edge stays healthy."""
    assert_refused(cases, cat.state)
    assert httpx.get(cat.stack.url(0) + "/healthz").status_code == 200


def test_malformed_update_blobs(cat: Catalogue) -> None:
    honest = cat.honest
    header_len = int.from_bytes(honest[:8], "little")
    padded = (1 << 20) + 8 - header_len  # a header just over the 1 MiB the codec allows
    blobs = {
        "truncated safetensors": (honest[:-100], "truncated"),
        "cut inside the header": (honest[:40], "header_length_overflow"),
        "header length 2^64 - 1": (b"\xff" * 8 + honest[8:], "header_length_overflow"),
        "header over 1 MiB": (
            (header_len + padded).to_bytes(8, "little") + honest[8 : 8 + header_len] + b" " * padded + honest[8 + header_len :],
            "header_length_overflow",
        ),
        "trailing megabyte": (honest + bytes(1 << 20), "malformed"),
        "header not JSON": (b"\x10\0\0\0\0\0\0\0" + bytes(range(16)) + honest[8:], "malformed"),
        "zero-length body": (b"", "empty"),
        "duplicate tensor name": (variant(honest, "bmfl_cnn", "duplicate"), "duplicate_tensor"),
        "missing tensor": (variant(honest, "bmfl_cnn", "missing"), "missing_tensor"),
        "extra tensor": (variant(honest, "bmfl_cnn", "extra"), "extra_tensor"),
        "float64 tensors": (variant(honest, "bmfl_cnn", "float64"), "dtype"),
        "float16 tensors": (variant(honest, "bmfl_cnn", "float16"), "dtype"),
        "+Inf": (variant(honest, "bmfl_cnn", "inf"), "non_finite"),
        "-Inf": (variant(honest, "bmfl_cnn", "-inf"), "non_finite"),
        "overlapping offsets": (variant(honest, "bmfl_cnn", "offsets"), "malformed"),
        "no metadata": (variant(honest, "bmfl_cnn", "no_metadata"), "metadata"),
        "blob for another task": (variant(honest, "bmfl_cnn", "task=999"), "wrong_round"),
    }
    check(cat, [(name, lambda blob=blob: cat.post(cat.form(blob)), 422, reason) for name, (blob, reason) in blobs.items()])


def test_bad_fields_signatures_and_content_types(cat: Catalogue) -> None:
    honest, a = cat.honest, cat.a
    good = cat.form(honest)
    sig = good["data"]["signature"]
    files = good["files"]
    cases: list[tuple[str, Any, int, str]] = [
        ("signature of 64 bytes", lambda: cat.post(cat.form(honest, signature=sig[:-2])), 401, "bad_signature"),
        ("signature of 66 bytes", lambda: cat.post(cat.form(honest, signature=sig + "00")), 401, "bad_signature"),
        ("signature not hex", lambda: cat.post(cat.form(honest, signature="0x" + "zz" * 65)), 401, "bad_signature"),
        ("empty signature", lambda: cat.post(cat.form(honest, signature="")), 401, "unsigned"),
        ("signed for another task", lambda: cat.post(cat.form(honest, task_id=cat.task_id + 1)), 401, "bad_signature"),
        ("signed for another chain", lambda: cat.post(cat.form(honest, chain_id=cat.chain.chain_id + 1)), 401, "bad_signature"),
        ("signed by another vehicle", lambda: cat.post(cat.form(honest, by=cat.b, vehicle=a.address)), 401, "bad_signature"),
        ("vehicle not hex", lambda: cat.post(cat.form(honest, vehicle="0x" + "zz" * 20)), 403, "unregistered"),
        ("deregistered vehicle", lambda: cat.post(cat.form(honest, cat.gone)), 403, "unregistered"),
        ("unselected vehicle", lambda: cat.post(cat.form(honest, cat.other)), 403, "not_selected"),
        ("negative epsilon", lambda: cat.post(cat.form(honest, epsilon="-1")), 422, "invalid_request"),
        ("NaN epsilon", lambda: cat.post(cat.form(honest, epsilon="nan")), 422, "invalid_request"),
        ("epsilon not a number", lambda: cat.post(cat.form(honest, epsilon="0x10")), 422, "invalid_request"),
        ("blob and CID both", lambda: cat.post(cat.form(honest, cid=cat.stack.data.initial_cid)), 422, "invalid_request"),
        ("CID not a CID", lambda: cat.post({"data": {"vehicle": a.address, "signature": sig, "cid": "../../x"}}), 422, "invalid_request"),
        ("round 0", lambda: cat.post(good, round_=0), 422, "invalid_request"),
        ("round past uint16", lambda: cat.post(good, round_=2**16), 422, "invalid_request"),
        ("task id 2^70", lambda: cat.post(good, task_id=HUGE), 422, "invalid_request"),
        ("task id not a number", lambda: httpx.post(f"{cat.stack.url(0)}/tasks/x/rounds/1/updates", **good), 422, "invalid_request"),
        ("JSON instead of multipart", lambda: httpx.post(f"{cat.stack.url(0)}/tasks/{cat.task_id}/rounds/1/updates", json=good["data"]), 422, "invalid_request"),
        ("text/plain body", lambda: cat.post({"content": honest, "headers": {"content-type": "text/plain"}}), 422, "invalid_request"),
        ("2 MB form field", lambda: cat.post({"data": {"vehicle": "0x" + "a" * 2_000_000, "signature": sig}, "files": files}), 413, "too_large"),
        ("1,100 form fields", lambda: cat.post({"data": {f"f{i}": "x" for i in range(1100)} | good["data"], "files": files}), 422, "unknown_part"),
        ("blob part twice", lambda: cat.post({"data": good["data"], "files": [("blob", files["blob"]), ("blob", files["blob"])]}), 422, "repeated_part"),
        ("assignment for a non-address", lambda: httpx.get(f"{cat.stack.url(0)}/tasks/{cat.task_id}/assignment", params={"vehicle": "0x12"}), 403, "unregistered"),
        ("assignment of task 2^70", lambda: httpx.get(f"{cat.stack.url(0)}/tasks/{HUGE}/assignment", params={"vehicle": a.address}), 422, "invalid_request"),
        ("progress of round 2^70", lambda: httpx.get(f"{cat.stack.url(0)}/tasks/{cat.task_id}/rounds/{HUGE}"), 422, "invalid_request"),
        ("unknown path", lambda: httpx.get(f"{cat.stack.url(0)}/nowhere"), 404, "not_found"),
        ("wrong method", lambda: httpx.delete(f"{cat.stack.url(0)}/tasks/{cat.task_id}/rounds/1/updates"), 405, "method_not_allowed"),
        ("blob store path not a CID", lambda: httpx.get(f"{cat.stack.url(0)}/ipfs/not-a-cid"), 400, "invalid_request"),
    ]  # fmt: skip
    check(cat, cases)


def test_association_bodies(cat: Catalogue) -> None:
    edge, chain_id, url = cat.stack.address(0), cat.chain.chain_id, cat.stack.url(0) + "/associate"
    stranger = Account.create()

    def body(account=cat.other.account, chain=chain_id, ts=None, **fields: Any) -> dict[str, Any]:
        ts = ts or now_ms()
        signature = sign(account, associate_message(chain, account.address, edge, 0.0, 0.0, ts))
        return {"vehicle": account.address, "x": 0.0, "y": 0.0, "timestamp_ms": ts, "signature": signature} | fields

    with sqlite3.connect(cat.stack.settings[0].state_dir / "edge.sqlite3") as db:  # the association on record
        (known,) = db.execute("SELECT timestamp_ms FROM associations WHERE vehicle = ?", (cat.other.address,)).fetchone()
    nested = b"[" * 200_000 + b"]" * 200_000  # deeper than any C stack holds with py_ecc's recursion limit
    cases: list[tuple[str, Any, int, str]] = [
        ("200,000-deep JSON", lambda: httpx.post(url, content=nested, headers={"content-type": "application/json"}), 400, "invalid_request"),
        ("5 MB JSON", lambda: httpx.post(url, json=body(signature="0x" + "ab" * 2_500_000)), 413, "body_too_large"),
        ("900 KB signature", lambda: httpx.post(url, json=body(signature="0x" + "ab" * 450_000)), 401, "bad_signature"),
        ("5 MB extra field", lambda: httpx.post(url, json=body(padding="x" * 5_000_000)), 413, "body_too_large"),
        ("900 KB extra field", lambda: httpx.post(url, json=body(padding="x" * 900_000)), 422, "invalid_request"),
        ("JSON not an object", lambda: httpx.post(url, json=[body()]), 422, "invalid_request"),
        ("form instead of JSON", lambda: httpx.post(url, data={k: str(v) for k, v in body().items()}), 422, "invalid_request"),
        ("vehicle not hex", lambda: httpx.post(url, json=body(vehicle="0x" + "zz" * 20)), 422, "invalid_request"),
        ("NaN position", lambda: httpx.post(url, content=json.dumps(body(x=float("nan"))), headers={"content-type": "application/json"}), 422, "invalid_request"),
        ("position out of range", lambda: httpx.post(url, json=body(x=1e12)), 422, "invalid_request"),
        ("stale timestamp", lambda: httpx.post(url, json=body(ts=now_ms() - 3_600_000)), 401, "stale"),
        ("signed for another chain", lambda: httpx.post(url, json=body(chain=chain_id + 1)), 401, "bad_signature"),
        ("signature of 64 bytes", lambda: httpx.post(url, json=body(signature="0x" + "ab" * 64)), 401, "bad_signature"),
        ("unregistered vehicle", lambda: httpx.post(url, json=body(account=stranger)), 403, "unregistered"),
        ("an older association replayed", lambda: httpx.post(url, json=body(ts=known - 1)), 409, "outdated"),
    ]  # fmt: skip
    check(cat, cases)


def test_signed_internal_calls(cat: Catalogue) -> None:
    stack, task_id = cat.stack, cat.task_id
    close = f"{stack.url(0)}/tasks/{task_id}/rounds/1/close"
    operator = Account.from_key(dev_key(0))

    def by_cloud(ts: int, **headers: str) -> httpx.Response:
        """The close, signed by the cloud at time ``ts``, with ``headers`` replaced."""
        signature = sign(cat.chain.cloud, request_message(cat.chain.chain_id, "POST", httpx.URL(close).path, b"", ts))
        return httpx.post(close, headers={SIGNATURE_HEADER: signature, TIME_HEADER: str(ts)} | headers)

    as_cloud = cat.chain.cloud
    test_set = ("test_set", ("t", stack.data.test_set, "application/octet-stream"))
    task_json = json.dumps({"spec": {"model": "bmfl_cnn"}, "test_set_digest": "0x" + "00" * 32})  # no task_id
    cases: list[tuple[str, Any, int, str]] = [
        ("unsigned close", lambda: httpx.post(close), 401, "unsigned"),
        ("signature of 64 bytes", lambda: by_cloud(now_ms(), **{SIGNATURE_HEADER: "0x" + "ab" * 64}), 401, "bad_signature"),
        ("time not a number", lambda: by_cloud(now_ms(), **{TIME_HEADER: "soon"}), 401, "bad_signature"),
        ("signed an hour ago", lambda: by_cloud(now_ms() - 3_600_000), 401, "bad_signature"),
        ("time header altered", lambda: by_cloud(now_ms(), **{TIME_HEADER: str(now_ms() + 1)}), 403, "not_cloud"),
        ("signed by a vehicle", lambda: signed_request(cat.a.account, cat.chain.chain_id, "POST", close), 403, "not_cloud"),
        ("signed by the operator", lambda: signed_request(operator, cat.chain.chain_id, "POST", close), 403, "not_cloud"),
        ("signed for another chain", lambda: signed_request(as_cloud, cat.chain.chain_id + 1, "POST", close), 403, "not_cloud"),
        ("handover signed by a vehicle", lambda: signed_request(cat.a.account, cat.chain.chain_id, "POST", stack.url(0) + "/handover", json={}), 403, "not_edge"),
        ("task JSON not JSON", lambda: stack.cloud("PUT", 0, f"/tasks/{task_id}", data={"task": "{"}, files=[test_set]), 422, "invalid_request"),
        ("task spec incomplete", lambda: stack.cloud("PUT", 0, f"/tasks/{task_id}", data={"task": task_json}, files=[test_set]), 422, "invalid_request"),
        ("open with another global model", lambda: stack.cloud("POST", 1, f"/tasks/{task_id}/rounds/1/open", json={"global_cid": stack.data.initial_cid, "global_digest": "0x" + "11" * 32}), 409, "global_mismatch"),
        ("open round 2 while the chain is at 1", lambda: stack.cloud("POST", 0, f"/tasks/{task_id}/rounds/2/open", json={"global_cid": stack.data.initial_cid, "global_digest": blob_digest(stack.data.initial_model).hex0x}), 409, "wrong_phase"),
        ("open with a digest not hex", lambda: stack.cloud("POST", 0, f"/tasks/{task_id}/rounds/1/open", json={"global_cid": "x", "global_digest": "0x" + "zz" * 32}), 422, "invalid_request"),
        ("scores before recording", lambda: stack.cloud("POST", 0, f"/tasks/{task_id}/rounds/1/scores", json={"preliminaries": {}}), 409, "not_recorded"),
        ("evaluate a test set as a model", lambda: stack.cloud("POST", 0, f"/tasks/{task_id}/evaluate", json={"cid": stack.store.put(stack.data.test_set)}), 422, "metadata"),
        ("evaluate a bad CID", lambda: stack.cloud("POST", 0, f"/tasks/{task_id}/evaluate", json={"cid": "zz"}), 422, "invalid_request"),
        ("close of task 2^70", lambda: stack.cloud("POST", 0, f"/tasks/{HUGE}/rounds/1/close"), 422, "invalid_request"),
    ]  # fmt: skip
    stack.store.put(stack.data.test_set)  # stored before the snapshot: only the refusals are compared
    nonce = cat.chain.w3.eth.get_transaction_count(stack.address(0))
    check(cat, cases)
    assert cat.chain.w3.eth.get_transaction_count(stack.address(0)) == nonce  # no transaction sent


def test_a_raced_resend_is_stored_once_and_every_copy_gets_its_receipt(cat: Catalogue) -> None:
    blob = update_blob(cat.stack.data.initial_model, cat.spec, 1, cat.b, seed=3)
    form = cat.form(blob, cat.b)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: cat.post(form), range(8)))
    assert [r.status_code for r in replies] == [202] * 8
    assert all(r.json() == replies[0].json() for r in replies)  # one update, one promise
    progress = httpx.get(f"{cat.stack.url(0)}/tasks/{cat.task_id}/rounds/1").json()
    assert progress["received"] == [cat.b.index]
    other = cat.post(cat.form(update_blob(cat.stack.data.initial_model, cat.spec, 1, cat.b, seed=4), cat.b))
    assert (other.status_code, other.json()["reason"]) == (409, "duplicate")  # an update is never replaced


def test_finished_cancelled_and_expired_rounds(cat: Catalogue) -> None:
    """Runs last: moves the chain's clock past every deadline."""
    stack = cat.stack
    initial, cid = stack.data.initial_model, stack.data.initial_cid
    cloud = stack.chain.access(dev_key(CLOUD)).tasks
    tasks = {}
    for name, category in (("finished", 256), ("cancelled", 512), ("expired", 1024)):
        spec = create_task(stack.chain, stack.data, category=category, rounds=1)
        stack.serve_task(spec)
        here, there = stack.vehicles_at(0, 1, category, first_row=256)[0], stack.vehicles_at(1, 1, category, first_row=320)[0]
        stack.start_round(spec.task_id, initial, cid)
        assert stack.open_round(0, spec.task_id, 1, initial, cid) == [here.index]
        assert stack.open_round(1, spec.task_id, 1, initial, cid) == [there.index]
        tasks[name] = (spec, here, there)

    # finished: edge 0 records its vehicle's update, edge 1 an empty round; both score; the
    # cloud closes recording, finalizes and finishes
    spec, here, there = tasks["finished"]
    assert stack.upload(0, here, spec.task_id, 1, update_blob(initial, spec, 1, here)).status_code == 202
    close = stack.cloud("POST", 0, f"/tasks/{spec.task_id}/rounds/1/close").json()
    assert stack.cloud("POST", 1, f"/tasks/{spec.task_id}/rounds/1/close").json()["preliminary_cid"] is None
    cloud.close_recording(spec.task_id)
    for e in (0, 1):
        stack.cloud("POST", e, f"/tasks/{spec.task_id}/rounds/1/scores", json={"preliminaries": {"0": close["preliminary_cid"]}})
    prelim = stack.store.get(close["preliminary_cid"])
    cloud.finalize_round(spec.task_id, blob_digest(prelim).raw, close["preliminary_cid"], 500_000)
    cloud.finish_task(spec.task_id)

    stack.chain.w3.provider.make_request("evm_increaseTime", [2 * 3600 + 1])  # type: ignore[arg-type]  # stalled
    stack.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    stack.chain.access(dev_key(0)).tasks.cancel_task(tasks["cancelled"][0].task_id)

    def late(name: str, edge: int) -> httpx.Response:
        spec, here, there = tasks[name]
        vehicle = there if edge else here
        return stack.upload(edge, vehicle, spec.task_id, 1, update_blob(initial, spec, 1, vehicle))

    before = cat.state()
    for name, edge, status, reason in [
        ("finished", 1, 409, "round_not_open"),
        ("finished", 0, 409, "round_not_open"),
        ("cancelled", 0, 409, "round_not_open"),
        ("expired", 0, 409, "deadline_passed"),
        ("expired", 1, 409, "deadline_passed"),
    ]:
        reply = late(name, edge)
        assert (reply.status_code, reply.json()["reason"]) == (status, reason), f"{name} at edge {edge}: {reply.text}"
    assert cat.state() == before
