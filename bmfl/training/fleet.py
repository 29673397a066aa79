"""Local training of many vehicles at once: BMFL Algorithm 1 (Eq. 9) vectorised over
the vehicles of a round.

The vehicles' parameters are stacked along a leading vehicle axis and one DP-SGD step
runs for all of them together: ``torch.func.functional_call`` under ``vmap`` over
vehicles, with ``vmap(grad)`` per-sample gradients inside, then per vehicle: clipping
ḡ_i = g_i / max(1, ‖g_i‖₂/C), ĝ = (Σ_i ḡ_i + N(0, σ²C² I)) / B, momentum
ĝ_t = ĝ + β ĝ_{t−1} and w ← w − η ĝ_t, exactly as :func:`bmfl.training.train_local`.
The clipped sums come from ghost clipping (``bmfl.training.ghost``: no per-sample
gradients formed) for models :func:`can_ghost_clip` accepts, else from the per-sample
gradients; the same sums up to float summation order.

Each vehicle keeps its own data (any size), its own random source (a
``bmfl.privacy.SecureGenerator``, or a seeded generator in research runs) and its own
``bmfl.privacy.PrivacyEngine``: its round is planned (:func:`plan_upload`) and checked
against its budget before any vehicle trains, and its steps are recorded in its engine
once it has trained — here and nowhere else, so a vehicle's round is accounted once,
whether it trains alone (a fleet of one) or stacked with others.

A generator is consumed in the order ``train_local`` consumes it: per step the batch (a Poisson draw, or a permutation at each epoch start), then the noise of
every parameter tensor in turn. So equal seeds give equal uploads to sequential
training, up to float summation order: batches of different sizes are padded to the
largest, and padded samples get clip factor 0. Vehicles that run out of steps (less
data) leave the stacked step.

Vehicles are stacked in chunks, largest datasets first, each holding about
``samples_per_step`` expected samples per step (chunking changes the random streams
in no way and the results only in float summation order: ``vmap`` over more vehicles
sums differently, by ~1e-8; a vehicle alone in its chunk — on CPU by default, any with
B = 64 and n ≥ 64 — gets the same bits whatever else the fleet holds). The default is measured (``bench/dp_step.py``,
``docs/performance.md``): on CPU, 64 — stacking pays while vehicles' batches are small
(vehicles of 8 images) and costs once they are not (stacked 64-image batches of the
BMFL CNN are slower than separate ones: ``vmap`` turns each convolution into a grouped
one and the per-sample gradients outgrow the cache); on accelerators, 4,096.

Models that cannot be vectorised (buffers such as batch-norm statistics, recurrent
layers, or a failing ``vmap`` probe) are trained one by one with ``train_local``.

:func:`fleet_uploads` is a vehicle's whole local round (its attack's hooks around the
training); a single vehicle, the vehicle client and the simulator all go through it.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections import OrderedDict
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from bmfl.data.base import TensorData
from bmfl.models.features import featurized
from bmfl.params import flatten, unflatten
from bmfl.privacy.accountant import PrivacyAccountant
from bmfl.privacy.engine import PrivacyEngine, RoundPlan
from bmfl.privacy.noise import gaussians
from bmfl.training.ghost import clipped_sum, supports
from bmfl.training.local import (
    LocalTrainingConfig, LocalTrainingResult, _batches, begin_step, expected_batch, loss_function, refuse_unsound,
    round_plan, sampling_rate, train_local, training_targets,
)  # fmt: skip

Tensors = dict[str, torch.Tensor]
Privacy = PrivacyEngine | PrivacyAccountant | None
"""A vehicle's privacy slot: its engine (a bare accountant is wrapped in an engine with
no budget), or None to account nothing."""
SAMPLES_PER_STEP = {"cpu": 64, "accelerator": 4096}
"""Default expected samples of one stacked step (memory: about that many per-sample
gradients of d floats)."""


def load_transforms() -> None:
    """Import what ``torch.func``'s transforms import on their first call (``torch._dynamo``,
    about 1.6 s here), so that a long-lived trainer pays it when it starts rather than
    in the first round it trains."""
    grad(lambda t: t.sum())(torch.zeros(1))


PROBES = 64
"""Probe answers remembered (:func:`_remembered`), least recently used dropped first."""
_answers: OrderedDict[tuple, bool] = OrderedDict()


def _remembered(probe: Callable[..., bool]) -> Callable[..., bool]:
    """``probe(model, data, *rest)`` answered once per architecture: the model's layers
    (its ``repr``), parameter and buffer shapes, dtypes and device, the examples' shape
    and dtype and ``rest``. The probes test what layers a model has and what
    ``torch.func`` can follow, not the parameters' values, and cost 0.1 s of CPU per
    call, which a vehicle training a small dataset each round would pay again."""

    @functools.wraps(probe)
    def remembered(model: nn.Module, data: TensorData, *rest) -> bool:
        key = (
            probe.__name__, type(model), repr(model), type(data), tuple(data.x.shape[1:]), data.x.dtype,
            tuple(data.y.shape[1:]), data.y.dtype, rest,
            tuple((k, tuple(t.shape), t.dtype, t.device) for k, t in itertools.chain(model.named_parameters(), model.named_buffers())),
        )  # fmt: skip
        if key not in _answers:
            _answers[key] = probe(model, data, *rest)
            while len(_answers) > PROBES:
                _answers.popitem(last=False)
        _answers.move_to_end(key)
        return _answers[key]

    return remembered


@_remembered
def can_vectorise(model: nn.Module, data: TensorData) -> bool:
    """Whether :func:`train_fleet` can stack ``model`` over vehicles: no buffers (state
    training would have to carry per vehicle), no recurrent or batch-norm layers, and a
    stacked per-sample-gradient probe (2 vehicles × 1 sample of ``data``) that runs."""
    if any(True for _ in model.buffers()):
        return False
    if any(isinstance(m, (nn.RNNBase, nn.modules.batchnorm._BatchNorm)) for m in model.modules()):
        return False
    device = next(model.parameters()).device
    params = {k: torch.stack([p.detach()] * 2) for k, p in model.named_parameters()}
    x, y = data.x[:1].to(device), training_targets(data, model)[:1].to(device)
    try:
        _per_sample_grads(model, loss_function(data, model), 1.0)(params, torch.stack([x, x]), torch.stack([y, y]))
    except Exception:  # noqa: BLE001 - whatever fails under vmap means "train one by one"
        return False
    return True


def _losses(model: nn.Module, loss_sum: Callable, sign: float) -> Callable:
    """(params, x (B, …), y (B, …)) → the signed loss of each sample (B,)."""

    def losses(p: Tensors, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xb,))
        return sign * vmap(lambda o, t: loss_sum(o.unsqueeze(0), t.unsqueeze(0)))(out, yb)

    return losses


def _per_sample_grads(model: nn.Module, loss_sum: Callable, sign: float) -> Callable:
    """(stacked params, x (V, B, …), y (V, B, …)) → per-sample gradients (V, B, …)."""

    def sample_loss(p: Tensors, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return sign * loss_sum(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    return vmap(vmap(grad(sample_loss), in_dims=(None, 0, 0)), in_dims=(0, 0, 0))


def _clipper(model: nn.Module, loss_sum: Callable, sign: float, ghost: bool) -> Callable:
    """(stacked params, x (V, B, …), y (V, B, …), mask (V, B), clip) → each vehicle's
    clipped sum Σ_i m_i g_i / max(1, ‖g_i‖₂/C): by ghost clipping (``bmfl.training.ghost``;
    one vehicle without ``vmap``) when ``ghost``, else from per-sample gradients."""
    if not ghost:
        per_sample = _per_sample_grads(model, loss_sum, sign)
        return lambda p, xb, yb, mask, clip: _clipped_sums(per_sample(p, xb, yb), mask, clip)
    one = clipped_sum(model, loss_sum, sign)
    many = vmap(clipped_sum(model, loss_sum, sign, stacked=True), in_dims=(0, 0, 0, 0, None))

    def clipped(p: Tensors, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor, clip: float) -> Tensors:
        if xb.shape[0] > 1:
            return many(p, xb, yb, mask, clip)
        alone = one({k: v[0] for k, v in p.items()}, xb[0], yb[0], mask[0], clip)
        return {k: g.unsqueeze(0) for k, g in alone.items()}

    return clipped


@_remembered
def can_ghost_clip(model: nn.Module, data: TensorData, config: LocalTrainingConfig) -> bool:
    """Whether ghost clipping (``bmfl.training.ghost``) serves ``model``: every parameter
    in a supported layer, and on a probe of up to 4 samples of ``data`` (one vehicle
    and two stacked) the same clipped sums as per-sample gradients."""
    if not supports(model):
        return False
    device = next(model.parameters()).device
    x, y = data.x[:4].to(device), training_targets(data, model)[:4].to(device)
    loss_sum, sign = loss_function(data, model), -1.0 if config.maximize else 1.0
    begin_step(loss_sum, 0)
    params = {k: p.detach().unsqueeze(0) for k, p in model.named_parameters()}
    mask = torch.ones(1, len(x), device=device)
    try:
        for vehicles in (1, 2):
            p = {k: v.expand(vehicles, *v.shape[1:]) for k, v in params.items()}
            xs, ys, ms = (t.expand(vehicles, *t.shape) for t in (x, y, mask[0]))
            ours = _clipper(model, loss_sum, sign, True)(p, xs, ys, ms, config.clip)
            reference = _clipper(model, loss_sum, sign, False)(p, xs, ys, ms, config.clip)
            if not all(torch.allclose(ours[k], reference[k], rtol=1e-4, atol=1e-6 * config.clip) for k in reference):
                return False
    except Exception:  # noqa: BLE001 - a layer the ghost path cannot follow means "per-sample gradients"
        return False
    return True


def _batch_grads(model: nn.Module, loss_sum: Callable, sign: float) -> Callable:
    """(stacked params, x, y, mask (V, B)) → gradient of each vehicle's masked batch loss."""
    losses = _losses(model, loss_sum, sign)
    return vmap(grad(lambda p, xb, yb, mb: (losses(p, xb, yb) * mb).sum()))


