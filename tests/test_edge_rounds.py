"""Edge round steps over real HTTP and a real chain: selection, close with an attacker
flagged malicious in the on-chain record (every record signed by its vehicle, the round's
manifest in the blob store), scores only once recording closed, evaluate,
idempotent cloud calls (no second transaction), cloud-only access, a replay in the next
round, a restart mid-round that keeps the accepted updates; the chain's reliability
encoding. The round core's own steps are tested in test_round_core.py."""

from __future__ import annotations

import json

import dp_accounting
import httpx
import pytest

from bmfl.attacks import get_attack
from bmfl.blobs.codec import blob_digest, decode_state
from bmfl.incentives import to_fixed
from bmfl.params import flatten
from bmfl.protocol.schemas import RoundClose
from bmfl.task import AggregationSpec, RuleSpec
from bmfl.protocol.signing import recover, update_message
from chain.anvil import dev_key
from chain.tasks import Phase
from chain.records import fixed_reliability
from service_fixtures import CLOUD, PUBLISHER, EdgeStack, create_task, signed_request, update_blob, update_form
from service_fixtures import edge_stack as stack  # noqa: F401
from service_fixtures import service_chain  # noqa: F401


def nonce(stack: EdgeStack, edge: int) -> int:
    return stack.chain.w3.eth.get_transaction_count(stack.address(edge))


