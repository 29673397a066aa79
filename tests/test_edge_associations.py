"""Association and handover between two real edges: a vehicle selected by edge 0 moves
to edge 1 (which tells edge 0 to drop it), uploads there and is accepted and recorded by
edge 1, because selection is read from the on-chain trainer table. Refused associations
and handovers (4xx, reason) change nothing."""

from __future__ import annotations

import sqlite3

import httpx

from bmfl.blobs.codec import blob_digest
from bmfl.protocol.schemas import RoundClose
from chain.anvil import dev_key
from chain.tasks import TasksClient
from service_fixtures import CLOUD, PUBLISHER, EdgeStack, association_request, create_task, register_vehicle
from service_fixtures import signed_request, update_blob
from service_fixtures import edge_stack as stack  # noqa: F401
from service_fixtures import service_chain  # noqa: F401


def associations(stack: EdgeStack, edge: int) -> list[tuple]:
    with sqlite3.connect(stack.settings[edge].state_dir / "edge.sqlite3") as db:
        return db.execute("SELECT * FROM associations ORDER BY vehicle").fetchall()


def test_handover_between_selection_and_upload(stack: EdgeStack) -> None:
    spec = create_task(stack.chain, stack.data, category=2)
    stack.serve_task(spec)
    task_id, initial, cid = spec.task_id, stack.data.initial_model, stack.data.initial_cid
    mover, stayer = stack.vehicles_at(0, 2, 2, first_row=0)
    old_association = association_request(mover.account, stack.chain.chain_id, stack.address(0))
    stack.start_round(task_id, initial, cid)
    assert stack.open_round(0, task_id, 1, initial, cid) == sorted([mover.index, stayer.index])
    assert stack.open_round(1, task_id, 1, initial, cid) == []

    chain_id = stack.chain.chain_id
    body = association_request(mover.account, chain_id, stack.address(1), x=1000.0, previous_edge=stack.address(0))
    moved = httpx.post(stack.url(1) + "/associate", json=body).json()
    assert (moved["edge_index"], moved["vehicle_index"], moved["released_by_previous"]) == (1, mover.index, True)
    assert {row[0]: row[2] for row in associations(stack, 0)}[mover.address] == stack.address(1)
    stale = httpx.post(stack.url(0) + "/associate", json=old_association)  # the pre-handover request replayed
    assert (stale.status_code, stale.json()["reason"]) == (409, "outdated")

    assignment = httpx.get(f"{stack.url(1)}/tasks/{task_id}/assignment", params={"vehicle": mover.address}).json()
    assert (assignment["selected"], assignment["open"], assignment["global_cid"]) == (True, True, cid)
    assert assignment["deadline"] == TasksClient(stack.chain.w3, stack.chain.deployment.tasks).task(task_id).deadline
    assert stack.upload(1, mover, task_id, 1, update_blob(initial, spec, 1, mover)).status_code == 202
    assert stack.upload(0, stayer, task_id, 1, update_blob(initial, spec, 1, stayer, seed=1)).status_code == 202
    progress = httpx.get(f"{stack.url(1)}/tasks/{task_id}/rounds/1").json()
    assert (progress["selected"], progress["received"]) == ([mover.index], [mover.index])  # handed over with it
    left = httpx.get(f"{stack.url(0)}/tasks/{task_id}/rounds/1").json()
    assert left["selected"] == [stayer.index]  # edge 0 no longer takes the mover's update: no double pay

    closes = [RoundClose.model_validate(stack.cloud("POST", e, f"/tasks/{task_id}/rounds/1/close").json()) for e in (0, 1)]
    assert [[t.vehicle for t in c.trainers] for c in closes] == [[stayer.index], [mover.index]]
    tasks = stack.chain.access(dev_key(CLOUD)).tasks
    (recorded,) = tasks.recorded_rounds(task_id, round=1, edge=1)
    assert recorded.preliminary_cid == closes[1].preliminary_cid
    assert [r.vehicle for r in recorded.decoded()] == [mover.index]
    tasks.close_recording(task_id)

    # the next round: the mover is edge 1's candidate now, no longer edge 0's
    new_cid = str(closes[0].preliminary_cid)
    new_global = stack.store.get(new_cid)
    for e in (0, 1):
        assert stack.cloud("POST", e, f"/tasks/{task_id}/rounds/1/scores", json={"preliminaries": {}}).status_code == 200
    tasks.finalize_round(task_id, blob_digest(new_global).raw, new_cid, 500_000)
    stack.start_round(task_id, new_global, new_cid)
    assert stack.open_round(0, task_id, 2, new_global, new_cid) == [stayer.index]
    assert stack.open_round(1, task_id, 2, new_global, new_cid) == [mover.index]


def test_refused_associations_and_handovers_change_nothing(stack: EdgeStack) -> None:
    vehicle = register_vehicle(stack.chain, stack.data.train.subset(list(range(64))), categories=2)
    chain_id, edge0, edge1 = stack.chain.chain_id, stack.address(0), stack.address(1)
    outsider = register_vehicle(stack.chain, stack.data.train.subset(list(range(64))))
    unregistered = stack.chain.access(dev_key(PUBLISHER)).account
    before = [associations(stack, 0), associations(stack, 1)]

    for_other_edge = association_request(vehicle.account, chain_id, edge1)
    stale = association_request(vehicle.account, chain_id, edge0) | {"timestamp_ms": 1}
    forged = association_request(outsider.account, chain_id, edge0) | {"vehicle": vehicle.address}
    cases = [
        (for_other_edge, 401, "bad_signature"),
        (forged, 401, "bad_signature"),
        (stale, 401, "stale"),
        (association_request(unregistered, chain_id, edge0), 403, "unregistered"),
        ({"vehicle": vehicle.address, "x": 0}, 422, "invalid_request"),
    ]
    for body, status, reason in cases:
        reply = httpx.post(stack.url(0) + "/associate", json=body)
        assert (reply.status_code, reply.json()["reason"]) == (status, reason), body

    handover = {"association": for_other_edge, "edge": edge1}
    unsigned = httpx.post(stack.url(0) + "/handover", json=handover)
    assert (unsigned.status_code, unsigned.json()["reason"]) == (401, "unsigned")
    not_an_edge = signed_request(stack.chain.cloud, chain_id, "POST", stack.url(0) + "/handover", json=handover)
    assert (not_an_edge.status_code, not_an_edge.json()["reason"]) == (403, "not_edge")
    edge1_account = stack.chain.access(stack.chain.edge_keys[1]).account
    url = stack.url(0) + "/handover"
    wrong_edge = signed_request(edge1_account, chain_id, "POST", url, json=handover | {"edge": edge0})
    assert (wrong_edge.status_code, wrong_edge.json()["reason"]) == (403, "not_edge")
    tampered = handover | {"association": for_other_edge | {"x": 5.0}}
    bad = signed_request(edge1_account, chain_id, "POST", url, json=tampered)
    assert (bad.status_code, bad.json()["reason"]) == (401, "bad_signature")

    assert [associations(stack, 0), associations(stack, 1)] == before