class _Vehicle:
    """One vehicle's data, random stream and progress inside a stacked chunk."""

    def __init__(self, data: TensorData, config: LocalTrainingConfig, generator: torch.Generator, device: torch.device) -> None:
        self.n = len(data)
        self.generator = generator
        self.expected_batch = expected_batch(config, self.n)
        self.batches: Iterator[torch.Tensor] = itertools.islice(
            _batches(self.n, config, generator, device), config.max_steps
        )
        self.steps = 0
        self.losses: list[float] = []


def train_fleet(
    model: nn.Module,
    datasets: Sequence[TensorData],
    config: LocalTrainingConfig,
    generators: Sequence[torch.Generator],
    engines: Sequence[Privacy] | None = None,
    *,
    starts: torch.Tensor | None = None,
    samples_per_step: int | None = None,
    record_losses: bool = True,
) -> list[LocalTrainingResult]:
    """Train one local model per dataset (Algorithm 1), stacked over vehicles.

    ``model`` gives the architecture and, unless ``starts`` (flat start vectors, one row
    per vehicle) is given, the parameters every vehicle starts from; it is not changed.
    ``generators[i]`` drives vehicle i's batches and noise (one generator per vehicle).
    Every vehicle's round is checked against ``engines[i]`` before any trains
    (``bmfl.privacy.PrivacyRefused``, ``bmfl.privacy.BudgetExceeded``: nothing trained
    or spent) and its steps recorded
    there afterwards; results then carry ε at the engine's δ. ``record_losses=False``
    skips the post-step loss of each batch (``mean_loss`` is then NaN). Returns what
    ``train_local`` would return for each vehicle, in order.
    """
    engines = _engines(engines, len(datasets))
    if any(len(d) == 0 for d in datasets):
        raise ValueError("no training data")
    for data, engine in zip(datasets, engines):
        if engine is not None:
            refuse_unsound(config, len(data))
            engine.check(round_plan(config, len(data)))
    return _train_fleet(
        model, datasets, config, generators, engines, starts=starts, samples_per_step=samples_per_step,
        record_losses=record_losses,
    )  # fmt: skip