def test_round_with_attacker_records_scores_and_is_idempotent(stack: EdgeStack) -> None:
    spec = create_task(stack.chain, stack.data, category=16)
    stack.serve_task(spec)
    task_id, initial, cid = spec.task_id, stack.data.initial_model, stack.data.initial_cid
    honest_a = stack.vehicles_at(0, 3, 16, first_row=0)
    attacker = stack.vehicles_at(0, 1, 16, first_row=192)[0]
    honest_b = stack.vehicles_at(1, 1, 16, first_row=256)[0]
    stack.start_round(task_id, initial, cid)
    assert stack.open_round(0, task_id, 1, initial, cid) == sorted(v.index for v in [*honest_a, attacker])
    assert stack.open_round(1, task_id, 1, initial, cid) == [honest_b.index]
    tasks = stack.chain.access(dev_key(CLOUD)).tasks
    tasks_registry = stack.chain.access(dev_key(CLOUD)).registry

    forms = {}
    for seed, vehicle in enumerate(honest_a):
        forms[vehicle.index] = update_blob(initial, spec, 1, vehicle, seed=seed)
        assert stack.upload(0, vehicle, task_id, 1, forms[vehicle.index], 1.5).status_code == 202
    poisoned = update_blob(initial, spec, 1, attacker, attack=get_attack("same_value"))
    assert stack.upload(0, attacker, task_id, 1, poisoned, 1.5).status_code == 202
    assert stack.upload(1, honest_b, task_id, 1, update_blob(initial, spec, 1, honest_b), 1.5).status_code == 202

    # unsigned, or signed by anyone but the registry's cloud: refused
    path = f"/tasks/{task_id}/rounds/1/close"
    assert httpx.post(stack.url(0) + path).json()["reason"] == "unsigned"
    outsider = stack.chain.access(dev_key(PUBLISHER)).account
    refused = signed_request(outsider, stack.chain.chain_id, "POST", stack.url(0) + path)
    assert (refused.status_code, refused.json()["reason"]) == (403, "not_cloud")

    closes = [RoundClose.model_validate(stack.cloud("POST", e, path).json()) for e in (0, 1)]
    assert all(c.recorded for c in closes)
    recorded = {r.edge: r for r in tasks.recorded_rounds(task_id, round=1)}
    records = {r.vehicle: r for r in recorded[0].decoded()}
    assert records[attacker.index].malicious and records[attacker.index].theta == 0
    assert all(not records[v.index].malicious and records[v.index].theta > 0 for v in honest_a)
    assert records[honest_a[0].index].update_digest == blob_digest(forms[honest_a[0].index]).raw
    assert recorded[0].samples == 3 * 64 and recorded[0].preliminary_cid == closes[0].preliminary_cid
    assert [t.malicious for t in closes[0].trainers] == [records[t.vehicle].malicious for t in closes[0].trainers]
    # each record carries the vehicle's own signature of its upload to this edge
    assert all(
        recover(update_message(stack.chain.chain_id, task_id, 1, stack.address(0), r.update_digest), "0x" + r.signature.hex())
        == tasks_registry.vehicle_at(v)
        for v, r in records.items()
    )  # fmt: skip
    assert stack.store.has(closes[0].preliminary_cid)  # type: ignore[arg-type]
    manifest = json.loads(stack.store.get(recorded[0].manifest_cid))
    assert [u["vehicle"] for u in manifest["updates"]] == sorted(records) and manifest["samples"] == 3 * 64

    # idempotent: the same answers, no second transaction
    before = nonce(stack, 0)
    assert stack.open_round(0, task_id, 1, initial, cid) == sorted(v.index for v in [*honest_a, attacker])
    assert stack.cloud("POST", 0, path).json() == closes[0].model_dump(mode="json")
    assert nonce(stack, 0) == before

    preliminaries = {"preliminaries": {str(e): c.preliminary_cid for e, c in enumerate(closes)}}
    early = stack.cloud("POST", 0, f"/tasks/{task_id}/rounds/1/scores", json=preliminaries)
    assert (early.status_code, early.json()["reason"]) == (409, "wrong_phase")  # recording still open on chain
    tasks.close_recording(task_id)  # both active edges recorded
    scores = [stack.cloud("POST", e, f"/tasks/{task_id}/rounds/1/scores", json=preliminaries).json() for e in (0, 1)]
    assert [s["edge"] for s in scores] == [0, 1] and all(len(s["scores"]) == 2 for s in scores)
    events = tasks.events("ScoresSubmitted", taskId=task_id, round=1)
    submitted = {ev.evaluator: ev.scores for ev in events}  # type: ignore[attr-defined]
    assert submitted[0] == [round(s * 1_000_000) for s in scores[0]["scores"]]
    assert all(0 < s <= 1_000_000 for s in submitted[0])
    before = nonce(stack, 1)
    assert stack.cloud("POST", 1, f"/tasks/{task_id}/rounds/1/scores", json=preliminaries).json() == scores[1]
    assert nonce(stack, 1) == before
    assert stack.cloud("GET", 0, f"/tasks/{task_id}/rounds/1").json()["phase"] == "scored"
    assert tasks.task(task_id).phase == Phase.SCORING

    evaluation = stack.cloud("POST", 0, f"/tasks/{task_id}/evaluate", json={"cid": closes[0].preliminary_cid}).json()
    assert evaluation["edge"] == 0 and evaluation["accuracy"] == pytest.approx(scores[0]["scores"][0], abs=1e-6)

    # round 2: the round-1 upload replayed is refused (its signature names round 1)
    prelim = stack.store.get(closes[0].preliminary_cid)  # type: ignore[arg-type]
    tasks.finalize_round(task_id, blob_digest(prelim).raw, closes[0].preliminary_cid, submitted[0][0])  # type: ignore[arg-type]
    stack.start_round(task_id, prelim, closes[0].preliminary_cid)  # type: ignore[arg-type]
    stack.open_round(0, task_id, 2, prelim, closes[0].preliminary_cid)  # type: ignore[arg-type]
    data, files = update_form(honest_a[0].account, stack.chain.chain_id, task_id, 1, stack.address(0), forms[honest_a[0].index])
    replay = httpx.post(f"{stack.url(0)}/tasks/{task_id}/rounds/2/updates", data=data, files=files)
    assert (replay.status_code, replay.json()["reason"]) == (401, "bad_signature")
    assert httpx.get(f"{stack.url(0)}/tasks/{task_id}/rounds/2").json()["received"] == []


