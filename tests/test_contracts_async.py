"""Asynchronous tasks on a real Anvil (docs/algorithms.md §15, "On chain"): a round is one
global version t, a record carries its staleness τ = t − b in its flags and the vehicle
signs its base version b. The contract stores τ_max and refuses τ > τ_max or a base
before version 1; the attacker's moves — an edge recording a stale report as fresh or
inventing a base, an edge counting one signed upload twice, a cloud advancing versions
past an edge's buffer — are refused or voided, and the chain-only audit sees them."""

from __future__ import annotations

from typing import Any

import pytest

from chain.audit import Auditor
from chain.records import TrainerRecord, record_proofs
from chain.settlement import edge_logs
from chain.tasks import TaskParams
from chain_fixtures import Chain, chain, chain_module, digest, reverts  # noqa: F401

BAD_SIGNATURE, REPLAYED = 0, 3
"""``BMFLTasks.Fault`` values."""


def new_task(chain: Chain, tau_max: int, **overrides: object) -> int:
    params = chain.params(max_rounds=4, tau_max=tau_max, **overrides)
    task_id, _ = chain.tasks(chain.publisher).create_task(params, 10**18)
    return task_id


def version(chain: Chain, task_id: int, records: list[TrainerRecord], edge: int = 0) -> None:
    """Edge ``edge`` records ``records`` in the current version; recording closes past the
    deadline (the other edges are absent) and the cloud finalizes without a quorum."""
    r = chain.tasks().task(task_id).round
    chain.tasks(chain.edges[edge]).record_round(task_id, r, digest(f"p{r}"), f"bafy-p{r}", 10, records)
    chain.close(task_id)
    chain.finalize(task_id, label=f"g{r}")


def proof(chain: Chain, task_id: int, vehicle: int, round_: int, edge: int = 0) -> tuple[list[Any], tuple[int, int, bytes, list[bytes]]]:
    """(edge's log, (log index, position, record, proof)) of ``vehicle``'s record in ``round_``."""
    log = edge_logs(chain.tasks(), task_id)[edge]
    for index, recorded in enumerate(log.rounds):
        for position, packed in enumerate(recorded.records):
            if recorded.round == round_ and TrainerRecord.unpack(packed).vehicle == vehicle:
                return log.entries, (index, position, packed, record_proofs(recorded.records)[position])
    raise LookupError(vehicle)


def test_tau_max_is_stored_and_bounded(chain: Chain) -> None:
    task_id, receipt = chain.tasks(chain.publisher).create_task(chain.params(tau_max=3), 10**18)
    assert chain.tasks().task(task_id).tau_max == 3
    assert receipt.event("TaskCreated").tauMax == 3  # type: ignore[attr-defined]
    assert TaskParams.from_created(receipt.event("TaskCreated")).tau_max == 3
    assert chain.tasks().contract.functions.MAX_STALENESS().call() == 127
    with reverts("InvalidTask"):  # τ needs 7 bits of the flags byte (the Python model refuses it first)
        chain.tasks(chain.publisher).create_task(TaskParams.model_construct(**(chain.params().model_dump() | {"tau_max": 128})), 10**18)
    with pytest.raises(ValueError):
        chain.params(tau_max=128)


def test_stale_records_within_tau_max_are_kept_and_the_others_refused(chain: Chain) -> None:
    task_id = new_task(chain, tau_max=2)
    r1 = chain.start(task_id)
    with reverts("BaseBeforeStart"):  # version 1 has no older base
        version(chain, task_id, [chain.record(task_id, r1, 0, 0, 5, staleness=1)])
    version(chain, task_id, [chain.record(task_id, r1, 0, 0, 5)])
    r2 = chain.start(task_id)
    version(chain, task_id, [chain.record(task_id, r2, 0, 1, 4, staleness=1)])
    r3 = chain.start(task_id)
    version(chain, task_id, [chain.record(task_id, r3, 0, 2, 3, staleness=2)])
    r4 = chain.start(task_id)
    with reverts("StaleRecord"):
        version(chain, task_id, [chain.record(task_id, r4, 0, 3, 2, staleness=3)])
    records = [TrainerRecord.unpack(p) for x in chain.tasks().recorded_rounds(task_id) for p in x.records]
    assert [(r.vehicle, r.staleness) for r in records] == [(0, 0), (1, 1), (2, 2)]
    assert chain.tasks().edge_book(task_id, 0).theta_total == 12
    audit = Auditor(chain.w3, chain.deployment).compare(task_id)
    assert all(c.ok for c in audit if c.section == "signature")