def _engines(engines: Sequence[Privacy] | None, count: int) -> list[PrivacyEngine | None]:
    engines = [PrivacyEngine.of(e) for e in engines] if engines is not None else [None] * count
    if len(engines) != count:
        raise ValueError("need one privacy engine slot per dataset")
    owned = [id(e.accountant) for e in engines if e is not None]
    if len(set(owned)) != len(owned):
        raise ValueError("every vehicle needs its own privacy engine (a shared one would be checked per vehicle)")
    return engines


def _train_fleet(
    model: nn.Module,
    datasets: Sequence[TensorData],
    config: LocalTrainingConfig,
    generators: Sequence[torch.Generator],
    engines: list[PrivacyEngine | None],
    *,
    starts: torch.Tensor | None,
    samples_per_step: int | None,
    record_losses: bool,
) -> list[LocalTrainingResult]:
    """:func:`train_fleet` once the budgets are checked."""
    count = len(datasets)
    if len(generators) != count:
        raise ValueError("need one generator per dataset")
    if len({id(g) for g in generators}) != count:
        raise ValueError("every vehicle needs its own generator (shared streams would interleave)")
    if any(len(d) == 0 for d in datasets):
        raise ValueError("no training data")
    if samples_per_step is not None and samples_per_step < 1:
        raise ValueError("samples_per_step must be positive")
    datasets = [featurized(model, d) for d in datasets]
    if starts is None:
        starts = flatten(model.state_dict()).expand(count, -1)
    if starts.shape[0] != count:
        raise ValueError(f"starts has {starts.shape[0]} rows for {count} datasets")
    if not can_vectorise(model, datasets[0]):
        one_by_one = zip(datasets, generators, engines, starts)
        return [_account(_train_one(model, d, config, g, s), config, e) for d, g, e, s in one_by_one]
    results: list[LocalTrainingResult | None] = [None] * count
    device = next(model.parameters()).device
    budget = samples_per_step or SAMPLES_PER_STEP["cpu" if device.type == "cpu" else "accelerator"]
    ghost = config.dp and can_ghost_clip(model, datasets[0], config)
    for chunk in _chunks([min(config.batch_size, len(d)) for d in datasets], budget):
        trained = _train_chunk(
            model, [datasets[i] for i in chunk], config, [generators[i] for i in chunk], starts[chunk], record_losses,
            ghost,
        )
        for i, result in zip(chunk, trained):
            results[i] = _account(result, config, engines[i])
    return results  # type: ignore[return-value]


