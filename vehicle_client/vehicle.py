"""One vehicle: its key, local data, position and privacy budget; on-chain registration,
signed association with an edge, assignments, trustless download of the global model,
DP training through the core (with an optional attack) and the signed upload."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass

import httpx
import torch
from eth_account.signers.local import LocalAccount

from bmfl.attacks import Attack, AttackContext, local_upload
from bmfl.blobs.codec import BlobMeta, blob_digest, decode_state, encode_state
from bmfl.blobs.errors import BlobIntegrityError
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.data.base import TensorData
from bmfl.models import create_model
from bmfl.params import State, flatten, unflatten
from bmfl.privacy import PrivacyAccountant
from bmfl.protocol.schemas import Assignment, AssociateRequest, Association, TrainingSpec, UploadReceipt
from bmfl.protocol.signing import associate_message, now_ms, sign, update_message
from service_kit.chain_access import ChainAccess
from bmfl.training.local import LocalTrainingConfig, steps_per_epoch
from chain.base import ContractRevert
from vehicle_client.http import send


class BudgetExceeded(RuntimeError):
    """Training would take the vehicle's ε past its budget; nothing was trained or spent."""


@dataclass(frozen=True)
class TrainedUpdate:
    """An encoded upload and the privacy spent so far (ε at the task's δ; None without DP)."""

    blob: bytes
    epsilon: float | None
    steps: int


@dataclass(frozen=True)
class Plan:
    """What :meth:`Vehicle.train` will run: the (attack's) config, sampling rate q, DP steps."""

    config: LocalTrainingConfig
    sampling_rate: float
    steps: int

    @property
    def private(self) -> bool:
        return self.config.dp and self.config.noise_multiplier > 0


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
        self.epsilon_budget = epsilon_budget
        self.attack = attack
        self.categories = categories
        self.data_type = data_type
        self.accountant = PrivacyAccountant(delta)
        self.generator = torch.Generator().manual_seed(seed)
        self._own_http = http is None
        self.http = http or httpx.Client(timeout=60.0)
        self.index: int | None = None
        self.association: Association | None = None
        self._references: dict[int, tuple[int, torch.Tensor]] = {}  # task → (round, w^{r-1})

    @property
    def address(self) -> str:
        return self.account.address

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
        """``POST /tasks/{id}/rounds/{r}/updates`` (multipart: the form and file ``blob``)."""
        url = f"{edge_url}/tasks/{task_id}/rounds/{round_}/updates"
        files = {"blob": ("update.safetensors", blob, "application/octet-stream")}
        form = self.upload_form(edge_address, task_id, round_, blob, epsilon)
        return UploadReceipt.model_validate(send(self.http, "POST", url, 202, data=form, files=files).json())

    # ------------------------------------------------------------ training and privacy

    def plan(self, spec: TrainingSpec) -> Plan:
        """What ``local_upload`` will run: the attack's config and E·⌈n/B⌉ steps at rate
        q = min(1, B/n), as ``train_local`` counts them (none for an attack that does
        not train)."""
        attack = self.attack or Attack()
        config = attack.training_config(spec.local())
        n = len(self.data)
        steps = config.epochs * steps_per_epoch(n, config.batch_size) if attack.trains else 0
        return Plan(config, min(1.0, config.batch_size / n), steps)

    def epsilon(self, delta: float | None = None, plan: Plan | None = None) -> float:
        """ε spent so far (plus ``plan``'s steps) at ``delta`` (default: the budget's δ);
        infinite for a plan that trains without DP noise."""
        if plan is not None and plan.steps and not plan.private:
            return math.inf
        probe = copy.deepcopy(self.accountant)
        probe.delta = delta if delta is not None else self.accountant.delta
        if plan is not None and plan.steps:
            probe.step(plan.sampling_rate, plan.config.noise_multiplier, plan.steps)
        return probe.epsilon()

    def train(self, assignment: Assignment, global_state: State) -> TrainedUpdate:
        """One round through ``bmfl.attacks.behaviour.local_upload`` from ``global_state``.

        The planned steps are accounted on a copy of the accountant first; if ε would
        then exceed the budget, :class:`BudgetExceeded` is raised and nothing is trained
        or spent. Otherwise the core records the steps in the vehicle's accountant.
        """
        context = self.prepare(assignment, global_state)
        upload = local_upload(create_model(assignment.model), self.data, assignment.training.local(), context,
                              self.attack, self.accountant)  # fmt: skip
        return self.finish(assignment, context, upload)

    def prepare(self, assignment: Assignment, global_state: State) -> AttackContext:
        """Check the privacy budget (:class:`BudgetExceeded` if the round would exceed
        it) and return the round's context for ``local_upload`` (or the fleet's
        ``bmfl.training.fleet.fleet_uploads``, which trains many vehicles at once)."""
        plan = self.plan(assignment.training)
        planned = self.epsilon(plan=plan)
        if planned > self.epsilon_budget:
            raise BudgetExceeded(f"ε would reach {planned:.3g} > budget {self.epsilon_budget:.3g}")
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
        steps = self.plan(assignment.training).steps
        return TrainedUpdate(blob, self.epsilon(assignment.training.delta) if private else None, steps)

    def close(self) -> None:
        """Close the HTTP client if this vehicle made it."""
        if self._own_http:
            self.http.close()
