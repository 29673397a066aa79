"""One vehicle: its key, local data, position and privacy budget; on-chain registration,
signed association with an edge, assignments, trustless download of the global model,
DP training through the core (with an optional attack) and the signed upload.

The vehicle's privacy — accountant, δ and ε budget (finite by default) — is its core
``bmfl.privacy.PrivacyEngine`` (:attr:`Vehicle.privacy`); a round is planned, checked
and recorded there, and trained by the core's one training path
(``bmfl.training.fleet_uploads``, BMFL Algorithm 1), alone or in a fleet, always with
secret randomness (``bmfl.privacy.SecureGenerator``). What it registers on chain is a
noisy sample count (accounted) and a salted commitment to its data profile."""

from __future__ import annotations

import hashlib
import json
import math
import os
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
from bmfl.device import default_device
from bmfl.models import create_model
from bmfl.params import State, flatten, unflatten
from bmfl.privacy import DEFAULT_BUDGET, BudgetExceeded, PrivacyEngine, PrivacyRefused, RoundPlan, SecureGenerator, require_secure
from bmfl.privacy.input_dp import privatise
from bmfl.protocol.schemas import Assignment, AssociateRequest, Association, TrainingSpec, UploadReceipt
from bmfl.protocol.signing import (
    EPSILON_HEADER, UPDATE_SIGNATURE_HEADER, SignatureError, associate_message, now_ms, receipt_message, sign, update_message,
    verify,
)  # fmt: skip
from bmfl.task import InputDPSpec
from service_kit.chain_access import ChainAccess
from bmfl.training.fleet import fleet_uploads, plan_upload
from bmfl.training.local import refuse_unsound
from chain.base import ContractRevert
from vehicle_client.http import send

# BudgetExceeded and PrivacyRefused are the core's (bmfl.privacy), re-exported for the vehicle client's callers.
__all__ = ["BudgetExceeded", "PrivacyRefused", "TrainedUpdate", "Vehicle", "profile_commitment"]


def profile_commitment(profile: dict[str, object], salt: bytes) -> bytes:
    """sha2-256(salt ‖ canonical JSON of ``profile``): hiding while the 32-byte ``salt``
    stays secret (without it, the few histograms a vehicle can have are enumerated in
    milliseconds), binding since the vehicle cannot find another opening."""
    return hashlib.sha256(salt + json.dumps(profile, sort_keys=True, separators=(",", ":")).encode()).digest()


@dataclass(frozen=True)
class TrainedUpdate:
    """An encoded upload and the privacy spent so far (ε at the task's δ; None without DP,
    or once the vehicle has trained without noise: ε = ∞)."""

    blob: bytes
    epsilon: float | None
    steps: int


