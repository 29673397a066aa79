"""BMFLRegistry on a real Anvil: happy paths, reverts by custom error name, role checks."""

from __future__ import annotations

from chain_fixtures import Chain, chain, chain_module, digest, reverts  # noqa: F401


def test_setup_state(chain: Chain) -> None:
    reg = chain.registry()
    assert reg.owner() == chain.operator
    assert reg.cloud() == chain.cloud
    assert reg.edge_count() == len(chain.edges)
    assert [reg.edge_at(i) for i in range(len(chain.edges))] == chain.edges
    assert reg.edge_index(chain.edges[3]) == 3
    assert reg.vehicle_count() == len(chain.vehicles)
    info = reg.vehicle(2)
    assert (info.account, info.categories, info.samples, info.active) == (chain.vehicles[2], 1, 102, True)
    assert info.profile_hash == digest("profile2")
    assert reg.vehicle_index(chain.vehicles[4]) == 4 and reg.vehicle_at(4) == chain.vehicles[4]


def test_edges_are_operator_only(chain: Chain) -> None:
    reg = chain.registry(chain.outsider)
    with reverts("OwnableUnauthorizedAccount"):
        reg.add_edge(chain.outsider)
    with reverts("OwnableUnauthorizedAccount"):
        reg.remove_edge(chain.edges[0])
    with reverts("OwnableUnauthorizedAccount"):
        reg.set_cloud(chain.outsider)


def test_add_remove_readd_edge_keeps_index(chain: Chain) -> None:
    reg = chain.registry(chain.operator)
    r = reg.remove_edge(chain.edges[1])
    assert r.event("EdgeRemoved").index == 1  # type: ignore[attr-defined]
    assert not reg.is_edge(chain.edges[1])
    with reverts("NotEdge"):
        reg.edge_index(chain.edges[1])
    with reverts("NotEdge"):
        reg.remove_edge(chain.edges[1])
    assert reg.add_edge(chain.edges[1]).event("EdgeAdded").index == 1  # type: ignore[attr-defined]
    with reverts("EdgeExists"):
        reg.add_edge(chain.edges[1])
    with reverts("ZeroAddress"):
        reg.add_edge("0x" + "00" * 20)
    new = reg.add_edge(chain.outsider).event("EdgeAdded")
    assert new.index == len(chain.edges)  # type: ignore[attr-defined]


def test_set_cloud_emits_previous(chain: Chain) -> None:
    reg = chain.registry(chain.operator)
    ev = reg.set_cloud(chain.outsider).event("CloudSet")
    assert (ev.previousCloud, ev.newCloud) == (chain.cloud, chain.outsider)  # type: ignore[attr-defined]
    with reverts("ZeroAddress"):
        reg.set_cloud("0x" + "00" * 20)


def test_vehicle_register_deregister_reregister(chain: Chain) -> None:
    reg = chain.registry(chain.outsider)
    with reverts("EmptyProfile"):
        reg.register_vehicle(0, 0, 10, digest("p"))
    with reverts("EmptyProfile"):
        reg.register_vehicle(1, 0, 0, digest("p"))
    with reverts("NotRegistered"):
        reg.deregister_vehicle()
    idx, _ = reg.register_vehicle(3, 2, 50, digest("p"))
    assert idx == len(chain.vehicles) and reg.is_active_vehicle(idx)
    with reverts("AlreadyRegistered"):
        reg.register_vehicle(3, 2, 50, digest("p"))
    assert reg.deregister_vehicle().event("VehicleDeregistered").index == idx  # type: ignore[attr-defined]
    assert not reg.is_active_vehicle(idx)
    with reverts("NotRegistered"):
        reg.deregister_vehicle()
    again, _ = reg.register_vehicle(4, 1, 60, digest("q"))
    assert again == idx and reg.vehicle(idx).categories == 4


def test_unknown_vehicle_views(chain: Chain) -> None:
    reg = chain.registry()
    with reverts("UnknownVehicle"):
        reg.vehicle_at(999)
    with reverts("UnknownVehicle"):
        reg.vehicle(999)
    with reverts("NotRegistered"):
        reg.vehicle_index(chain.outsider)


def test_active_edge_mask_follows_add_and_remove(chain: Chain) -> None:
    reg = chain.registry(chain.operator)
    assert reg.active_edge_mask() == 0b11111
    reg.remove_edge(chain.edges[1])
    assert reg.active_edge_mask() == 0b11101
    reg.add_edge(chain.outsider)
    assert reg.active_edge_mask() == 0b111101
    reg.add_edge(chain.edges[1])  # re-added: same index, its bit back
    assert reg.active_edge_mask() == 0b111111
