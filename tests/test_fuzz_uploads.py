"""Mutated and forged update blobs, each correctly signed by a selected vehicle, uploaded
to a real edge with its round open: the edge's answer is exactly what a local strict
decode predicts (202 for a blob that decodes for this task and round, else 413/422 with
the codec's reason), never a 5xx, and a refusal changes no state. Once one mutation is
accepted, every later other one is a 409 duplicate (the same one again gets its receipt):
the vehicle is counted once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmfl.blobs.codec import decode_state
from bmfl.blobs.errors import BlobCodecError
from security_fixtures import edge_state, forged_headers, mutated, upload_form
from service_fixtures import EdgeStack, ServiceChain, Vehicle, create_task, start_edge_stack, update_blob
from service_fixtures import service_chain  # noqa: F401

LIMIT = 200_000


@dataclass
class Upload:
    stack: EdgeStack
    task_id: int
    vehicle: Vehicle
    honest: bytes
    accepted: bytes | None = None
    outcomes: Counter = field(default_factory=Counter)

    def expected(self, blob: bytes) -> tuple[int, str]:
        """What the edge must answer, from a local strict decode."""
        if len(blob) > LIMIT:
            return 413, "too_large"
        if self.accepted is not None:
            return (202, "") if blob == self.accepted else (409, "duplicate")
        try:
            _, meta = decode_state(blob, "bmfl_cnn", max_bytes=LIMIT)
        except BlobCodecError as exc:
            return 422, exc.reason.value
        return (202, "") if (meta.task, meta.round) == (str(self.task_id), 1) else (422, "wrong_round")

    def state(self) -> tuple:
        directory = self.stack.settings[0].state_dir
        return edge_state(directory, directory.parent / "blobs")


@pytest.fixture(scope="module")
def upload(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upload]:
    stack = start_edge_stack(service_chain, tmp_path_factory.mktemp("edges"), edges=1, max_update_bytes=LIMIT)
    try:
        spec = create_task(stack.chain, stack.data, category=1)
        stack.serve_task(spec)
        vehicle = stack.vehicles_at(0, 1, 1, first_row=0)[0]
        stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
        stack.open_round(0, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid)
        yield Upload(stack, spec.task_id, vehicle, update_blob(stack.data.initial_model, spec, 1, vehicle))
    finally:
        stack.stop()


def blobs(honest: bytes) -> st.SearchStrategy[bytes]:
    return mutated(honest) | forged_headers(honest) | st.binary(max_size=512)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_signed_mutations_get_the_decoders_answer(upload: Upload, data: st.DataObject) -> None:
    blob = data.draw(blobs(upload.honest))
    stack = upload.stack
    form = upload_form(upload.vehicle.account, stack.chain.chain_id, upload.task_id, 1, stack.address(0), blob)
    expected = upload.expected(blob)
    before = upload.state()
    reply = httpx.post(f"{stack.url(0)}/tasks/{upload.task_id}/rounds/1/updates", timeout=60, **form)
    got = (reply.status_code, reply.json().get("reason", ""))
    upload.outcomes[got] += 1
    assert got == expected, reply.text[:300]
    if reply.status_code == 202:
        upload.accepted = blob
    else:
        assert upload.state() == before
    progress = httpx.get(f"{stack.url(0)}/tasks/{upload.task_id}/rounds/1").json()
    assert progress["received"] == ([upload.vehicle.index] if upload.accepted is not None else [])
