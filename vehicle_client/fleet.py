"""A fleet: many vehicles driven from one process against real edges over HTTP.

:meth:`Fleet.setup` derives the keys, deals the data, funds and registers the vehicles
and associates each with its nearest edge; :meth:`Fleet.run` then serves the tasks: at
each round the vehicles poll their assignments, move (optional) once their edge has
selected its trainers, hand over to a nearer edge, and the selected ones train through
the core, ``train_batch`` at a time (``bmfl.training.fleet``), and upload to the edge
they are at (each batch's uploads go out while the next batch trains).

With ``stragglers`` set (the simulator's ``StragglerConfig``: seeded slowdowns and
coverage gaps), a vehicle's upload is held until its modelled compute time has passed
since its training started, as if each vehicle trained on its own hardware; the fleet
goes on serving while it waits, and the vehicle takes no new work until it has uploaded.
In an asynchronous task an upload that arrives while no version is open at its edge
(409 ``round_not_open``) is sent again once the next version opens, as long as its base
version stays within τ_max.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable

import httpx
import numpy as np
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from web3 import Web3
from web3.middleware import ExtraDataToPOAMiddleware, SignAndSendRawMiddlewareBuilder

from bmfl.attacks import AttackContext, get_attack, shape_edge_uploads
from bmfl.blobs.errors import BlobError
from bmfl.data import TensorData, load_dataset
from bmfl.device import default_device
from bmfl.models import create_model
from bmfl.params import State
from bmfl.partition import make_partition
from bmfl.protocol.schemas import Assignment, EdgeInfo
from bmfl.rounds.seeds import choose_attackers
from bmfl.simulation.stragglers import ComputeClock, job_work
from service_kit.chain_access import ChainAccess
from bmfl.training.fleet import fleet_uploads, load_transforms
from chain.deploy import Deployment
from chain.registry import RegistryClient
from chain.tasks import Phase, Status, TasksClient
from vehicle_client.accounts import fleet_accounts, fund
from vehicle_client.http import ServiceError, send
from vehicle_client.mobility import Area, nearest_edge
from vehicle_client.settings import FleetSettings
from vehicle_client.vehicle import BudgetExceeded, PrivacyRefused, TrainedUpdate, Vehicle

ACTIVE_STATUSES = ("ready", "running")
"""Cloud task statuses in which vehicles still train; any other status is final."""
MODEL_CACHE = 4
RESUBMIT_FOR_S = 600.0
"""How long an asynchronous task's upload is offered again while no version is open."""
RESENDS = 4
"""How many times an upload that got no answer (the edge unreachable, or the connection
dropped under the request) is sent again, after 1, 2, 4 and 8 poll intervals; the edge
answers the same update sent again with its receipt (docs/protocol.md)."""
KEEPALIVE_S = 2.0
"""How long an idle connection is kept: less than the edges' (uvicorn's 5 s), so the
fleet does not send on a connection the edge is closing."""


@dataclass(frozen=True)
class UploadEvent:
    """An update an edge accepted."""

    vehicle: int
    address: str
    task_id: int
    round: int
    edge: int
    digest: str
    epsilon: float | None
    attack: str | None


@dataclass(frozen=True)
class _Upload:
    """A trained update on its way to the edge the vehicle was at when it trained."""

    vehicle: Vehicle
    edge: EdgeInfo
    assignment: Assignment
    update: TrainedUpdate
    on_upload: Callable[[UploadEvent], None] | None
    since: float = field(default_factory=time.monotonic)
    resent: int = 0


@dataclass
class FleetReport:
    uploads: int = 0
    refused: int = 0  # privacy: budget exhausted, or a round whose ε cannot be stated (PrivacyRefused)
    handovers: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # reason → count


