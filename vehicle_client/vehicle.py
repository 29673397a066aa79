"""One vehicle: its key, local data, position and privacy budget; on-chain registration,
signed association with an edge, assignments, trustless download of the global model,
DP training through the core (with an optional attack) and the signed upload.

The vehicle's privacy — accountant, δ and ε budget — is its core
``bmfl.privacy.PrivacyEngine`` (:attr:`Vehicle.privacy`); a round is planned, checked
and recorded there, and trained by the core's one training path
(``bmfl.training.fleet_uploads``, BMFL Algorithm 1), alone or in a fleet."""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass

import httpx
import torch
from eth_account.signers.local import LocalAccount

from bmfl.attacks import Attack, AttackContext
from bmfl.blobs.codec import BlobMeta, blob_digest, decode_state, encode_state
from bmfl.blobs.errors import BlobIntegrityError
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.data.base import TensorData
from bmfl.models import create_model
from bmfl.params import State, flatten, unflatten
from bmfl.privacy import BudgetExceeded, PrivacyEngine, RoundPlan
from bmfl.protocol.schemas import Assignment, AssociateRequest, Association, TrainingSpec, UploadReceipt
from bmfl.protocol.signing import SignatureError, associate_message, now_ms, receipt_message, sign, update_message, verify
from service_kit.chain_access import ChainAccess
from bmfl.training.fleet import fleet_uploads, plan_upload
from chain.base import ContractRevert
from vehicle_client.http import send

# BudgetExceeded is the core's (bmfl.privacy), re-exported for the vehicle client's callers.
__all__ = ["BudgetExceeded", "TrainedUpdate", "Vehicle"]


@dataclass(frozen=True)
class TrainedUpdate:
    """An encoded upload and the privacy spent so far (ε at the task's δ; None without DP,
    or once the vehicle has trained without noise: ε = ∞)."""

    blob: bytes
    epsilon: float | None
    steps: int