class Vehicle:
    """A vehicle with an Ethereum key; ``epsilon_budget`` is ε_max at δ = ``delta``
    (``bmfl.privacy.DEFAULT_BUDGET`` unless given; inf: no limit)."""

    def __init__(
        self,
        account: LocalAccount,
        data: TensorData,
        chain_id: int,
        *,
        position: tuple[float, float] = (0.0, 0.0),
        epsilon_budget: float = DEFAULT_BUDGET,
        delta: float = 1e-5,
        attack: Attack | None = None,
        categories: int = 1,
        data_type: int = 0,
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
        self.generator = SecureGenerator()  # batches and DP noise: no seed, key or public value determines them
        self.salt = os.urandom(32)  # opens the profile commitment; never leaves the vehicle
        self.registered_samples: int | None = None  # the noisy count released on chain
        self.released: TensorData | None = None  # the one input-DP release of data, once a task asked for it
        self.released_with: InputDPSpec | None = None  # the settings it was made with
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
        """The data profile committed to on chain: sample count and label histogram."""
        labels = self.data.label_histogram().tolist() if self.data.is_classification else None
        return {"samples": len(self.data), "labels": labels}

    def profile_hash(self) -> bytes:
        """The salted commitment to :meth:`profile` that goes on chain (:func:`profile_commitment`)."""
        return profile_commitment(self.profile(), self.salt)

    def release_samples(self) -> int:
        """The sample count for the chain (FedAvg weights): n plus N(0, σ_c²) from the
        secure source, recorded in :attr:`privacy` (``PrivacyEngine.release_count``);
        drawn once and reused, so repeating it spends nothing more."""
        if self.registered_samples is None:
            self.registered_samples = self.privacy.release_count(len(self.data), self.generator)
        return self.registered_samples

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
                    self.categories, self.data_type, self.release_samples(), self.profile_hash()
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

    def update_signature(self, edge_address: str, task_id: int, round_: int, blob: bytes) -> str:
        """EIP-191 signature over ``update_message(chain, task, round, edge, sha256(blob))``."""
        return sign(self.account, update_message(self.chain_id, task_id, round_, edge_address, blob_digest(blob).raw))

    def upload_form(self, edge_address: str, task_id: int, round_: int, blob: bytes, epsilon: float | None) -> dict[str, str]:
        """The form fields of a multipart upload: vehicle, the update's signature and optional ε."""
        form = {"vehicle": self.address, "signature": self.update_signature(edge_address, task_id, round_, blob)}
        if epsilon is not None:
            form["epsilon"] = repr(epsilon)
        return form

    def upload_headers(self, edge_address: str, task_id: int, round_: int, blob: bytes, epsilon: float | None) -> dict[str, str]:
        """The headers of a binary upload: content type, the update's signature and optional ε."""
        headers = {"content-type": "application/octet-stream"}
        headers[UPDATE_SIGNATURE_HEADER] = self.update_signature(edge_address, task_id, round_, blob)
        if epsilon is not None:
            headers[EPSILON_HEADER] = repr(epsilon)
        return headers

    def upload(
        self, edge_url: str, edge_address: str, task_id: int, round_: int, blob: bytes, epsilon: float | None = None
    ) -> UploadReceipt:
        """``PUT /tasks/{id}/rounds/{r}/updates/{vehicle}`` (the blob as the body, signature
        and ε in headers); the receipt must be the edge's signed promise to record this
        very update (kept: with it the vehicle can prove an omission), else
        :class:`SignatureError`. In an asynchronous task ``round_`` is the version trained
        from and the receipt may name a later round, the one the edge records it in."""
        url = f"{edge_url}/tasks/{task_id}/rounds/{round_}/updates/{self.address}"
        headers = self.upload_headers(edge_address, task_id, round_, blob, epsilon)
        receipt = UploadReceipt.model_validate(send(self.http, "PUT", url, 202, content=blob, headers=headers).json())
        digest = blob_digest(blob)
        if receipt.digest != digest.hex0x or receipt.round < round_:
            raise SignatureError(f"the edge acknowledged {receipt.digest} in round {receipt.round}, not this update")
        verify(receipt_message(self.chain_id, task_id, receipt.round, self.address, digest.raw), receipt.signature, edge_address)
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

    def training_data(self, spec: TrainingSpec) -> TensorData:
        """What a task trains on: with ``spec.input_dp``, the vehicle's one input-DP
        release of its data (``bmfl.privacy.input_dp``; made from the secure source on
        the first such task, recorded in :attr:`privacy` and kept, so a later task with
        the same settings reuses it and spends nothing more), else the data itself. A task
        stating other settings is refused (:class:`PrivacyRefused`
        ``input_release_differs``): the kept release would not carry the noise it states,
        and a second release would spend again."""
        inputs = spec.input_dp
        if inputs is None:
            return self.data
        if self.released is None:
            require_secure(self.generator)
            self.privacy.release_inputs(inputs.sigma, inputs.targets)
            self.released = privatise(self.data, inputs.clip, inputs.sigma, inputs.targets, self.generator)
            self.released_with = inputs
        elif inputs != self.released_with:
            raise PrivacyRefused(
                "input_release_differs",
                f"this vehicle released its data once with {self.released_with}; the task asks for {inputs}",
            )
        return self.released

    def train(self, assignment: Assignment, global_state: State) -> TrainedUpdate:
        """One round from ``global_state`` through the core's training path, as a fleet
        of one (``bmfl.training.fleet_uploads``).

        The round is checked against the budget first (:class:`BudgetExceeded`: nothing
        is trained or spent); the core then records its steps in :attr:`privacy`.
        """
        context = self.prepare(assignment, global_state)
        data = self.training_data(assignment.training)
        upload = fleet_uploads(create_model(assignment.model, default_device()), [data], assignment.training.local(), [context],
                               [self.attack], [self.privacy])[0]  # fmt: skip
        return self.finish(assignment, context, upload)

    def prepare(self, assignment: Assignment, global_state: State) -> AttackContext:
        """Release the inputs when the task asks for input DP (:meth:`training_data`),
        check the round's privacy (:class:`PrivacyRefused` for one the accountant
        cannot state exactly, e.g. δ ≥ 1/n; :class:`BudgetExceeded` past the budget) and
        return its context for ``bmfl.training.fleet_uploads`` (alone, or with other
        vehicles: the fleet trains many at once)."""
        require_secure(self.generator)
        self.training_data(assignment.training)  # the input release comes first, and is checked against the budget
        plan = self.plan(assignment.training)
        if plan.trains:
            config = assignment.training.local()
            refuse_unsound(self.attack.training_config(config) if self.attack is not None else config, len(self.data))
        self.privacy.check(plan)
        reference = flatten(global_state)
        kept = self._references.get(assignment.task_id)
        previous = kept[1] if kept and kept[0] == assignment.round - 1 else None
        return AttackContext(reference, self.generator, previous, assignment.round)

    def finish(self, assignment: Assignment, context: AttackContext, upload: torch.Tensor) -> TrainedUpdate:
        """The trained flat ``upload`` encoded for the edge, with the ε spent so far."""
        self._references[assignment.task_id] = (assignment.round, context.reference)
        meta = BlobMeta(task=str(assignment.task_id), round=assignment.round, producer=self.address, model=assignment.model)
        blob = encode_state(unflatten(upload.cpu(), create_model(assignment.model).state_dict()), meta)
        training = assignment.training
        private = (training.dp and training.noise_multiplier > 0) or training.input_dp is not None
        spent = self.privacy.epsilon(assignment.training.delta) if private else math.inf
        return TrainedUpdate(blob, spent if math.isfinite(spent) else None, self.plan(assignment.training).steps)

    def close(self) -> None:
        """Close the HTTP client if this vehicle made it."""
        if self._own_http:
            self.http.close()
