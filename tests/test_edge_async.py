"""An asynchronous task at real edge servers over HTTP on a real chain (docs/algorithms.md
§15): a slow vehicle's upload trained from round 1 enters round 2 as a stale report (its
receipt names round 2), is applied with the round core's ``apply_buffer`` and recorded
with τ = 1 and θ·s(τ); a report older than τ_max is refused with 409 ``stale`` and
changes nothing; a second upload from the same base is a duplicate."""

from __future__ import annotations

import httpx
import torch

from bmfl.blobs.codec import blob_digest, decode_state
from bmfl.incentives import to_fixed
from bmfl.params import flatten
from bmfl.rounds import Report, apply_buffer, edge_rule, staleness_weight
from bmfl.task import AggregationSpec, AsyncSpec, RuleSpec
from chain.anvil import dev_key
from chain.audit import Auditor
from chain.records import record_proofs
from chain_fixtures import reverts
from service_fixtures import CLOUD, EdgeStack, association_request, create_task, update_blob
from service_fixtures import edge_stack as stack  # noqa: F401
from service_fixtures import service_chain  # noqa: F401

ASYNC = AsyncSpec(mode="async", tau_max=1, weighting="fedbuff", exponent=0.5)
FEDAVG = AggregationSpec(edge=RuleSpec(name="fedavg"), filters=[])


def close_version(stack: EdgeStack, task_id: int, r: int) -> tuple[bytes, str]:
    """The cloud's part of version ``r`` at both edges: close, close recording, score,
    finalize with edge 0's model; returns that model's blob and CID."""
    closes = [stack.cloud("POST", e, f"/tasks/{task_id}/rounds/{r}/close").json() for e in (0, 1)]
    tasks = stack.chain.access(dev_key(CLOUD)).tasks
    tasks.close_recording(task_id)
    body = {"preliminaries": {str(e): c["preliminary_cid"] for e, c in enumerate(closes) if c["preliminary_cid"]}}
    for e in (0, 1):
        assert stack.cloud("POST", e, f"/tasks/{task_id}/rounds/{r}/scores", json=body).status_code == 200
    cid = closes[0]["preliminary_cid"]
    blob = stack.store.get(cid)
    tasks.finalize_round(task_id, blob_digest(blob).raw, cid, 500_000)
    return blob, cid


def test_stale_report_is_weighted_and_one_beyond_tau_max_refused(stack: EdgeStack) -> None:
    spec = create_task(stack.chain, stack.data, category=128, rounds=3, asynchrony=ASYNC, aggregation=FEDAVG)
    assert stack.chain.access(dev_key(CLOUD)).tasks.task(spec.task_id).tau_max == 1
    stack.serve_task(spec)
    task_id, w0, cid0 = spec.task_id, stack.data.initial_model, stack.data.initial_cid
    fast, slow, late = stack.vehicles_at(0, 3, 128, first_row=0)

    # version 1: the fast vehicle reports; the slow one trains from w0 but is not done yet
    stack.start_round(task_id, w0, cid0)
    assert stack.open_round(0, task_id, 1, w0, cid0) == sorted(v.index for v in (fast, slow, late))
    stack.open_round(1, task_id, 1, w0, cid0)
    assert stack.upload(0, fast, task_id, 1, update_blob(w0, spec, 1, fast, seed=1)).status_code == 202
    slow_blob = update_blob(w0, spec, 1, slow, seed=2)
    late_blob = update_blob(w0, spec, 1, late, seed=3)
    w1, cid1 = close_version(stack, task_id, 1)

    # version 2: the slow report arrives (base 1, τ = 1) next to a fresh one
    stack.start_round(task_id, w1, cid1)
    stack.open_round(0, task_id, 2, w1, cid1)
    stack.open_round(1, task_id, 2, w1, cid1)
    stale = stack.upload(0, slow, task_id, 1, slow_blob)
    assert stale.status_code == 202 and stale.json()["round"] == 2, stale.text
    again = stack.upload(0, slow, task_id, 1, slow_blob)  # sent again: the same receipt, nothing new
    assert (again.status_code, again.json()) == (202, stale.json())
    other = stack.upload(0, slow, task_id, 1, update_blob(w0, spec, 1, slow, seed=5))
    assert (other.status_code, other.json()["reason"]) == (409, "duplicate")
    fresh_blob = update_blob(w1, spec, 2, fast, seed=4)
    assert stack.upload(0, fast, task_id, 2, fresh_blob).status_code == 202
    w2, cid2 = close_version(stack, task_id, 2)

    tasks = stack.chain.access(dev_key(CLOUD)).tasks
    (recorded,) = [r for r in tasks.recorded_rounds(task_id, round=2) if r.edge == 0]
    records = {r.vehicle: r for r in recorded.decoded()}
    assert (records[fast.index].staleness, records[slow.index].staleness) == (0, 1)
    # the edge ran the round core's apply_buffer: same model, θ·s(τ) recorded
    vec = {name: flatten(decode_state(b, spec.model)[0]) for name, b in (("w0", w0), ("w1", w1), ("slow", slow_blob), ("fresh", fresh_blob))}
    reports = {fast.index: Report(vec["fresh"], vec["w1"], 1), slow.index: Report(vec["slow"], vec["w0"], 0)}
    sizes = {v: 64 for v in reports}
    mine = apply_buffer(edge_rule(FEDAVG, None), reports, sizes, vec["w1"], 1, ASYNC)
    assert torch.allclose(mine.model, flatten(decode_state(w2, spec.model)[0]), atol=1e-6)  # type: ignore[arg-type]
    assert records[fast.index].theta == to_fixed(0.5)
    assert records[slow.index].theta == to_fixed(0.5 * staleness_weight(1, ASYNC)) == to_fixed(mine.contributions[slow.index])
    # the vehicle signed base 1: the chain agrees the stale record is valid, and so does the audit
    log = [x.entry for x in tasks.recorded_rounds(task_id, edge=0)]
    position = sorted(records).index(slow.index)
    proof = record_proofs(recorded.records)[position]
    with reverts("RecordValid"):
        tasks.challenge_record(task_id, 0, log, 1, position, recorded.records[position], proof)
    auditor = Auditor(stack.chain.w3, stack.chain.deployment)
    assert all(c.ok for c in auditor.compare(task_id) if c.section == "signature")

    # version 3: a report from version 1 is 2 > τ_max versions old: refused, nothing stored
    stack.start_round(task_id, w2, cid2)
    stack.open_round(0, task_id, 3, w2, cid2)
    too_old = stack.upload(0, late, task_id, 1, late_blob)
    assert (too_old.status_code, too_old.json()["reason"]) == (409, "stale")
    assert httpx.get(f"{stack.url(0)}/tasks/{task_id}/rounds/3").json()["received"] == []


