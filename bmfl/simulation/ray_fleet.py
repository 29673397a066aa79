"""The simulator's vehicles trained in Ray tasks, on whatever cluster Ray is pointed at
(``bmfl simulate --ray auto|ADDRESS|local``; docs/operations.md, "Simulating on a Ray
cluster"). Ray is an optional extra: ``pip install 'bmfl[ray]'``.

The driver keeps every vehicle's state (``bmfl.simulation.vehicles.Fleet``); each task
gets :data:`~bmfl.simulation.vehicles.CHUNK` vehicles — their partition indices, the
state of their random source and their privacy engine — trains them with
:func:`~bmfl.simulation.vehicles.train_vehicles`, as in-process, and returns the uploads
with the advanced random states and engines, which the driver takes back. Same seed,
same chunks, same streams: the same w^r as in-process. The training set, the model, the
attack and each round's w^{r-1} go to Ray's object store once; the training set as
numpy arrays, which every worker on a node reads without copying.
"""

from __future__ import annotations

import copy
import warnings
from collections import deque
from typing import Iterator, Sequence

import torch

from bmfl.attacks import AttackContext
from bmfl.data import TensorData
from bmfl.privacy import SecureGenerator
from bmfl.simulation.vehicles import CHUNK, Fleet, Trained, train_vehicles

INSTALL_HINT = "Ray is not installed: pip install 'bmfl[ray]' (or pip install 'ray>=2.9') to use --ray"


class RayMissing(RuntimeError):
    """``--ray`` was given but Ray is not installed."""


def require_ray():
    """The ``ray`` module, or :class:`RayMissing` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_HINT) from None
    return ray


def _arrays(data: TensorData) -> dict:
    """A training set as numpy arrays (zero-copy in Ray's object store)."""
    arrays = {k: getattr(data, k) for k in ("x", "y", "groups", "aux")}
    return {**{k: None if t is None else t.numpy() for k, t in arrays.items()}, "num_classes": data.num_classes}


def _tensor_data(arrays: dict) -> TensorData:
    with warnings.catch_warnings():  # read-only shared buffers: rows are only ever copied out of them
        warnings.simplefilter("ignore", UserWarning)
        tensors = {k: None if arrays[k] is None else torch.from_numpy(arrays[k]) for k in ("x", "y", "groups", "aux")}
    return TensorData(num_classes=arrays["num_classes"], **tensors)


def _generator(state: torch.Tensor, secure: bool) -> torch.Generator:
    generator = SecureGenerator() if secure else torch.Generator()
    generator.set_state(state)
    return generator


def train_task(arrays, model, config, attack, jobs, reference, previous, round_):
    """One Ray task: ``jobs`` is (vehicle, rows, edge, attacker, random state, secure,
    engine) per vehicle. Returns the :class:`Trained` uploads, the random states after
    training and the engines with the round recorded."""
    train = _tensor_data(arrays)
    generators = [_generator(state, secure) for _, _, _, _, state, secure, _ in jobs]
    vehicles = [job[0] for job in jobs]
    contexts = [AttackContext(reference, g, previous, round_, job[0], job[2]) for job, g in zip(jobs, generators)]
    trained = train_vehicles(
        model, [train.subset(job[1]) for job in jobs], config, vehicles, contexts,
        [attack if job[3] else None for job in jobs], [job[6] for job in jobs],
    )  # fmt: skip
    return trained, [g.get_state() for g in generators], [job[6] for job in jobs]


class RayFleet:
    """Trains the round's vehicles in Ray tasks of :data:`CHUNK` vehicles each, twice
    as many in flight as the cluster has CPUs (the driver holds only their results).

    ``address``: "local" starts a private Ray instance in this process, "auto" joins
    the cluster this machine belongs to, anything else is a Ray address
    (``ray://head:10001``, ``head:6379``). An already initialised Ray is used as is.
    ``num_cpus`` only applies to a private instance."""

    def __init__(self, fleet: Fleet, address: str = "local", num_cpus: int | None = None) -> None:
        ray = require_ray()
        self.ray, self.fleet, self.owned = ray, fleet, not ray.is_initialized()
        if self.owned:
            ray.init(
                address=None if address == "local" else address, num_cpus=num_cpus if address == "local" else None,
                include_dashboard=False, log_to_driver=False,
            )  # fmt: skip
        self.task = ray.remote(num_cpus=1)(train_task)
        cpu_model = copy.deepcopy(fleet.model).cpu()  # Ray's workers train on their CPUs
        self.shared = [ray.put(x) for x in (_arrays(fleet.train), cpu_model, fleet.config, fleet.attack)]

    def train(
        self, vehicles: Sequence[int], round_: int, reference: torch.Tensor, previous: torch.Tensor | None, edge_of
    ) -> Iterator[Trained]:
        f, ray = self.fleet, self.ray
        ref, prev = ray.put(reference), ray.put(previous)
        chunks = [list(vehicles[lo : lo + CHUNK]) for lo in range(0, len(vehicles), CHUNK)]
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))  # tasks in flight: results wait for the edges
        pending: deque = deque()
        for i in range(len(chunks) + window):
            if i < len(chunks):
                jobs = [
                    (v, f.parts[v], int(edge_of[v]), v in f.attackers, f.generator(v).get_state(),
                     isinstance(f.generator(v), SecureGenerator), f.engine(v))
                    for v in chunks[i]
                ]  # fmt: skip
                pending.append(self.task.remote(*self.shared, jobs, ref, prev, round_))
            if len(pending) == window or (i >= len(chunks) and pending):
                trained, states, engines = ray.get(pending.popleft())
                for v, state, engine in zip(trained.vehicles, states, engines):
                    f.generator(v).set_state(state)
                    f.engines[v] = engine
                yield trained

    def close(self) -> None:
        """Shut Ray down if this fleet started it."""
        if self.owned:
            self.ray.shutdown()

