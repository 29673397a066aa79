"""The binary upload route ``PUT /tasks/{id}/rounds/{r}/updates/{vehicle}`` at a real edge
(uvicorn on loopback, real Anvil): the blob is the body, the signature and ε are headers,
and every check of the multipart route holds, in the same order and with the same
reasons; each refused request changes neither the SQLite state nor the blob store. Both
routes name one resource: an update accepted on one is a re-send on the other."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bmfl.blobs.codec import blob_digest
from bmfl.protocol.schemas import TaskSpec, UploadReceipt
from bmfl.protocol.signing import EPSILON_HEADER, UPDATE_SIGNATURE_HEADER, receipt_message, sign, update_message, verify
from security_fixtures import assert_refused, edge_state, variant
from service_fixtures import EdgeStack, ServiceChain, Vehicle, create_task, start_edge_stack, update_blob, update_form
from service_fixtures import service_chain  # noqa: F401

LIMIT = 400_000  # bytes: the largest update the edge takes (the CNN's is about 88 kB)


@dataclass
class Edge:
    stack: EdgeStack
    spec: TaskSpec
    a: Vehicle  # selected
    b: Vehicle  # selected
    other: Vehicle  # associated, not selected
    blob_a: bytes
    blob_b: bytes

    def headers(self, blob: bytes, by: Vehicle, **changes: str) -> dict[str, str]:
        """The headers of ``by``'s signed upload of ``blob``; ``changes`` replace or add headers."""
        message = update_message(self.stack.chain.chain_id, self.spec.task_id, 1, self.stack.address(0), blob_digest(blob).raw)
        return {"content-type": "application/octet-stream", UPDATE_SIGNATURE_HEADER: sign(by.account, message)} | changes

    def put(self, blob: bytes, headers: dict[str, str], vehicle: str) -> httpx.Response:
        url = f"{self.stack.url(0)}/tasks/{self.spec.task_id}/rounds/1/updates/{vehicle}"
        return httpx.put(url, content=blob, headers=headers, timeout=60)

    def state(self) -> tuple:
        return edge_state(self.stack.settings[0].state_dir, self.stack.settings[0].state_dir.parent / "blobs")


@pytest.fixture(scope="module")
def edge(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    stack = start_edge_stack(service_chain, tmp_path_factory.mktemp("edges"), edges=1, max_update_bytes=LIMIT)
    try:
        spec = create_task(stack.chain, stack.data, category=32)
        stack.serve_task(spec)
        a, b = stack.vehicles_at(0, 2, 32, first_row=0)
        other = stack.vehicles_at(0, 1, 512, first_row=128)[0]
        stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
        assert stack.open_round(0, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid) == sorted([a.index, b.index])
        blob_a, blob_b = (update_blob(stack.data.initial_model, spec, 1, v) for v in (a, b))
        yield Edge(stack, spec, a, b, other, blob_a, blob_b)
    finally:
        stack.stop()


def refused(edge: Edge, cases: list[tuple[str, Any, int, str]]) -> None:
    assert_refused(cases, edge.state)


def test_bad_headers_and_bodies_are_refused_without_a_trace(edge: Edge) -> None:
    blob, a = edge.blob_a, edge.a
    good = edge.headers(blob, a)
    signature = good[UPDATE_SIGNATURE_HEADER]
    unsigned = {k: v for k, v in good.items() if k != UPDATE_SIGNATURE_HEADER}
    refused(edge, [
        ("no signature header", lambda: edge.put(blob, unsigned, a.address), 401, "unsigned"),
        ("signature of 64 bytes", lambda: edge.put(blob, good | {UPDATE_SIGNATURE_HEADER: signature[:-2]}, a.address), 401, "bad_signature"),
        ("signed by b, sent as a", lambda: edge.put(blob, edge.headers(blob, edge.b), a.address), 401, "bad_signature"),
        ("signature of another blob", lambda: edge.put(blob, edge.headers(edge.blob_b, a), a.address), 401, "bad_signature"),
        ("multipart content type", lambda: edge.put(blob, good | {"content-type": "multipart/form-data; boundary=x"}, a.address), 415, "unsupported_media_type"),
        ("no content type", lambda: httpx.put(f"{edge.stack.url(0)}/tasks/{edge.spec.task_id}/rounds/1/updates/{a.address}", content=blob,
                                              headers={UPDATE_SIGNATURE_HEADER: signature}), 415, "unsupported_media_type"),
        ("negative ε", lambda: edge.put(blob, good | {EPSILON_HEADER: "-1"}, a.address), 422, "invalid_request"),
        ("ε not a number", lambda: edge.put(blob, good | {EPSILON_HEADER: "nan"}, a.address), 422, "invalid_request"),
        ("body over the limit", lambda: edge.put(bytes(LIMIT + 1), good, a.address), 413, "body_too_large"),
        ("not an address", lambda: edge.put(blob, good, "0x1234"), 403, "unregistered"),
        ("address over 64 characters", lambda: edge.put(blob, good, "0x" + "a" * 64), 422, "invalid_request"),
        ("not selected", lambda: edge.put(blob, edge.headers(blob, edge.other), edge.other.address), 403, "not_selected"),
        ("non-finite tensor", lambda: edge.put(inf := variant(blob, "bmfl_cnn", "inf"), edge.headers(inf, a), a.address), 422, "non_finite"),
        ("truncated blob", lambda: edge.put(cut := blob[:-100], edge.headers(cut, a), a.address), 422, "truncated"),
        ("blob for another task", lambda: edge.put(other := variant(blob, "bmfl_cnn", "task=999"), edge.headers(other, a), a.address), 422, "wrong_round"),
        ("round not open", lambda: httpx.put(f"{edge.stack.url(0)}/tasks/{edge.spec.task_id}/rounds/2/updates/{a.address}", content=blob,
                                             headers=good), 409, "round_not_open"),
    ])  # fmt: skip


def test_an_update_is_one_resource_on_both_routes(edge: Edge) -> None:
    blob, b = edge.blob_b, edge.b
    reply = edge.put(blob, edge.headers(blob, b, **{EPSILON_HEADER: "2.5"}), b.address)
    assert reply.status_code == 202, reply.text
    receipt = UploadReceipt.model_validate(reply.json())
    assert (receipt.vehicle, receipt.digest, receipt.round) == (b.index, blob_digest(blob).hex0x, 1)
    chain_id, address = edge.stack.chain.chain_id, edge.stack.address(0)
    verify(receipt_message(chain_id, edge.spec.task_id, 1, b.address, blob_digest(blob).raw), receipt.signature, address)
    after = edge.state()

    again = edge.put(blob, edge.headers(blob, b), b.address)
    data, files = update_form(b.account, chain_id, edge.spec.task_id, 1, address, blob)
    multipart = httpx.post(f"{edge.stack.url(0)}/tasks/{edge.spec.task_id}/rounds/1/updates", data=data, files=files)
    assert [r.status_code for r in (again, multipart)] == [202, 202]
    assert again.json() == multipart.json() == reply.json()
    assert edge.state() == after
    refused(edge, [
        ("another blob after an accepted one", lambda: edge.put(edge.blob_a, edge.headers(edge.blob_a, b), b.address), 409, "duplicate"),
    ])  # fmt: skip