class Fleet:
    """Vehicles from ``settings``; ``train_data`` replaces the dataset's training part."""

    def __init__(self, settings: FleetSettings, *, train_data: TensorData | None = None, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console()
        self.http = httpx.Client(timeout=60.0, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S))
        self.vehicles: list[Vehicle] = []
        self.edges: list[EdgeInfo] = []
        self.report = FleetReport()
        self._train_data = train_data
        self._rng = np.random.default_rng(settings.seed)
        self._edge_of: dict[str, EdgeInfo] = {}
        self._moved: set[tuple[str, int, int]] = set()  # (vehicle, task, round)
        self._done: set[tuple[str, int, int]] = set()
        self._models: OrderedDict[str, State] = OrderedDict()
        self._tx_lock = threading.Lock()
        self._uploader = ThreadPoolExecutor(1, thread_name_prefix="upload")
        self._report_lock = threading.Lock()  # the uploader reports too
        self._clock = ComputeClock(settings.stragglers, settings.vehicles, settings.seed)
        self._jobs: Counter[str] = Counter()  # vehicle → jobs started (the clock's job index)
        self._busy: set[str] = set()  # vehicles between training and their upload's answer
        self._timers: set[threading.Timer] = set()

    @property
    def attackers(self) -> list[Vehicle]:
        return [v for v in self.vehicles if v.attack is not None]

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        """Keys, data, funding, registration and association with the nearest edge
        (call before :meth:`run`)."""
        s = self.settings
        if s.attack and get_attack(s.attack, **s.attack_options).knowledge == "white_box":
            raise ValueError(f"attack {s.attack!r} is white-box: it queries the edge's pipeline and test set, which a fleet does not have")
        if s.torch_threads:
            torch.set_num_threads(s.torch_threads)
        load_transforms()  # not in the first round's time
        accounts = fleet_accounts(s.seed, s.vehicles)
        self._connect(accounts)
        self.edges = self.edge_directory()
        self.area = Area.around(self.edges)
        attackers = choose_attackers(s.vehicles, s.attack_fraction, s.seed) if s.attack else frozenset()
        self._number = {account.address: i for i, account in enumerate(accounts)}  # the clock's vehicle index
        for i, (account, data) in enumerate(zip(accounts, self._vehicle_data())):
            attack = get_attack(s.attack, **s.attack_options) if i in attackers else None
            self.vehicles.append(Vehicle(
                account, data, self.deployment.chain_id, position=self.area.sample(self._rng),
                epsilon_budget=s.epsilon_budget, attack=attack, categories=s.categories,
                http=self.http,
            ))  # fmt: skip
        if s.funder_key is not None:
            funder = Account.from_key(s.funder_key.get_secret_value())
            funded = fund(self.w3, funder, [v.address for v in self.vehicles], s.funding_wei)
            self.console.log(f"funded {funded} vehicles from {funder.address}")
        for v in self.vehicles:
            v.register(self._access(v))
        for v in self.vehicles:
            self._associate(v, nearest_edge(self.edges, *v.position))
        self.console.log(
            f"{len(self.vehicles)} vehicles registered ({len(self.attackers)} attackers"
            f"{': ' + s.attack if s.attack else ''}), associated with {len(self.edges)} edges"
        )

    def _connect(self, accounts: list[LocalAccount]) -> None:
        """One web3 connection that signs locally for every vehicle key."""
        s = self.settings
        self.deployment = Deployment.model_validate_json(s.deployment.read_text())
        self.w3 = Web3(Web3.HTTPProvider(s.rpc_url, request_kwargs={"timeout": 30}))
        self.w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
        self.w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(accounts), layer=0)
        if self.w3.eth.chain_id != self.deployment.chain_id:
            raise RuntimeError(f"{s.rpc_url} is chain {self.w3.eth.chain_id}, the deployment is for {self.deployment.chain_id}")
        self.tasks = TasksClient(self.w3, self.deployment.tasks)

    def edge_directory(self) -> list[EdgeInfo]:
        """The cloud's ``GET /edges``."""
        reply = send(self.http, "GET", f"{self.settings.cloud_url.rstrip('/')}/edges", 200)
        edges = [EdgeInfo.model_validate(e) for e in reply.json()]
        if not edges:
            raise RuntimeError("the cloud's edge directory is empty")
        return edges

    def _vehicle_data(self) -> list[TensorData]:
        s = self.settings
        train = self._train_data if self._train_data is not None else load_dataset(s.dataset)[0]
        options = {"alpha": s.alpha} if s.partition == "dirichlet" else {}
        partition = make_partition(s.partition, train.y, s.vehicles, s.seed, **options)
        return [train.subset(idx) for idx in partition.indices]

    def _access(self, vehicle: Vehicle) -> ChainAccess:
        """A :class:`ChainAccess` sending from ``vehicle`` over the fleet's shared connection."""
        dep = self.deployment
        return ChainAccess(
            w3=self.w3, account=vehicle.account, deployment=dep, lock=self._tx_lock,
            registry=RegistryClient(self.w3, dep.registry, vehicle.address),
            tasks=TasksClient(self.w3, dep.tasks, vehicle.address),
        )  # fmt: skip

    def _associate(self, vehicle: Vehicle, edge: EdgeInfo, previous: EdgeInfo | None = None) -> None:
        association = vehicle.associate(edge.url, edge.address, previous.address if previous else None)
        self._edge_of[vehicle.address] = edge
        if previous is not None:
            self.report.handovers += 1
            kept = " (the old edge did not release it)" if association.released_by_previous is False else ""
            self.console.log(f"vehicle {vehicle.index}: handover edge {previous.index} → {edge.index}{kept}")

    def edge_of(self, vehicle: Vehicle) -> EdgeInfo:
        """The edge ``vehicle`` is associated with now."""
        return self._edge_of[vehicle.address]

    # ------------------------------------------------------------ mobility

    def move(self, vehicle: Vehicle) -> bool:
        """Move ``vehicle`` one step; if another edge is now the nearest, hand over to
        it (``previous_edge`` = the old one). Returns whether it handed over."""
        vehicle.position = self.area.step(vehicle.position, self.settings.mobility, self._rng)
        old, new = self._edge_of[vehicle.address], nearest_edge(self.edges, *vehicle.position)
        if new.index == old.index:
            return False
        try:
            self._associate(vehicle, new, old)
        except ServiceError as exc:
            self._fail(vehicle, exc.reason, f"handover to edge {new.index}: {exc}")
            return False
        return True

    # ------------------------------------------------------------ rounds

    def run(
        self,
        stop_event: threading.Event | None = None,
        on_upload: Callable[[UploadEvent], None] | None = None,
        task_ids: list[int] | None = None,
        show_progress: bool = True,
    ) -> FleetReport:
        """Serve the cloud's active tasks (only ``task_ids`` when given) until every one
        of ``task_ids`` has a final status, or until ``stop_event`` is set."""
        stop = stop_event or threading.Event()
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, disable=not show_progress,
        )  # fmt: skip
        with progress:
            while not stop.is_set():
                try:
                    statuses = self.task_statuses(task_ids)
                except ServiceError as exc:
                    self.console.log(f"cloud: {exc}")
                    stop.wait(self.settings.poll_interval_s)
                    continue
                if task_ids is not None and all(statuses.get(t, "ready") not in ACTIVE_STATUSES for t in task_ids):
                    break
                busy = False
                for task_id in sorted(t for t, status in statuses.items() if status in ACTIVE_STATUSES):
                    busy |= self.serve(task_id, stop, progress, on_upload)
                if not busy:
                    stop.wait(self.settings.poll_interval_s)
        return self.report

    def task_statuses(self, task_ids: list[int] | None = None) -> dict[int, str]:
        """Task id → the cloud's status (``GET /tasks/{id}``, or ``GET /tasks`` for all)."""
        base = self.settings.cloud_url.rstrip("/")
        if task_ids is None:
            rows = send(self.http, "GET", f"{base}/tasks", 200).json()
        else:
            rows = []
            for t in task_ids:
                try:
                    rows.append(send(self.http, "GET", f"{base}/tasks/{t}", 200).json())
                except ServiceError as exc:
                    if exc.status != 404:  # 404: not published yet
                        raise
        return {int(row["task_id"]): str(row["status"]) for row in rows}

    def serve(
        self,
        task_id: int,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
        on_upload: Callable[[UploadEvent], None] | None = None,
    ) -> bool:
        """One pass over a task: poll each vehicle that has not had its turn in the round
        yet and is not busy with an earlier one; the selected ones (one that moves hands
        over first) train in batches of ``train_batch`` as they are found, and each batch
        uploads while the next one trains (an upload held for a straggler's compute time
        is not waited for). Returns whether any vehicle trained."""
        stop = stop or threading.Event()
        progress = progress or Progress(disable=True)
        info = self.tasks.task(task_id)
        if info.phase != Phase.TRAINING:
            return False
        waiting = [v for v in self.vehicles if (v.address, task_id, info.round) not in self._done and v.address not in self._busy]
        bar, batch, uploads = None, [], []
        for i, vehicle in enumerate(waiting):
            if stop.is_set():
                break
            if (assignment := self._assignment(vehicle, task_id)) is not None:
                batch.append((vehicle, assignment))
            if batch and (len(batch) == self.settings.train_batch or i == len(waiting) - 1):
                if bar is None:
                    bar = progress.add_task(f"task {task_id} round {info.round}: training", total=None)
                uploads += self._train_and_upload(batch, on_upload)
                progress.advance(bar, len(batch))
                batch = []
        for upload in uploads:
            upload.result()
        if bar is not None:
            progress.remove_task(bar)
        return bar is not None

    def _assignment(self, vehicle: Vehicle, task_id: int) -> Assignment | None:
        """The vehicle's assignment if it is selected, the round is open at its edge and
        it has not had its turn in that round yet."""
        a = self._poll(vehicle, task_id)
        if a is not None and a.open and (vehicle.address, task_id, a.round) not in self._moved:
            # Its edge has committed its trainers (the chain keeps them wherever it goes):
            # it moves once per round now, so a handover falls between selection and upload.
            self._moved.add((vehicle.address, task_id, a.round))
            if self.settings.mobility > 0 and self.move(vehicle):
                a = self._poll(vehicle, task_id)  # at the new edge
        if a is None:
            return None
        key = (vehicle.address, task_id, a.round)
        if a.open and not a.selected:
            self._done.add(key)
        if key in self._done or not (a.selected and a.open and a.global_cid and a.global_digest):
            return None
        return a

    def _poll(self, vehicle: Vehicle, task_id: int) -> Assignment | None:
        edge = self._edge_of[vehicle.address]
        try:
            return vehicle.poll(edge.url, task_id)
        except ServiceError as exc:
            if exc.reason != "unknown_task":  # the edge has not got the task yet
                self._fail(vehicle, exc.reason, f"poll at edge {edge.index}: {exc}")
            return None

    def _global(self, vehicle: Vehicle, assignment: Assignment) -> State:
        """The assigned global model, fetched (from the gateway, else the vehicle's edge)
        and verified once per CID."""
        cid = str(assignment.global_cid)
        if cid not in self._models:
            gateway = (self.settings.gateway_url or self.edge_of(vehicle).url).rstrip("/")
            self._models[cid] = vehicle.fetch_global(gateway, cid, str(assignment.global_digest), assignment.model)
            while len(self._models) > MODEL_CACHE:
                self._models.popitem(last=False)
        return self._models[cid]

    def _train_and_upload(
        self, batch: list[tuple[Vehicle, Assignment]], on_upload: Callable[[UploadEvent], None] | None
    ) -> list[Future[None]]:
        """Train the batch's vehicles together now (``fleet_uploads``: one task and
        round, so one training config; each vehicle's budget is checked in
        :meth:`Vehicle.prepare` and its steps recorded in its engine by the core),
        upload in the background: at once (the returned futures), or once a straggler's
        modelled compute time has passed (:meth:`_upload_after`); each vehicle gets one
        turn per round, whatever its outcome."""
        ready: list[tuple[Vehicle, Assignment, AttackContext]] = []
        for vehicle, assignment in batch:
            self._done.add((vehicle.address, assignment.task_id, assignment.round))
            try:
                ready.append((vehicle, assignment, vehicle.prepare(assignment, self._global(vehicle, assignment))))
            except (BudgetExceeded, PrivacyRefused) as exc:
                with self._report_lock:
                    self.report.refused += 1
                self.console.log(f"vehicle {vehicle.index} refuses to train: {exc}")
            except BlobError as exc:
                self._fail(vehicle, "global_model", f"global model {assignment.global_cid}: {exc}")
        if not ready:
            return []
        started = time.monotonic()
        spec = ready[0][1]
        trained = fleet_uploads(
            create_model(spec.model, default_device()), [v.training_data(spec.training) for v, _, _ in ready], spec.training.local(), [c for _, _, c in ready],
            [v.attack for v, _, _ in ready], [v.privacy for v, _, _ in ready],
        )  # fmt: skip
        trained = self._collude(ready, trained)
        futures = []
        for (vehicle, assignment, context), upload in zip(ready, trained):
            update = vehicle.finish(assignment, context, upload)
            job = _Upload(vehicle, self._edge_of[vehicle.address], assignment, update, on_upload)
            self._busy.add(vehicle.address)
            delay = started + self._compute_s(vehicle, assignment, update) - time.monotonic()
            if delay > 0:
                self._upload_after(delay, job)
            else:
                futures.append(self._uploader.submit(self._upload, job))
        return futures

    def _collude(self, ready: list[tuple[Vehicle, Assignment, AttackContext]], trained: list[torch.Tensor]) -> list[torch.Tensor]:
        """The batch's uploads with each edge's attackers' replaced by what a colluding
        attack sends (``bmfl.attacks.shape_edge_uploads``, the simulator's function), from
        the uploads this batch trained for that edge: an omniscient attack sees the honest
        ones among them. Unchanged without a colluding attacker."""
        attack = next((v.attack for v, _, _ in ready if v.attack is not None), None)
        if attack is None or not attack.colludes:
            return trained
        rows: dict[int, list[int]] = {}
        for i, (vehicle, _, _) in enumerate(ready):
            rows.setdefault(self._edge_of[vehicle.address].index, []).append(i)
        out = list(trained)
        for edge, members in rows.items():
            uploads = {ready[i][0].index: trained[i] for i in members}
            attackers = {ready[i][0].index for i in members if ready[i][0].attack is not None}
            context = ready[members[0]][2]
            shaped = shape_edge_uploads(attack, uploads, attackers, edge, context.reference, context.round_index,  # type: ignore[arg-type]
                                        self.settings.seed, context.previous_reference)  # fmt: skip
            for i in members:
                out[i] = shaped[ready[i][0].index]
        return out

    def _compute_s(self, vehicle: Vehicle, assignment: Assignment, update: TrainedUpdate) -> float:
        """The job's modelled compute time (``bmfl.simulation.stragglers.ComputeClock``, the
        simulator's: work = steps × batch samples); 0 without ``stragglers``."""
        s = self.settings.stragglers
        if s.kind == "none" and s.gap_probability == 0:
            return 0.0
        job = self._jobs[vehicle.address]
        self._jobs[vehicle.address] += 1
        work = job_work(update.steps, assignment.training.local(), len(vehicle.data))
        return self._clock.duration(self._number[vehicle.address], work, job)

    def _upload_after(self, delay: float, job: "_Upload") -> None:
        """Hand ``job`` to the uploader in ``delay`` seconds (the serve loop goes on)."""

        def due() -> None:
            self._timers.discard(timer)
            try:
                self._uploader.submit(self._upload, job).add_done_callback(report_error)
            except RuntimeError:  # the fleet closed meanwhile
                pass

        def report_error(sent: Future[None]) -> None:  # nobody waits on a held upload's future
            if (exc := sent.exception()) is not None:
                self._fail(job.vehicle, type(exc).__name__, f"upload to edge {job.edge.index}: {exc}")

        timer = threading.Timer(delay, due)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _upload(self, job: "_Upload") -> None:
        """Send ``job``; the vehicle is free for new work once it is answered, unless it is
        to be offered again."""
        again = False
        try:
            again = self._send(job)
        finally:
            if not again:
                self._busy.discard(job.vehicle.address)

    def _send(self, job: "_Upload") -> bool:
        """One attempt; returns whether to offer the upload again later."""
        vehicle, edge, assignment, update = job.vehicle, job.edge, job.assignment, job.update
        try:
            reported = update.epsilon if self.settings.report_epsilon else None  # ε reveals q = B/n, hence n
            receipt = vehicle.upload(edge.url, edge.address, assignment.task_id, assignment.round, update.blob, reported)
        except ServiceError as exc:
            reason = self._refused_between_versions(job) if exc.reason == "round_not_open" else exc.reason
            if reason == "offer_again":
                self._upload_after(self.settings.poll_interval_s, job)
                return True
            if reason == "unreachable" and job.resent < RESENDS:
                self._upload_after(self.settings.poll_interval_s * 2**job.resent, replace(job, resent=job.resent + 1))
                return True
            self._fail(vehicle, reason, f"upload to edge {edge.index}: {exc}")
            return False
        self._done.add((vehicle.address, receipt.task_id, receipt.round))  # a stale report takes its turn in that round
        if self.settings.receipts is not None:  # one uploader thread: appends never interleave
            self.settings.receipts.parent.mkdir(parents=True, exist_ok=True)
            with self.settings.receipts.open("a") as f:
                f.write(receipt.model_dump_json() + "\n")
        with self._report_lock:
            self.report.uploads += 1
        if job.on_upload is not None:
            job.on_upload(UploadEvent(
                vehicle=receipt.vehicle, address=vehicle.address, task_id=receipt.task_id, round=receipt.round,
                edge=edge.index, digest=receipt.digest, epsilon=update.epsilon,
                attack=vehicle.attack.name if vehicle.attack else None,
            ))  # fmt: skip
        return False

    def _refused_between_versions(self, job: "_Upload") -> str:
        """What to do with an upload refused as ``round_not_open``: ``offer_again`` when
        the task is asynchronous and active and its next version keeps the upload within
        τ_max (for at most :data:`RESUBMIT_FOR_S`); ``task_over`` when the task ended while
        it was on its way; else ``round_not_open`` (lost)."""
        info = self.tasks.task(job.assignment.task_id)
        if info.status != Status.ACTIVE:
            return "task_over"
        next_version = info.round + (info.phase != Phase.TRAINING)
        fresh = next_version - job.assignment.round <= info.tau_max
        if info.tau_max > 0 and fresh and time.monotonic() < job.since + RESUBMIT_FOR_S:
            return "offer_again"
        return "round_not_open"

    def _fail(self, vehicle: Vehicle, reason: str, message: str) -> None:
        with self._report_lock:
            self.report.failures[reason] += 1
        self.console.log(f"vehicle {vehicle.index}: {message}")

    def close(self) -> None:
        """Drop held uploads, finish the ones under way, close the HTTP client."""
        for timer in list(self._timers):
            timer.cancel()
        self._uploader.shutdown(wait=True)
        self.http.close()