def _chunks(batches: list[int], budget: int) -> list[list[int]]:
    """Vehicle indices, largest expected batch first, cut into chunks whose expected
    batches add up to at most ``budget`` (a vehicle alone when it exceeds it)."""
    chunks: list[list[int]] = []
    total = budget
    for i in sorted(range(len(batches)), key=lambda i: -batches[i]):
        if total + batches[i] > budget:
            chunks.append([])
            total = 0
        chunks[-1].append(i)
        total += batches[i]
    return chunks


def _train_one(
    model: nn.Module,
    data: TensorData,
    config: LocalTrainingConfig,
    generator: torch.Generator,
    start: torch.Tensor,
) -> LocalTrainingResult:
    """The sequential fallback: ``train_local`` on a private copy of ``model``."""
    work = copy.deepcopy(model)
    work.load_state_dict(unflatten(start.to(next(work.parameters()).device), work.state_dict()))
    return train_local(work, data, config, generator)


def _account(
    result: LocalTrainingResult, config: LocalTrainingConfig, engine: PrivacyEngine | None
) -> LocalTrainingResult:
    """The one place a trained round is accounted: its steps go to the vehicle's
    engine and the result carries ε at the engine's δ (private rounds only)."""
    if engine is not None:
        plan = RoundPlan(result.steps, result.sampling_rate, config.noise_multiplier if config.dp else 0.0)
        engine.record(plan)
        if plan.private:
            result.epsilon = engine.epsilon()
    return result