def test_a_synchronous_task_refuses_any_staleness(chain: Chain) -> None:
    task_id = new_task(chain, tau_max=0)
    chain.start(task_id)
    version(chain, task_id, [chain.record(task_id, 1, 0, 0, 5)])
    r2 = chain.start(task_id)
    with reverts("StaleRecord"):
        version(chain, task_id, [chain.record(task_id, r2, 0, 1, 5, staleness=1)])


def test_an_edge_recording_a_stale_report_as_fresh_is_voided(chain: Chain) -> None:
    """The vehicle signed base 1; the edge records it in version 2 with τ = 0 (θ not
    discounted) or with an invented τ: the signature names another base, so it is voided."""
    task_id = new_task(chain, tau_max=2, challenge_period=100)
    chain.start(task_id)
    version(chain, task_id, [])
    r2 = chain.start(task_id)
    honest = chain.record(task_id, r2, 0, 0, 5, staleness=1)
    as_fresh = chain.record(task_id, r2, 0, 1, 9, signed_round=1)  # signed base 1, recorded τ = 0
    invented = chain.record(task_id, r2, 0, 2, 9, staleness=1).model_copy(update={"staleness": 0})
    version(chain, task_id, [honest, as_fresh, invented])
    failing = [c.subject for c in Auditor(chain.w3, chain.deployment).compare(task_id) if not c.ok and c.section == "signature"]
    assert failing == ["round 2 edge 0 vehicle 1", "round 2 edge 0 vehicle 2"]
    outsider = chain.tasks(chain.outsider)
    log, p = proof(chain, task_id, 0, r2)
    with reverts("RecordValid"):
        outsider.challenge_record(task_id, 0, log, *p)
    for v in (1, 2):
        log, p = proof(chain, task_id, v, r2)
        ev = outsider.challenge_record(task_id, 0, log, *p).event("RecordVoided")
        assert (ev.vehicle, ev.fault, ev.round) == (v, BAD_SIGNATURE, r2)  # type: ignore[attr-defined]
    assert chain.tasks().edge_book(task_id, 0).theta_total == 5
    assert all(c.ok for c in Auditor(chain.w3, chain.deployment).compare(task_id) if c.section == "signature")


def test_an_upload_counted_twice_is_voided(chain: Chain) -> None:
    """One signed upload from base 1 is valid in versions 1..1 + τ_max; an edge recording it
    again in version 2 is caught by ``challengeReplay`` (and by the audit until then)."""
    task_id = new_task(chain, tau_max=2, challenge_period=100)
    r1 = chain.start(task_id)
    first = chain.record(task_id, r1, 0, 0, 5)
    other = chain.record(task_id, r1, 0, 1, 5)
    version(chain, task_id, [first, other])
    chain.start(task_id)
    again = first.model_copy(update={"staleness": 1})  # the same signature: base 2 − 1 = 1
    fresh = chain.record(task_id, 2, 0, 1, 4)  # vehicle 1 again, from base 2: allowed
    version(chain, task_id, [again, fresh])
    auditor = Auditor(chain.w3, chain.deployment)
    failing = [c.subject for c in auditor.compare(task_id) if not c.ok]
    assert failing == ["round 2 edge 0 vehicle 0 repeats its upload from version 1"]
    outsider = chain.tasks(chain.outsider)
    log, earlier = proof(chain, task_id, 0, 1)
    _, later = proof(chain, task_id, 0, 2)
    _, other_first = proof(chain, task_id, 1, 1)
    _, other_later = proof(chain, task_id, 1, 2)
    with reverts("RecordValid"):  # another base version
        outsider.challenge_replay(task_id, 0, log, other_first, other_later)
    with reverts("RecordValid"):  # the earlier one is not the repeat
        outsider.challenge_replay(task_id, 0, log, later, earlier)
    ev = outsider.challenge_replay(task_id, 0, log, earlier, later).event("RecordVoided")
    assert (ev.vehicle, ev.fault, ev.round) == (0, REPLAYED, 2)  # type: ignore[attr-defined]
    assert chain.tasks().edge_book(task_id, 0).theta_total == 14
    with reverts("AlreadyVoided"):
        outsider.challenge_replay(task_id, 0, log, earlier, later)
    assert all(c.ok for c in auditor.compare(task_id))


def test_the_cloud_cannot_advance_the_version_past_an_edges_buffer(chain: Chain) -> None:
    """A cloud that closes versions early to make honest reports stale: before the deadline
    it may close only once every active edge recorded (each edge closes its own buffer)."""
    task_id = new_task(chain, tau_max=2)
    r = chain.start(task_id)
    chain.tasks(chain.edges[0]).record_round(task_id, r, digest("p"), "p", 1, [chain.record(task_id, r, 0, 0, 5)])
    with reverts("EdgesMissing"):
        chain.tasks(chain.cloud).close_recording(task_id)