class Vehicle:
    """A vehicle with an Ethereum key; ``epsilon_budget`` is ε_max at δ = ``delta``."""

    def __init__(
        self,
        account: LocalAccount,
        data: TensorData,
        chain_id: int,
        *,
        position: tuple[float, float] = (0.0, 0.0),
        epsilon_budget: float = math.inf,
        delta: float = 1e-5,
        attack: Attack | None = None,
        categories: int = 1,
        data_type: int = 0,
        seed: int = 0,
        http: httpx.Client | None = None,
    ) -> None:
        self.account = account
        self.data = data
        self.chain_id = chain_id
        self.position = position
        self.privacy = PrivacyEngine(delta, epsilon_budget)
        self.attack = attack
        self.categories = categories
        self.data_type = data_type
        self.generator = torch.Generator().manual_seed(seed)
        self._own_http = http is None
        self.http = http or httpx.Client(timeout=60.0)
        self.index: int | None = None
        self.association: Association | None = None
        self._references: dict[int, tuple[int, torch.Tensor]] = {}  # task → (round, w^{r-1})

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def epsilon_budget(self) -> float:
        """ε_max at the budget's δ (held by :attr:`privacy`)."""
        return self.privacy.budget

    # ------------------------------------------------------------ registration

    def profile(self) -> dict[str, object]:
        """The data profile whose hash goes on chain: sample count and label histogram."""
        labels = self.data.label_histogram().tolist() if self.data.is_classification else None
        return {"samples": len(self.data), "labels": labels}

    def profile_hash(self) -> bytes:
        """sha2-256 of the profile as canonical JSON (sorted keys, no spaces)."""
        return hashlib.sha256(json.dumps(self.profile(), sort_keys=True, separators=(",", ":")).encode()).digest()

    def register(self, chain: ChainAccess) -> int:
        """Register on chain (``chain`` sends from this vehicle's key); an active
        registration is kept. Returns the registry index."""
        if chain.address != self.address or chain.chain_id != self.chain_id:
            raise ValueError(f"chain access is {chain.address} on chain {chain.chain_id}, not this vehicle's")
        with chain.lock:
            try:
                index = chain.registry.vehicle_index(self.address)
                active = chain.registry.is_active_vehicle(index)
            except ContractRevert as exc:
                if exc.name != "NotRegistered":
                    raise
                active = False
            if not active:
                index, _ = chain.registry.register_vehicle(
                    self.categories, self.data_type, len(self.data), self.profile_hash()
                )
        self.index = index
        return index

    # ------------------------------------------------------------ edge protocol

    def associate_request(self, edge_address: str, previous_edge: str | None = None) -> AssociateRequest:
        """An association with ``edge_address`` at the current position, signed now."""
        x, y = self.position
        ts = now_ms()
        signature = sign(self.account, associate_message(self.chain_id, self.address, edge_address, x, y, ts))
        return AssociateRequest(
            vehicle=self.address, x=x, y=y, timestamp_ms=ts, signature=signature, previous_edge=previous_edge
        )

    def associate(self, edge_url: str, edge_address: str, previous_edge: str | None = None) -> Association:
        """``POST /associate`` at the edge (a handover when ``previous_edge`` is given)."""
        request = self.associate_request(edge_address, previous_edge)
        reply = send(self.http, "POST", f"{edge_url}/associate", 200, 201, json=request.model_dump(mode="json"))
        self.association = Association.model_validate(reply.json())
        return self.association

    def poll(self, edge_url: str, task_id: int) -> Assignment:
        """This vehicle's assignment in the task's current round."""
        url = f"{edge_url}/tasks/{task_id}/assignment"
        return Assignment.model_validate(send(self.http, "GET", url, 200, params={"vehicle": self.address}).json())

    def fetch_global(self, gateway_url: str, cid: str, digest: str, model: str) -> "OrderedDict[str, torch.Tensor]":
        """The global model: bytes verified against ``cid`` by the gateway client, then
        against the announced sha2-256 ``digest``, then strictly decoded for ``model``."""
        gateway = GatewayClient(gateway_url)
        try:
            blob = gateway.fetch(cid)
        finally:
            gateway.close()
        if blob_digest(blob).raw != bytes.fromhex(digest.removeprefix("0x")):
            raise BlobIntegrityError(f"{cid} has sha2-256 {blob_digest(blob).hex0x}, the edge announced {digest}")
        state, _ = decode_state(blob, model)
        return state

    def upload_form(self, edge_address: str, task_id: int, round_: int, blob: bytes, epsilon: float | None) -> dict[str, str]:
        """The form fields of an upload: vehicle, EIP-191 signature over
        ``update_message(chain, task, round, edge, sha256(blob))`` and optional ε."""
        message = update_message(self.chain_id, task_id, round_, edge_address, blob_digest(blob).raw)
        form = {"vehicle": self.address, "signature": sign(self.account, message)}
        if epsilon is not None:
            form["epsilon"] = repr(epsilon)
        return form

    def upload(
        self, edge_url: str, edge_address: str, task_id: int, round_: int, blob: bytes, epsilon: float | None = None
    ) -> UploadReceipt:
        """``POST /tasks/{id}/rounds/{r}/updates`` (multipart: the form and file ``blob``); the
        receipt must be the edge's signed promise to record this very update (kept: with it
        the vehicle can prove an omission), else :class:`SignatureError`."""
        url = f"{edge_url}/tasks/{task_id}/rounds/{round_}/updates"
        files = {"blob": ("update.safetensors", blob, "application/octet-stream")}
        form = self.upload_form(edge_address, task_id, round_, blob, epsilon)
        receipt = UploadReceipt.model_validate(send(self.http, "POST", url, 202, data=form, files=files).json())
        digest = blob_digest(blob)
        if receipt.digest != digest.hex0x:
            raise SignatureError(f"the edge acknowledged {receipt.digest}, not this update")
        verify(receipt_message(self.chain_id, task_id, round_, self.address, digest.raw), receipt.signature, edge_address)
        return receipt

    # ------------------------------------------------------------ training and privacy

    def plan(self, spec: TrainingSpec) -> RoundPlan:
        """What the core will train this round (``bmfl.training.plan_upload``): the
        attack's config, E·⌈n/B⌉ steps at rate q = min(1, B/n) and σ (no steps for an
        attack that does not train)."""
        return plan_upload(self.data, spec.local(), self.attack)

    def epsilon(self, delta: float | None = None, plan: RoundPlan | None = None) -> float:
        """ε spent so far (plus ``plan``'s steps) at ``delta`` (default: the budget's δ);
        infinite for a plan that trains without DP noise (:meth:`PrivacyEngine.epsilon`)."""
        return self.privacy.epsilon(delta, plan)

    def train(self, assignment: Assignment, global_state: State) -> TrainedUpdate:
        """One round from ``global_state`` through the core's training path, as a fleet
        of one (``bmfl.training.fleet_uploads``).

        The round is checked against the budget first (:class:`BudgetExceeded`: nothing
        is trained or spent); the core then records its steps in :attr:`privacy`.
        """
        context = self.prepare(assignment, global_state)
        upload = fleet_uploads(create_model(assignment.model), [self.data], assignment.training.local(), [context],
                               [self.attack], [self.privacy])[0]  # fmt: skip
        return self.finish(assignment, context, upload)

    def prepare(self, assignment: Assignment, global_state: State) -> AttackContext:
        """Check the privacy budget (:class:`BudgetExceeded` if the round would exceed
        it) and return the round's context for ``bmfl.training.fleet_uploads`` (alone,
        or with other vehicles: the fleet trains many at once)."""
        self.privacy.check(self.plan(assignment.training))
        reference = flatten(global_state)
        kept = self._references.get(assignment.task_id)
        previous = kept[1] if kept and kept[0] == assignment.round - 1 else None
        return AttackContext(reference, self.generator, previous, assignment.round)

    def finish(self, assignment: Assignment, context: AttackContext, upload: torch.Tensor) -> TrainedUpdate:
        """The trained flat ``upload`` encoded for the edge, with the ε spent so far."""
        self._references[assignment.task_id] = (assignment.round, context.reference)
        meta = BlobMeta(task=str(assignment.task_id), round=assignment.round, producer=self.address, model=assignment.model)
        blob = encode_state(unflatten(upload.cpu(), create_model(assignment.model).state_dict()), meta)
        private = assignment.training.dp and assignment.training.noise_multiplier > 0
        spent = self.privacy.epsilon(assignment.training.delta) if private else math.inf
        return TrainedUpdate(blob, spent if math.isfinite(spent) else None, self.plan(assignment.training).steps)

    def close(self) -> None:
        """Close the HTTP client if this vehicle made it."""
        if self._own_http:
            self.http.close()
