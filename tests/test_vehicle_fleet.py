"""The :class:`Fleet` against REAL edges (uvicorn) and a real Anvil, the test playing the
cloud: seeded keys, funding, registration, nearest-edge association from the ``GET
/edges`` directory, and one round in which every selected vehicle (one an attacker, one
handed over to another edge after selection) trains through the core and is accepted."""

from __future__ import annotations

import httpx
from rich.console import Console

from bmfl.protocol.schemas import TrainingSpec
from bmfl.privacy import SecureGenerator
from bmfl.rounds.seeds import choose_attackers
from chain.anvil import dev_key
from service_fixtures import OPERATOR, EdgeStack, create_task
from service_fixtures import edge_stack as stack  # noqa: F401
from service_fixtures import service_chain  # noqa: F401
from vehicle_client import Fleet, FleetSettings, UploadEvent
from vehicle_client.accounts import fleet_accounts
from vehicle_client.mobility import nearest_edge

CATEGORY = 8


def test_fleet_setup_handover_and_round(stack: EdgeStack) -> None:
    chain = stack.chain
    settings = FleetSettings(
        cloud_url=stack.directory.url, rpc_url=chain.rpc_url, deployment=chain.deployment_file,
        funder_key=dev_key(OPERATOR), vehicles=4, seed=5, partition="iid", categories=CATEGORY,
        attack="sign_flip", attack_fraction=0.25, torch_threads=1,
    )  # fmt: skip
    fleet = Fleet(settings, train_data=stack.data.train.subset(list(range(256))), console=Console(quiet=True))
    fleet.setup()
    registry = chain.access(dev_key(OPERATOR)).registry
    assert [v.address for v in fleet.vehicles] == [a.address for a in fleet_accounts(5, 4)]
    for v in fleet.vehicles:
        assert v.index is not None and registry.vehicle(v.index).active and len(v.data) == 64
        assert fleet.edge_of(v) == nearest_edge(fleet.edges, *v.position)
    assert len(fleet.attackers) == 1
    # the core's seeded choices: attackers drawn as the simulator draws them; training is secret (no seed)
    assert {i for i, v in enumerate(fleet.vehicles) if v.attack} == set(choose_attackers(4, 0.25, 5))
    assert all(isinstance(v.generator, SecureGenerator) for v in fleet.vehicles)

    spec = create_task(chain, stack.data, category=CATEGORY, rounds=1,
                       training=TrainingSpec(epochs=1, batch_size=16, lr=0.1, noise_multiplier=1.0))  # fmt: skip
    stack.serve_task(spec)
    stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
    selected = [i for e in (0, 1) for i in stack.open_round(e, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid)]
    assert sorted(selected) == sorted(v.index for v in fleet.vehicles)

    mover = fleet.vehicles[0]  # selected where it was; now it drives to the other edge
    before = fleet.edge_of(mover)
    mover.position = (1000.0 - before.x, 0.0)  # edges at x = 0 and 1000
    assert fleet.move(mover) and fleet.edge_of(mover).index == 1 - before.index
    assert fleet.report.handovers == 1

    uploads: list[UploadEvent] = []
    assert fleet.serve(spec.task_id, on_upload=uploads.append)
    assert sorted(u.vehicle for u in uploads) == sorted(selected) and fleet.report.uploads == 4
    assert [u.edge for u in uploads if u.vehicle == mover.index] == [1 - before.index]
    assert [u.vehicle for u in uploads if u.attack == "sign_flip"] == [fleet.attackers[0].index]
    assert all(u.epsilon is not None and u.epsilon > 0 for u in uploads)
    assert all(v.privacy.steps == 1 + 4 for v in fleet.vehicles if not v.attack or v.attack.trains)  # the count, E·⌈64/16⌉ once
    received = [i for e in (0, 1) for i in httpx.get(f"{stack.url(e)}/tasks/{spec.task_id}/rounds/1").json()["received"]]
    assert sorted(received) == sorted(selected)
    assert not fleet.serve(spec.task_id)  # one turn per vehicle and round
    fleet.close()