def _train_chunk(
    model: nn.Module,
    datasets: Sequence[TensorData],
    config: LocalTrainingConfig,
    generators: Sequence[torch.Generator],
    starts: torch.Tensor,
    record_losses: bool,
    ghost: bool = False,
) -> list[LocalTrainingResult]:
    """Algorithm 1 for a chunk of vehicles, one stacked step at a time (``ghost``: clip
    by ghost clipping, :func:`can_ghost_clip`)."""
    device = next(model.parameters()).device
    shapes = OrderedDict((k, p.shape) for k, p in model.named_parameters())
    params = _stack(starts.to(device), shapes)
    velocity = {k: torch.zeros_like(p) for k, p in params.items()}
    loss_sum = loss_function(datasets[0], model)
    sign = -1.0 if config.maximize else 1.0
    clipped = _clipper(model, loss_sum, sign, ghost)
    batch_grads = _batch_grads(model, loss_sum, sign)
    sample_losses = vmap(_losses(model, loss_sum, sign))
    x = torch.cat([d.x for d in datasets]).to(device)
    y = torch.cat([training_targets(d, model) for d in datasets]).to(device)
    offsets = torch.tensor([0, *itertools.accumulate(len(d) for d in datasets)][:-1], device=device)
    vehicles = [_Vehicle(d, config, g, device) for d, g in zip(datasets, generators)]
    live = list(range(len(vehicles)))
    noisy = config.dp and config.noise_multiplier > 0
    std = config.noise_multiplier * config.clip
    while True:
        batches = {i: next(vehicles[i].batches, None) for i in live}
        live = [i for i in live if batches[i] is not None]
        if not live:
            break
        begin_step(loss_sum, vehicles[live[0]].steps)  # live vehicles step together
        noise = [gaussians(list(shapes.values()), std, vehicles[i].generator) for i in live] if noisy else []
        index, mask = _padded(live, batches, offsets)
        rows = torch.tensor(live, device=device)
        everyone = len(live) == len(vehicles)
        p = params if everyone else {k: v[rows] for k, v in params.items()}
        v = velocity if everyone else {k: t[rows] for k, t in velocity.items()}
        xb, yb = x[index], y[index]
        if config.dp:
            summed = clipped(p, xb, yb, mask, config.clip)
        else:
            summed = batch_grads(p, xb, yb, mask)
        expected = torch.tensor([float(vehicles[i].expected_batch) for i in live], device=device)
        for j, (k, g) in enumerate(summed.items()):
            if noisy:
                g = g + torch.stack([n[j] for n in noise]).to(device)
            v[k] = g / expected.view(-1, *[1] * (g.dim() - 1)) + config.momentum * v[k]
            p[k] = p[k] - config.lr * v[k]
        if not everyone:
            for k in params:
                params[k][rows], velocity[k][rows] = p[k], v[k]
        for i in live:
            vehicles[i].steps += 1
        if record_losses:
            with torch.no_grad():
                _record_losses(vehicles, live, sample_losses(p, xb, yb), mask, sign)
    return [_result(vehicles[j], {k: t[j] for k, t in params.items()}, len(datasets[j]), config) for j in range(len(vehicles))]


def _stack(starts: torch.Tensor, shapes: "OrderedDict[str, torch.Size]") -> Tensors:
    """Flat start vectors (V, d) → stacked parameter tensors (V, *shape)."""
    out, offset = {}, 0
    for k, shape in shapes.items():
        n = shape.numel()
        out[k] = starts[:, offset : offset + n].reshape(-1, *shape).to(torch.float32).clone()
        offset += n
    if offset != starts.shape[1]:
        raise ValueError(f"start vectors have {starts.shape[1]} entries, the model has {offset} parameters")
    return out