def test_a_vehicle_that_moves_takes_its_stale_report_to_the_new_edge(stack: EdgeStack) -> None:
    """Selected at edge 0 in version 1, the vehicle hands over to edge 1 after version 1
    closed: edge 0 releases it from version 1 too (a report from there may still come,
    τ_max = 1), so edge 1 files its version-1 report in version 2 and edge 0 refuses one
    signed for it (no double report)."""
    spec = create_task(stack.chain, stack.data, category=256, rounds=3, asynchrony=ASYNC, aggregation=FEDAVG)
    stack.serve_task(spec)
    task_id, w0, cid0 = spec.task_id, stack.data.initial_model, stack.data.initial_cid
    mover, stayer = stack.vehicles_at(0, 2, 256, first_row=256)
    stack.start_round(task_id, w0, cid0)
    assert stack.open_round(0, task_id, 1, w0, cid0) == sorted(v.index for v in (mover, stayer))
    assert stack.open_round(1, task_id, 1, w0, cid0) == []
    assert stack.upload(0, stayer, task_id, 1, update_blob(w0, spec, 1, stayer, seed=1)).status_code == 202
    report = update_blob(w0, spec, 1, mover, seed=2)
    w1, cid1 = close_version(stack, task_id, 1)

    stack.start_round(task_id, w1, cid1)
    stack.open_round(0, task_id, 2, w1, cid1)
    stack.open_round(1, task_id, 2, w1, cid1)
    body = association_request(mover.account, stack.chain.chain_id, stack.address(1), x=1000.0, previous_edge=stack.address(0))
    assert httpx.post(stack.url(1) + "/associate", json=body).json()["released_by_previous"] is True
    assert mover.index in httpx.get(f"{stack.url(1)}/tasks/{task_id}/rounds/1").json()["selected"]
    assert mover.index not in httpx.get(f"{stack.url(0)}/tasks/{task_id}/rounds/1").json()["selected"]
    at_old = stack.upload(0, mover, task_id, 1, report)
    assert (at_old.status_code, at_old.json()["reason"]) == (403, "not_selected")
    moved = stack.upload(1, mover, task_id, 1, report)
    assert moved.status_code == 202 and moved.json()["round"] == 2, moved.text
    assert httpx.get(f"{stack.url(1)}/tasks/{task_id}/rounds/2").json()["received"] == [mover.index]
