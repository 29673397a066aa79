"""A bounded load test on loopback (the full run with figures is ``bench/edge_load.py``):
40 vehicles upload signed 87 KB updates to one real edge from 8 threads, every update
sent twice at once. Exactly one copy of each is stored and both get its receipt (202);
the edge's progress and SQLite hold each vehicle once; after the close
the chain records each vehicle once, with the digest of what it sent."""

from __future__ import annotations

import random
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import httpx

from bmfl.blobs.codec import decode_state
from bmfl.protocol.schemas import AggregationSpec, RuleSpec
from chain.anvil import dev_key
from service_fixtures import CLOUD, ServiceChain, create_task, start_edge_stack
from service_fixtures import service_chain  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.edge_load import associate, hammer, register_fleet, update_forms  # noqa: E402

VEHICLES, WORKERS = 40, 8


def test_concurrent_uploads_are_neither_lost_nor_double_counted(service_chain: ServiceChain, tmp_path: Path) -> None:
    stack = start_edge_stack(service_chain, tmp_path, edges=1)
    try:
        fedavg = AggregationSpec(edge=RuleSpec(name="fedavg"), filters=[])  # the intake is under test, not the filter
        spec = create_task(stack.chain, stack.data, category=1, aggregation=fedavg)
        stack.serve_task(spec)
        fleet = register_fleet(stack.chain.w3, stack.chain.deployment, VEHICLES, seed=1)
        associate(stack.url(0), stack.address(0), stack.chain.chain_id, [a for a, _ in fleet], WORKERS)
        stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
        selected = stack.open_round(0, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid)
        assert sorted(selected) == sorted(i for _, i in fleet)

        initial, _ = decode_state(stack.data.initial_model, spec.model)
        forms = update_forms(dict(initial), spec.task_id, stack.address(0), stack.chain.chain_id, fleet)
        twice = forms * 2
        random.Random(0).shuffle(twice)
        outcomes, _ = hammer(f"{stack.url(0)}/tasks/{spec.task_id}/rounds/1/updates", twice, WORKERS)
        assert Counter((o.status, o.reason) for o in outcomes) == {(202, ""): 2 * VEHICLES}  # a twin gets the receipt

        expected = {index: form[2] for (_, index), form in zip(fleet, forms)}
        progress = httpx.get(f"{stack.url(0)}/tasks/{spec.task_id}/rounds/1").json()
        assert sorted(progress["received"]) == sorted(expected)
        with sqlite3.connect(stack.settings[0].state_dir / "edge.sqlite3") as db:
            rows = db.execute("SELECT vehicle, digest FROM updates WHERE task_id = ?", (spec.task_id,)).fetchall()
        assert len(rows) == VEHICLES and dict(rows) == expected

        close = stack.cloud("POST", 0, f"/tasks/{spec.task_id}/rounds/1/close")
        assert close.status_code == 200, close.text
        tasks = stack.chain.access(dev_key(CLOUD)).tasks
        records = [r for rr in tasks.recorded_rounds(spec.task_id) for r in rr.decoded()]
        assert len(records) == VEHICLES
        assert {r.vehicle: "0x" + r.update_digest.hex() for r in records} == expected
    finally:
        stack.stop()
