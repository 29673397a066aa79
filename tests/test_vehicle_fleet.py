"""The :class:`Fleet` against REAL edges (uvicorn) and a real Anvil, the test playing the
cloud: seeded keys, funding, registration, nearest-edge association from the ``GET
/edges`` directory, and one round in which every selected vehicle (one an attacker, one
handed over to another edge after selection) trains through the core and is accepted;
then a round in which the network loses an edge's first receipt after the edge stored
the update, and the vehicle gets it by sending the update again; and colluding attackers,
whose uploads the fleet shapes per edge as the simulator does."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import torch
from rich.console import Console

from bmfl.blobs.codec import blob_digest, decode_state
from bmfl.params import flatten
from bmfl.protocol.schemas import TrainingSpec
from bmfl.privacy import SecureGenerator
from bmfl.rounds.seeds import choose_attackers
from chain.anvil import dev_key
from bmfl.protocol.schemas import EdgeInfo
from service_fixtures import OPERATOR, EdgeStack, create_task, directory_app, serve
from service_fixtures import edge_stack as stack  # noqa: F401
from service_fixtures import service_chain  # noqa: F401
from vehicle_client import Fleet, FleetSettings, UploadEvent
from vehicle_client.accounts import fleet_accounts
from vehicle_client.mobility import nearest_edge

CATEGORY = 8
COLLUDING = 9


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


def test_a_fleets_colluding_attackers_shape_their_uploads_together(stack: EdgeStack) -> None:
    """A colluding attack runs in the fleet as in the simulator (``shape_edge_uploads``):
    IPM's attacker sends w^{r-1} − ε·(mean update of the honest vehicles that trained for
    its edge), read back from the blobs the edge stored. A white-box attack, which needs
    the edge's pipeline and test set, is refused before the fleet touches the chain."""
    chain = stack.chain
    common = dict(cloud_url=stack.directory.url, rpc_url=chain.rpc_url, deployment=chain.deployment_file,
                  funder_key=dev_key(OPERATOR), vehicles=4, seed=12, partition="iid", categories=COLLUDING,
                  attack_fraction=0.25, torch_threads=1)  # fmt: skip
    white_box = Fleet(FleetSettings(**common, attack="white_box", attack_options={"training": {"noise_multiplier": 1.0}}),
                      train_data=stack.data.train.subset(list(range(256))), console=Console(quiet=True))  # fmt: skip
    with pytest.raises(ValueError, match="white-box"):
        white_box.setup()
    assert not white_box.vehicles
    fleet = Fleet(FleetSettings(**common, attack="ipm", attack_options={"epsilon": 0.5}),
                  train_data=stack.data.train.subset(list(range(256, 512))), console=Console(quiet=True))  # fmt: skip
    fleet.setup()
    spec = create_task(chain, stack.data, category=COLLUDING, rounds=1,
                       training=TrainingSpec(epochs=1, batch_size=16, lr=0.1, noise_multiplier=1.0))  # fmt: skip
    stack.serve_task(spec)
    stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
    for e in (0, 1):
        stack.open_round(e, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid)
    uploads: list[UploadEvent] = []
    assert fleet.serve(spec.task_id, on_upload=uploads.append)
    fleet.close()
    stored = {blob_digest(path.read_bytes()).hex0x: path.read_bytes() for path in stack.store.root.rglob("*") if path.is_file()}
    reference = flatten(decode_state(stack.data.initial_model, spec.model)[0])
    delta = {u.vehicle: flatten(decode_state(stored[u.digest], spec.model)[0]) - reference for u in uploads}
    attacker = next(u for u in uploads if u.attack == "ipm")
    honest = [u.vehicle for u in uploads if u.attack is None and u.edge == attacker.edge]
    assert honest  # the seed puts honest vehicles at the attacker's edge
    expected = -0.5 * torch.stack([delta[v] for v in honest]).mean(dim=0)
    assert torch.allclose(delta[attacker.vehicle], expected, atol=1e-6)
    assert not torch.allclose(delta[attacker.vehicle], delta[honest[0]], atol=1e-3)


class LosesFirstReceipt:
    """A TCP proxy on a free 127.0.0.1 port in front of ``url`` that forwards every byte
    but the first 202 reply: it reads that reply from the edge and closes the vehicle's
    connection without sending it (the edge stored the update; the vehicle never heard)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lost = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self.upstream)  # type: ignore[arg-type]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if replies and data.startswith(b"HTTP/1.1 202"):
                    with self._lock:
                        lose = not self.lost
                        self.lost |= lose
                    if lose:
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):  # shutdown, not just close: it wakes the other pump's recv
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def close(self) -> None:
        self.listener.close()


def test_a_lost_receipt_is_fetched_by_sending_the_update_again(stack: EdgeStack) -> None:
    chain, category = stack.chain, 16
    proxies = [LosesFirstReceipt(stack.url(e)) for e in (0, 1)]
    edges = httpx.get(f"{stack.directory.url}/edges").json()
    directory = serve(directory_app([EdgeInfo(**(e | {"url": p.url})) for e, p in zip(edges, proxies)]))
    settings = FleetSettings(
        cloud_url=directory.url, rpc_url=chain.rpc_url, deployment=chain.deployment_file, funder_key=dev_key(OPERATOR),
        vehicles=4, seed=6, partition="iid", categories=category, torch_threads=1, poll_interval_s=0.1,
    )  # fmt: skip
    fleet = Fleet(settings, train_data=stack.data.train.subset(list(range(256, 512))), console=Console(quiet=True))
    try:
        fleet.setup()
        spec = create_task(chain, stack.data, category=category, rounds=1,
                           training=TrainingSpec(epochs=1, batch_size=16, lr=0.1, noise_multiplier=1.0))  # fmt: skip
        stack.serve_task(spec)
        stack.start_round(spec.task_id, stack.data.initial_model, stack.data.initial_cid)
        selected = [i for e in (0, 1) for i in stack.open_round(e, spec.task_id, 1, stack.data.initial_model, stack.data.initial_cid)]
        used = {fleet.edge_of(v).index for v in fleet.vehicles}

        uploads: list[UploadEvent] = []
        assert fleet.serve(spec.task_id, on_upload=uploads.append)
        deadline = time.monotonic() + 60  # a guard against hanging: the re-sends run on timers
        while len(uploads) < len(selected) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p.lost for p in proxies] == [e in used for e in (0, 1)]  # each edge in use lost a receipt
        assert sorted(u.vehicle for u in uploads) == sorted(selected) and fleet.report.uploads == len(selected)
        assert not fleet.report.failures
        received = [i for e in (0, 1) for i in httpx.get(f"{stack.url(e)}/tasks/{spec.task_id}/rounds/1").json()["received"]]
        assert sorted(received) == sorted(selected)  # each stored once
    finally:
        fleet.close()
        directory.stop()
        for proxy in proxies:
            proxy.close()
