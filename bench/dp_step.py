"""One DP-SGD step per vehicle (BMFL Algorithm 1: C = 1, σ = 2, B = 64 Poisson, η = 0.01,
β = 0.9, the 21,840-parameter CNN on MNIST): ours (``bmfl.training.fleet``, default
stacking, all vehicles stacked, and with the secret randomness a vehicle draws from), the sequential ``train_local`` (which also records
each batch's loss), Opacus (``PrivacyEngine``, Poisson sampling, flat clipping) and a
non-private momentum-SGD step on the same batches, interleaved in one run; then ours
stacked by default vs one vehicle per step, for vehicles of only 8 images.

Each contender trains V vehicles of n images for one epoch (V·⌈n/B⌉ vehicle-steps); the
figure is wall time per vehicle-step, the median over ``--repeats``. Opacus' and the
non-private loop's model/optimizer/loader set-up is not timed; ours is, set-up included.
Every contender runs once untimed first (warm-up).

    python -m bench.dp_step [--vehicles 12 --samples 640 --repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import math
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from bench.common import Row, interleave, median, print_rows, progress
from bmfl.data import TensorData, load_dataset
from bmfl.models import create_model
from bmfl.privacy import PrivacyEngine, SecureGenerator
from bmfl.training import LocalTrainingConfig, round_plan, train_local
from bmfl.training.fleet import train_fleet

CONFIG = LocalTrainingConfig(epochs=1)
TINY = 64  # vehicles of 8 images: the 1,000-vehicle setting, where stacking pays on CPU


def _opacus(model: torch.nn.Module, datasets: list[TensorData]) -> float:
    """Opacus DP-SGD over each vehicle's data, one vehicle after another; the seconds
    of the training loops."""
    from opacus import PrivacyEngine

    elapsed = 0.0
    for data in datasets:
        net = copy.deepcopy(model)
        optimizer = torch.optim.SGD(net.parameters(), lr=CONFIG.lr, momentum=CONFIG.momentum)
        loader = DataLoader(TensorDataset(data.x, data.y), batch_size=CONFIG.batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net, optimizer, loader = PrivacyEngine().make_private(
                module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=CONFIG.noise_multiplier,
                max_grad_norm=CONFIG.clip, poisson_sampling=True,
            )  # fmt: skip
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Opacus' hooks warn on every backward
            for xb, yb in loader:
                optimizer.zero_grad()
                F.cross_entropy(net(xb), yb).backward()
                optimizer.step()
        elapsed += time.perf_counter() - start
    return elapsed


def _non_private(model: torch.nn.Module, datasets: list[TensorData], seed: int) -> float:
    """Momentum SGD on Poisson batches of the mean loss, one vehicle after another; the
    seconds of the training loops."""
    elapsed = 0.0
    for v, data in enumerate(datasets):
        net = copy.deepcopy(model)
        optimizer = torch.optim.SGD(net.parameters(), lr=CONFIG.lr, momentum=CONFIG.momentum)
        gen = torch.Generator().manual_seed(seed + v)
        n = len(data)
        start = time.perf_counter()
        for _ in range(math.ceil(n / CONFIG.batch_size)):
            idx = torch.nonzero(torch.rand(n, generator=gen) < CONFIG.batch_size / n).flatten()
            optimizer.zero_grad()
            (F.cross_entropy(net(data.x[idx]), data.y[idx], reduction="sum") / CONFIG.batch_size).backward()
            optimizer.step()
        elapsed += time.perf_counter() - start
    return elapsed


def run(vehicles: int = 12, samples: int = 640, repeats: int = 3) -> list[Row]:
    train, _ = load_dataset("mnist")
    if vehicles * samples > len(train):
        raise ValueError(f"{vehicles} × {samples} images > the {len(train)} training images")
    datasets = [train.subset(list(range(v * samples, (v + 1) * samples))) for v in range(vehicles)]
    model = create_model("bmfl_cnn")
    steps = vehicles * math.ceil(samples / CONFIG.batch_size)

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(100 + v) for v in range(vehicles)]

    def accs() -> list[PrivacyEngine]:
        return [PrivacyEngine(CONFIG.delta) for _ in range(vehicles)]

    def sequential(d, g, engine: PrivacyEngine) -> None:  # train_local, then its round accounted
        train_local(copy.deepcopy(model), d, CONFIG, g)
        engine.record(round_plan(CONFIG, len(d)))
        engine.epsilon()

    tiny = [train.subset(list(range(8 * v, 8 * v + 8))) for v in range(TINY)]

    def tiny_gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(v) for v in range(TINY)]

    contenders = {
        "tiny, default": lambda: train_fleet(model, tiny, CONFIG, tiny_gens(), record_losses=False),
        "tiny, one by one": lambda: train_fleet(model, tiny, CONFIG, tiny_gens(), record_losses=False, samples_per_step=1),
        "ours": lambda: train_fleet(model, datasets, CONFIG, gens(), accs(), record_losses=False),
        "ours, secret noise": lambda: train_fleet(
            model, datasets, CONFIG, [SecureGenerator() for _ in range(vehicles)], accs(), record_losses=False
        ),
        "ours, all stacked": lambda: train_fleet(
            model, datasets, CONFIG, gens(), accs(), record_losses=False, samples_per_step=vehicles * CONFIG.batch_size
        ),
        "train_local": lambda: [sequential(d, g, a) for d, g, a in zip(datasets, gens(), accs())],
        "Opacus": lambda: _opacus(model, datasets),
        "non-private": lambda: _non_private(model, datasets, 100),
    }
    interleave(contenders, 1)  # warm-up, not counted
    with progress() as bar:
        task = bar.add_task("dp_step: contenders × repeats", total=repeats)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeats):
            for name, seconds in interleave(contenders, 1).items():
                times[name] += seconds
            bar.advance(task)
    per_step = {name: 1e3 * median(t) / (TINY if name.startswith("tiny") else steps) for name, t in times.items()}
    ours = per_step["ours"]
    note = f"{vehicles} vehicles × {samples} images, {steps} vehicle-steps, median of {repeats}"
    return [
        Row("dp_step", "DP-SGD step vs Opacus", ours, "Opacus", per_step["Opacus"], "ms", note=note),
        Row("dp_step", "DP-SGD step vs train_local", ours, "train_local (torch.func, sequential)", per_step["train_local"], "ms", note=note),
        Row("dp_step", "DP-SGD step vs a non-private step", ours, "non-private SGD", per_step["non-private"], "ms", "overhead", note=note),
        Row("dp_step", "DP-SGD step with the vehicles' secret randomness vs a non-private step", per_step["ours, secret noise"],
            "non-private SGD", per_step["non-private"], "ms", "overhead",
            note=f"{note}; batches and noise from SecureGenerator (AES-256-CTR under an os.urandom key), as a vehicle "
                 "trains; the rows above draw from seeded generators, as Opacus does by default"),
        Row("dp_step", f"all {vehicles} vehicles stacked vs default stacking", per_step["ours, all stacked"],
            "ours (default)", ours, "ms", note=note),
        Row("dp_step", f"{TINY} vehicles of 8 images: default stacking vs one by one", per_step["tiny, default"],
            "ours, one vehicle per step", per_step["tiny, one by one"], "ms",
            note=f"1 step each (B = 64 > n: the whole set); median of {repeats}"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=12)
    parser.add_argument("--samples", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print_rows(f"DP-SGD step per vehicle, {torch.get_num_threads()} torch thread(s)", run(args.vehicles, args.samples, args.repeats))


if __name__ == "__main__":
    main()
