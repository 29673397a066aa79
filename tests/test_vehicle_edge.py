"""A :class:`Vehicle` against REAL edges (``edge_node.create_app`` on uvicorn) and a real
Anvil: funded by plain transfers, registered with its data profile, associated, selected
in a round the cloud opens, handed over to another edge between selection and upload,
global model fetched through the new edge's gateway, DP training, signed upload accepted."""

from __future__ import annotations

import httpx
import pytest
from eth_account import Account

from bmfl.blobs.errors import BlobIntegrityError
from bmfl.protocol.schemas import TrainingSpec
from chain.anvil import dev_key
from service_fixtures import OPERATOR, EdgeStack, create_task
from service_fixtures import edge_stack as stack  # noqa: F401
from service_fixtures import service_chain  # noqa: F401
from vehicle_client.accounts import fleet_accounts, fund
from vehicle_client.http import ServiceError
from vehicle_client.vehicle import Vehicle

CATEGORY = 4


def test_vehicle_round_with_handover(stack: EdgeStack) -> None:
    chain = stack.chain
    account = fleet_accounts(seed=42, count=1)[0]
    assert fund(chain.w3, Account.from_key(dev_key(OPERATOR)), [account.address], 10**17) == 1
    vehicle = Vehicle(account, stack.data.train.subset(list(range(48))), chain.chain_id, categories=CATEGORY)
    access = chain.access("0x" + bytes(account.key).hex())
    index = vehicle.register(access)
    info = access.registry.vehicle(index)
    assert (info.samples, info.categories, info.profile_hash) == (vehicle.registered_samples, CATEGORY, vehicle.profile_hash())
    assert vehicle.privacy.steps == 1  # the noisy count, accounted
    assert vehicle.register(access) == index  # already registered: kept

    first = vehicle.associate(stack.url(0), stack.address(0))
    assert (first.vehicle_index, first.edge_index) == (index, 0)
    spec = create_task(chain, stack.data, category=CATEGORY, rounds=2,
                       training=TrainingSpec(epochs=1, batch_size=16, lr=0.1, noise_multiplier=1.0))  # fmt: skip
    stack.serve_task(spec)
    stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
    assert stack.open_round(0, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid) == [index]

    vehicle.position = (900.0, 0.0)  # now nearest to edge 1 (x = 1000): hand over after selection
    moved = vehicle.associate(stack.url(1), stack.address(1), previous_edge=stack.address(0))
    assert (moved.edge_index, moved.released_by_previous) == (1, True)
    stack.open_round(1, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid)
    assignment = vehicle.poll(stack.url(1), spec.task_id)  # selected by edge 0, per the chain
    assert (assignment.selected, assignment.open, assignment.round, assignment.edge) == (True, True, 1, stack.address(1))

    state = vehicle.fetch_global(stack.url(1), assignment.global_cid, assignment.global_digest, assignment.model)
    update = vehicle.train(assignment, state)
    assert update.epsilon is not None and update.epsilon > 0
    receipt = vehicle.upload(stack.url(1), stack.address(1), spec.task_id, 1, update.blob, update.epsilon)
    assert (receipt.vehicle, receipt.round) == (index, 1)
    progress = httpx.get(f"{stack.url(1)}/tasks/{spec.task_id}/rounds/1").json()
    assert progress["received"] == [index]

    again = vehicle.upload(stack.url(1), stack.address(1), spec.task_id, 1, update.blob, update.epsilon)
    assert again == receipt  # the same update sent again (a lost reply): the same receipt
    other = vehicle.train(assignment, state)
    with pytest.raises(ServiceError) as refused:
        vehicle.upload(stack.url(1), stack.address(1), spec.task_id, 1, other.blob, other.epsilon)
    assert (refused.value.status, refused.value.reason) == (409, "duplicate")
    with pytest.raises(BlobIntegrityError, match="announced"):
        vehicle.fetch_global(stack.url(1), assignment.global_cid, "0x" + "00" * 32, assignment.model)
