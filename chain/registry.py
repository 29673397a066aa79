"""Typed client of ``BMFLRegistry``: edges, the cloud role and vehicle registration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from chain.base import ContractClient, Receipt


class VehicleInfo(BaseModel):
    """A vehicle's registration."""

    model_config = ConfigDict(frozen=True)

    index: int
    account: str
    categories: int
    data_type: int
    samples: int
    active: bool
    profile_hash: bytes


class RegistryClient(ContractClient):
    """``BMFLRegistry``: the operator manages edges and the cloud; vehicles register themselves."""

    artifact = "BMFLRegistry"

    def add_edge(self, edge: str) -> Receipt:
        """Operator: add (or re-activate) ``edge``."""
        return self.send(self.contract.functions.addEdge(edge))

    def remove_edge(self, edge: str) -> Receipt:
        """Operator: remove ``edge``."""
        return self.send(self.contract.functions.removeEdge(edge))

    def set_cloud(self, cloud: str) -> Receipt:
        """Operator: give the cloud role to ``cloud``."""
        return self.send(self.contract.functions.setCloud(cloud))

    def register_vehicle(self, categories: int, data_type: int, samples: int, profile_hash: bytes) -> tuple[int, Receipt]:
        """Register the sender as a vehicle; returns its index."""
        receipt = self.send(self.contract.functions.registerVehicle(categories, data_type, samples, profile_hash))
        return int(receipt.event("VehicleRegistered").index), receipt  # type: ignore[attr-defined]

    def deregister_vehicle(self) -> Receipt:
        """Deregister the sender."""
        return self.send(self.contract.functions.deregisterVehicle())

    def owner(self) -> str:
        """The operator."""
        return str(self.call(self.contract.functions.owner()))

    def cloud(self) -> str:
        """The cloud aggregator's account."""
        return str(self.call(self.contract.functions.cloud()))

    def edge_count(self) -> int:
        """Edge indices ever assigned."""
        return int(self.call(self.contract.functions.edgeCount()))

    def edge_at(self, index: int) -> str:
        """The account of edge ``index``."""
        return str(self.call(self.contract.functions.edgeAt(index)))

    def edge_index(self, account: str) -> int:
        """The index of active edge ``account``."""
        return int(self.call(self.contract.functions.edgeIndex(account)))

    def active_edge_mask(self) -> int:
        """Bit ℓ set for every active edge index ℓ (what ``closeRecording`` waits for)."""
        return int(self.call(self.contract.functions.activeEdgeMask()))

    def is_edge(self, account: str) -> bool:
        """Whether ``account`` is an active edge."""
        return bool(self.call(self.contract.functions.isEdge(account)))

    def vehicle_count(self) -> int:
        """Vehicle indices ever assigned."""
        return int(self.call(self.contract.functions.vehicleCount()))

    def vehicle_index(self, account: str) -> int:
        """The index of vehicle ``account``."""
        return int(self.call(self.contract.functions.vehicleIndex(account)))

    def vehicle_at(self, index: int) -> str:
        """The account of vehicle ``index``."""
        return str(self.call(self.contract.functions.vehicleAt(index)))

    def vehicle(self, index: int, block: int | str = "latest") -> VehicleInfo:
        """The registration of vehicle ``index`` (at ``block``)."""
        (account, categories, data_type, samples, active), profile = self.call(self.contract.functions.vehicle(index), block)
        return VehicleInfo(
            index=index, account=account, categories=categories, data_type=data_type,
            samples=samples, active=active, profile_hash=bytes(profile),
        )  # fmt: skip

    def is_active_vehicle(self, index: int, block: int | str = "latest") -> bool:
        """Whether vehicle ``index`` is registered now (at ``block``)."""
        return bool(self.call(self.contract.functions.isActiveVehicle(index), block))