def _padded(live: list[int], batches: dict[int, torch.Tensor], offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the chunk's concatenated data for each live vehicle's batch, padded to
    the largest batch with the vehicle's first row, and the mask of real samples."""
    width = max(1, max(len(batches[i]) for i in live))
    index = torch.zeros(len(live), width, dtype=torch.long, device=offsets.device)
    mask = torch.zeros(len(live), width, device=offsets.device)
    for j, i in enumerate(live):
        b = batches[i]
        index[j] = offsets[i]
        index[j, : len(b)] += b
        mask[j, : len(b)] = 1.0
    return index, mask


def _clipped_sums(per_sample: Tensors, mask: torch.Tensor, clip: float) -> Tensors:
    """Σ_i m_i g_i / max(1, ‖g_i‖₂ / C) per vehicle (m: 0 for padding), the norm over all
    parameters of sample i (as ``bmfl.training.local._clipped_sum``)."""
    norms = torch.sqrt(sum(torch.einsum("vbi,vbi->vb", g.flatten(2), g.flatten(2)) for g in per_sample.values()))
    factor = (clip / (norms + 1e-12)).clamp(max=1.0) * mask
    return {k: torch.einsum("vi,vi...->v...", factor, g) for k, g in per_sample.items()}


def _record_losses(vehicles: list[_Vehicle], live: list[int], losses: torch.Tensor, mask: torch.Tensor, sign: float) -> None:
    """Mean loss of each live vehicle's batch after its step (``train_local``'s record)."""
    counts = mask.sum(1)
    means = (losses * mask).sum(1) * sign / counts.clamp(min=1)
    for j, i in enumerate(live):
        if counts[j] > 0:
            vehicles[i].losses.append(float(means[j]))


def _result(vehicle: _Vehicle, params: Tensors, n: int, config: LocalTrainingConfig) -> LocalTrainingResult:
    losses = vehicle.losses
    return LocalTrainingResult(
        state=OrderedDict((k, t.detach().clone()) for k, t in params.items()),
        steps=vehicle.steps,
        sampling_rate=sampling_rate(config, n),
        mean_loss=sum(losses) / len(losses) if losses else float("nan"),
        losses=losses,
    )


def plan_upload(data: TensorData, config: LocalTrainingConfig, attack=None) -> RoundPlan:
    """What :func:`fleet_uploads` will train for one vehicle: its attack's config over
    its data (no steps for an attack that does not train)."""
    if attack is not None and not attack.trains:
        return RoundPlan(0, sampling_rate(config, max(1, len(data))), 0.0)
    return round_plan(attack.training_config(config) if attack is not None else config, len(data))


def fleet_uploads(
    model: nn.Module,
    datasets: Sequence[TensorData],
    config: LocalTrainingConfig,
    contexts: Sequence,
    attacks: Sequence | None = None,
    engines: Sequence[Privacy] | None = None,
    *,
    samples_per_step: int | None = None,
) -> list[torch.Tensor]:
    """One local round of Algorithm 1 for each vehicle, all at once; returns the flat
    uploads in order. A single vehicle is a fleet of one.

    First every vehicle's round (:func:`plan_upload`) is checked against its engine
    (``engines[i]``): a DP round the accountant cannot state exactly raises
    ``bmfl.privacy.PrivacyRefused`` (``refuse_unsound``), one that would exceed the
    budget ``bmfl.privacy.BudgetExceeded``, before anything is drawn, trained or spent. Then vehicle i
    (``contexts[i]``: an ``AttackContext``) runs its attack's hooks (``attacks[i]``,
    None for an honest vehicle) — data, config, start vector, training, upload — with
    one stacked :func:`train_fleet` per distinct training config, and its steps are
    recorded in its engine. An attack with ``trains = False`` is applied to w^{r-1}
    without training (and spends nothing). ``model`` gives the architecture and the
    device the vehicles train on, and is not changed; each upload is returned where its
    context's reference w^{r-1} is (``bmfl.device``: on the CPU)."""
    count = len(datasets)
    attacks = list(attacks) if attacks is not None else [None] * count
    engines = _engines(engines, count)
    if not len(contexts) == len(attacks) == count:
        raise ValueError("need one context, attack slot and engine slot per dataset")
    for data, attack, engine in zip(datasets, attacks, engines):
        if engine is not None:
            plan = plan_upload(data, config, attack)
            if plan.trains:
                refuse_unsound(attack.training_config(config) if attack is not None else config, len(data))
            engine.check(plan)
    uploads: list[torch.Tensor | None] = [None] * count
    groups: dict[LocalTrainingConfig, list[int]] = {}
    inputs: dict[int, tuple[TensorData, torch.Tensor]] = {}
    for i, (data, context, attack) in enumerate(zip(datasets, contexts, attacks)):
        if attack is None:
            inputs[i] = (data, context.reference)
            groups.setdefault(config, []).append(i)
        elif not attack.trains:
            uploads[i] = attack.poison_update(context.reference.clone(), context)
        else:
            poisoned = attack.poison_data(data, context.generator)
            local_config = attack.training_config(config)
            inputs[i] = (poisoned, attack.start_vector(context))
            groups.setdefault(local_config, []).append(i)
    for local_config, members in groups.items():
        results = _train_fleet(
            model, [inputs[i][0] for i in members], local_config, [contexts[i].generator for i in members],
            [engines[i] for i in members], starts=torch.stack([inputs[i][1] for i in members]),
            samples_per_step=samples_per_step, record_losses=False,
        )  # fmt: skip
        for i, result in zip(members, results):
            upload = flatten(result.state).to(contexts[i].reference.device)
            uploads[i] = upload if attacks[i] is None else attacks[i].poison_update(upload, contexts[i])
    return uploads  # type: ignore[return-value]