def test_restart_mid_round_keeps_accepted_updates(stack: EdgeStack) -> None:
    spec = create_task(stack.chain, stack.data, category=32)
    stack.serve_task(spec)
    task_id, initial, cid = spec.task_id, stack.data.initial_model, stack.data.initial_cid
    first, second = stack.vehicles_at(0, 2, 32, first_row=512)
    stack.start_round(task_id, initial, cid)
    stack.open_round(0, task_id, 1, initial, cid)
    assert stack.upload(0, first, task_id, 1, update_blob(initial, spec, 1, first), 1.5).status_code == 202

    stack.restart(0)
    progress = httpx.get(f"{stack.url(0)}/tasks/{task_id}/rounds/1").json()
    assert (progress["phase"], progress["received"]) == ("open", [first.index])
    again = stack.upload(0, first, task_id, 1, update_blob(initial, spec, 1, first), 1.5)  # its receipt survives too
    assert (again.status_code, again.json()["round"]) == (202, 1)
    other = stack.upload(0, first, task_id, 1, update_blob(initial, spec, 1, first, seed=1), 1.5)
    assert other.json()["reason"] == "duplicate"
    assert stack.upload(0, second, task_id, 1, update_blob(initial, spec, 1, second, seed=1), 1.5).status_code == 202

    close = RoundClose.model_validate(stack.cloud("POST", 0, f"/tasks/{task_id}/rounds/1/close").json())
    assert close.recorded and sorted(t.vehicle for t in close.trainers) == sorted([first.index, second.index])
    assert all(t.epsilon == 1.5 and not t.malicious for t in close.trainers)
    tasks = stack.chain.access(dev_key(CLOUD)).tasks
    assert tasks.task(task_id).recorded_edges == 1


def test_reliability_is_clamped_to_the_chains_int64() -> None:
    assert fixed_reliability(float("-inf")) == -(2**63) and fixed_reliability(None) == 0
    assert fixed_reliability(float("inf")) == 2**63 - 1 and fixed_reliability(-1.5) == -1_500_000


def test_dp_fedavg_runs_at_the_edge_and_reports_its_user_level_epsilon(stack: EdgeStack) -> None:
    """A task selecting DP-FedAvg flows through the edge's round core: the preliminary
    model is the clipped mean plus noise σC/K, and the round's manifest carries the
    user-level ε, equal to dp_accounting's own computation."""
    rule = RuleSpec(name="dp_fedavg", options={"clip": 0.5, "noise_multiplier": 1.5})
    spec = create_task(stack.chain, stack.data, category=64, aggregation=AggregationSpec(edge=rule, filters=[]))
    stack.serve_task(spec)
    task_id, initial, cid = spec.task_id, stack.data.initial_model, stack.data.initial_cid
    vehicles = stack.vehicles_at(0, 3, 64, first_row=640)
    stack.start_round(task_id, initial, cid)
    assert stack.open_round(0, task_id, 1, initial, cid) == sorted(v.index for v in vehicles)
    blobs = [update_blob(initial, spec, 1, v, seed=i) for i, v in enumerate(vehicles)]
    for v, blob in zip(vehicles, blobs):
        assert stack.upload(0, v, task_id, 1, blob).status_code == 202
    close = RoundClose.model_validate(stack.cloud("POST", 0, f"/tasks/{task_id}/rounds/1/close").json())
    (recorded,) = stack.chain.access(dev_key(CLOUD)).tasks.recorded_rounds(task_id, round=1)
    manifest = json.loads(stack.store.get(recorded.manifest_cid))
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.5), 1)
    assert manifest["user_level_epsilon"] == pytest.approx(dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(1e-5))
    w0 = flatten(decode_state(initial, spec.model)[0])
    deltas = [flatten(decode_state(b, spec.model)[0]) - w0 for b in blobs]
    clipped = sum(d * min(1.0, 0.5 / float(d.norm())) for d in deltas) / 3
    noise = flatten(decode_state(stack.store.get(close.preliminary_cid), spec.model)[0]) - w0 - clipped
    assert float(noise.std()) == pytest.approx(1.5 * 0.5 / 3, rel=0.05)  # σC/K over 21,840 coordinates
    assert [r.theta for r in recorded.decoded()] == [to_fixed(1 / 3)] * 3
