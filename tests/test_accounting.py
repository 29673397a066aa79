"""Communication and compute accounting (bmfl.simulation.accounting): the bytes a run
reports are the sizes of the blobs it moved, checked against a blob store holding every
one of them; every byte sent is received once; the cost to a target accuracy."""

import pytest
from rich.console import Console

from bmfl.blobs.codec import decode_state
from bmfl.blobs.local import LocalBlobStore
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.rounds.traffic import CLOUD, edge, vehicle
from bmfl.simulation.output import cost_to_target, summary_line

CONFIG = {
    "name": "accounting",
    "rounds": 2,
    "vehicles": 8,
    "edges": 3,
    "data": {"name": "flows_synthetic", "options": {"num_flows": 400}},
    "model": "mtl_cnn1d",
    "partition": {"kind": "iid", "options": {}},
    "training": {"epochs": 1, "batch_size": 16, "lr": 0.05, "dp": False},
    "aggregation": {"edge": {"name": "fedavg"}, "filters": []},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = LocalBlobStore(tmp_path_factory.mktemp("blobs"))
    result = run_simulation(SimulationConfig.model_validate(CONFIG), Console(quiet=True), blob_store=store)
    return result, store


def test_reported_bytes_are_the_blobs_in_the_store(run):
    result, store = run
    for m, transfers in zip(result.rounds, result.transfers):
        assert all(t.size == len(store.get(t.cid)) for t in transfers)
        decode_state(store.get(transfers[0].cid), "mtl_cnn1d")  # real model blobs, strictly decodable
        sent = lambda who: sum(len(store.get(t.cid)) for t in transfers if who(t.sender))  # noqa: E731
        got = lambda who: sum(len(store.get(t.cid)) for t in transfers if who(t.receiver))  # noqa: E731
        is_vehicle, is_edge = (lambda p: p.startswith("vehicle:")), (lambda p: p.startswith("edge:"))
        assert m.bytes_up_vehicles == sent(is_vehicle) and m.bytes_down_vehicles == got(is_vehicle)
        assert m.bytes_up_edges == sent(is_edge) and m.bytes_down_edges == got(is_edge)
        assert m.bytes_up_cloud == sent(lambda p: p == CLOUD) and m.bytes_down_cloud == got(lambda p: p == CLOUD)
        up = m.bytes_up_vehicles + m.bytes_up_edges + m.bytes_up_cloud
        assert up == m.bytes_down_vehicles + m.bytes_down_edges + m.bytes_down_cloud == sum(t.size for t in transfers)


def test_each_party_moves_what_the_round_protocol_says(run):
    result, store = run
    m, transfers = result.rounds[0], result.transfers[0]
    size = {(t.sender, t.receiver): t.size for t in transfers}
    global_blob = size[(CLOUD, vehicle(0))]
    recording = [e for e in range(3) if (edge(e), CLOUD) in size]
    assert m.trainers == 8 and len(recording) == 3
    for v in range(8):
        assert m.traffic["vehicles"][v]["down"] == global_blob  # w^{r-1}, once
        assert m.traffic["vehicles"][v]["up"] == size[(vehicle(v), next(edge(e) for e in range(3) if (vehicle(v), edge(e)) in size))]
        assert m.traffic["vehicles"][v]["compute_s"] > 0
    for e in range(3):
        prelim = size[(edge(e), CLOUD)]
        assert m.traffic["edges"][e]["up"] == 3 * prelim  # to the cloud and to the two other scorers
    assert m.bytes_down_cloud == m.upstream_bytes_cloud == sum(size[(edge(e), CLOUD)] for e in range(3))
    assert m.upstream_bytes_flat == m.bytes_up_vehicles
    assert m.compute_s_vehicles == pytest.approx(sum(v["compute_s"] for v in m.traffic["vehicles"].values()))


def test_cost_to_target(run):
    result, _ = run
    first = result.rounds[0]
    cost = cost_to_target(result.rows(), 1e-9)  # reached in round 1
    assert cost.rounds == 1
    assert cost.megabytes == pytest.approx((first.bytes_up_vehicles + first.bytes_up_edges + first.bytes_up_cloud) / 1e6)
    assert cost.megabytes_vehicles == pytest.approx((first.bytes_up_vehicles + first.bytes_down_vehicles) / 1e6)
    never = cost_to_target(result.rows(), 1.0 + 1e-9)
    assert never.rounds is None and never.compute_s == pytest.approx(sum(m.compute_s_vehicles for m in result.rounds))
    assert "MB moved" in summary_line(result)
