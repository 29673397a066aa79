"""Ghost clipping (bmfl.training.ghost): the clipped, summed gradient equals today's
per-sample path (torch.func per-sample gradients, then ``_clipped_sum``) on every model
the stacked DP path serves, alone and stacked over vehicles with padding; models it
cannot follow fall back to per-sample gradients and still train the same vehicles."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.training import LocalTrainingConfig, train_fleet, train_local
from bmfl.training.fleet import can_ghost_clip
from bmfl.training.ghost import clipped_sum, supports
from bmfl.training.local import _clipped_sum, loss_function, training_targets


class _Strided(nn.Module):
    """Convolutions with stride, padding and dilation, a Conv1d and a Linear over positions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=2)
        self.line = nn.Conv1d(3, 4, 2, stride=1, padding=1, bias=False)
        self.seq = nn.Linear(4, 5)
        self.head = nn.Linear(5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).mean(2)  # (B, 3, W')
        h = torch.relu(self.line(h))  # (B, 4, L)
        return self.head(torch.tanh(self.seq(h.transpose(1, 2))).mean(1))


class _Shared(nn.Module):
    """One Linear run twice: its per-layer bookkeeping does not hold."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.fc(x)))


class _Scaled(nn.Module):
    """A parameter outside any supported layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.scale = nn.Parameter(torch.tensor([1.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.fc(x)


def _data(shape: tuple, n: int, classes: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g), classes)


def _flows(n: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 2, 32, generator=g), torch.randint(0, 5, (n,), generator=g)
    aux = torch.stack([torch.randn(n, generator=g), torch.randint(0, 3, (n,), generator=g).float()], 1)
    return TensorData(x, y, 5, None, aux)


CASES = {
    "bmfl_cnn": (lambda: create_model("bmfl_cnn"), lambda s: _data((1, 28, 28), 12, 10, s)),
    "mlp": (lambda: create_model("mlp", hidden=(32, 16)), lambda s: _data((1, 28, 28), 12, 10, s)),
    "mtl_cnn1d": (lambda: create_model("mtl_cnn1d", aux_heads=[1, 3]), lambda s: _flows(12, s)),
    "strided": (_Strided, lambda s: _data((2, 9, 11), 12, 6, s)),
}


def _today(model: nn.Module, data: TensorData, clip: float) -> dict[str, torch.Tensor]:
    """Today's path: per-sample gradients by vmap(grad), then ``_clipped_sum``."""
    loss_sum = loss_function(data, model)
    params = {k: p.detach() for k, p in model.named_parameters()}

    def sample_loss(p, xi, yi):
        return loss_sum(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    samples = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, data.x, training_targets(data, model))
    return _clipped_sum(samples, clip)


def _close(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for k in reference:
        assert torch.allclose(ours[k], reference[k], rtol=1e-5, atol=1e-6), (k, float((ours[k] - reference[k]).abs().max()))


@pytest.mark.parametrize("clip", [0.05, 1.0, 1e6])
@pytest.mark.parametrize("name", list(CASES))
def test_ghost_clipped_sum_equals_per_sample_clipping(name, clip):
    torch.manual_seed(3)
    build, data_of = CASES[name]
    model, data = build(), data_of(0)
    assert supports(model)
    y = training_targets(data, model)
    params = {k: p.detach() for k, p in model.named_parameters()}
    ours = clipped_sum(model, loss_function(data, model), 1.0)(params, data.x, y, torch.ones(len(data)), clip)
    _close(ours, _today(model, data, clip))


@pytest.mark.parametrize("name", list(CASES))
def test_stacked_ghost_clipping_equals_each_vehicle_alone(name):
    """Two vehicles with their own parameters under vmap; the second's batch padded with
    rows its mask drops."""
    torch.manual_seed(4)
    build, data_of = CASES[name]
    models, datasets = [build(), build()], [data_of(1), data_of(2).subset(list(range(7)))]
    pad = datasets[1].x[:1].expand(5, *datasets[1].x.shape[1:])
    x = torch.stack([datasets[0].x, torch.cat([datasets[1].x, pad])])
    ys = [training_targets(d, models[0]) for d in datasets]
    y = torch.stack([ys[0], torch.cat([ys[1], ys[1][:1].expand(5, *ys[1].shape[1:])])])
    mask = torch.tensor([[1.0] * 12, [1.0] * 7 + [0.0] * 5])
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]) for k, _ in models[0].named_parameters()}
    run = vmap(clipped_sum(models[0], loss_function(datasets[0], models[0]), 1.0, stacked=True), in_dims=(0, 0, 0, 0, None))
    ours = run(params, x, y, mask, 0.5)
    for v, (model, data) in enumerate(zip(models, datasets)):
        _close({k: g[v] for k, g in ours.items()}, _today(model, data, 0.5))


def test_unsupported_models_fall_back_to_per_sample_gradients():
    data = [_data((6,), n, 6, s) for s, n in enumerate([20, 9])]
    config = LocalTrainingConfig(epochs=2, batch_size=8)
    assert not supports(_Scaled())  # a parameter outside Linear / Conv layers
    assert supports(_Shared()) and not can_ghost_clip(_Shared(), data[0], config)  # a layer run twice
    for build in (_Scaled, _Shared):
        torch.manual_seed(5)
        model = build()
        assert not can_ghost_clip(model, data[0], config)
        fleet = train_fleet(model, data, config, [torch.Generator().manual_seed(i) for i in range(2)])
        alone = [train_local(copy.deepcopy(model), d, config, torch.Generator().manual_seed(i)) for i, d in enumerate(data)]
        for f, a in zip(fleet, alone):
            assert torch.allclose(flatten(f.state), flatten(a.state), atol=1e-6)


def test_supported_models_train_by_ghost_clipping_to_the_same_model_as_train_local():
    """Same seeds, same Poisson batches and noise: ghost-clipped fleet training gives
    train_local's per-sample-gradient model to float tolerance."""
    torch.manual_seed(6)
    model = create_model("bmfl_cnn")
    data = [_data((1, 28, 28), n, 10, s) for s, n in enumerate([70, 30, 6])]
    config = LocalTrainingConfig(epochs=2, batch_size=16)
    assert can_ghost_clip(model, data[0], config)
    fleet = train_fleet(model, data, config, [torch.Generator().manual_seed(9 + i) for i in range(3)])
    alone = [train_local(copy.deepcopy(model), d, config, torch.Generator().manual_seed(9 + i)) for i, d in enumerate(data)]
    for f, a in zip(fleet, alone):
        assert f.steps == a.steps
        assert torch.allclose(flatten(f.state), flatten(a.state), atol=1e-5)
    assert F.mse_loss(flatten(fleet[0].state), flatten(model.state_dict())) > 0
