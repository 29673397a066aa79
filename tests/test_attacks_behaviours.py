"""Attacks as vehicle behaviours (docs/algorithms.md §8)."""

import pytest
import torch
from torch import nn

from bmfl.attacks import (
    Attack,
    AttackContext,
    add_trigger,
    attack_success_rate,
    available_attacks,
    get_attack,
    local_upload,
    register_attack,
    trigger_mask,
)
from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.training import LocalTrainingConfig
from bmfl.training.evaluate import evaluate

REF = torch.tensor([1.0, -2.0, 0.5])


def ctx(prev=None, seed=0):
    return AttackContext(REF, torch.Generator().manual_seed(seed), previous_reference=prev)


def test_registry_has_every_attack():
    assert {"sign_flip", "same_value", "gaussian", "label_flip", "backdoor", "tuning_scaling"} <= set(available_attacks())
    with pytest.raises(KeyError, match="unknown attack"):
        get_attack("nope")


def test_sign_flip_and_same_value():
    upload = torch.tensor([1.5, -2.0, 0.0])
    assert get_attack("sign_flip").poison_update(upload, ctx()).tolist() == [-4.0, -2.0, 5.5]
    assert get_attack("same_value").poison_update(upload, ctx()).tolist() == [100.0] * 3


def test_gaussian_noise_replaces_the_update():
    big = torch.zeros(20_000)
    c = AttackContext(big, torch.Generator().manual_seed(0))
    out = get_attack("gaussian", std=0.5).poison_update(big + 7, c)
    assert out.mean().abs() < 0.02 and out.std().item() == pytest.approx(0.5, rel=0.03)


def test_label_flip():
    data = TensorData(torch.zeros(4, 1), torch.tensor([0, 1, 2, 9]), num_classes=10)
    g = torch.Generator()
    assert get_attack("label_flip").poison_data(data, g).y.tolist() == [9, 8, 7, 0]
    assert get_attack("label_flip", mapping={1: 7}).poison_data(data, g).y.tolist() == [0, 7, 2, 9]
    with pytest.raises(ValueError, match="outside 0..9"):
        get_attack("label_flip", mapping={1: 10}).poison_data(data, g)


def test_backdoor_poisons_a_fraction_with_the_trigger():
    x = torch.zeros(10, 1, 28, 28)
    x[0, 0, 20, 20] = 3.0
    data = TensorData(x, torch.arange(10), num_classes=10)
    attack = get_attack("backdoor", poison_fraction=0.3)
    out = attack.poison_data(data, torch.Generator().manual_seed(0))
    mask = trigger_mask(28, 28)
    triggered = (out.x[:, 0][:, mask] == 3.0).all(1)
    assert int(triggered.sum()) == 3
    assert (out.y[triggered] == 2).all() and torch.equal(out.y[~triggered], data.y[~triggered])
    cfg = attack.training_config(LocalTrainingConfig())
    assert (cfg.lr, cfg.epochs) == (0.1, 10)
    assert int(mask.sum()) == 8 and add_trigger(x, 5.0)[0, 0, 20, 20] == 3.0


class _Constant(nn.Module):
    def __init__(self, label):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))
        self.label = label

    def forward(self, x):
        return self.bias + 10 * nn.functional.one_hot(torch.full((len(x),), self.label), 10).float()


def test_attack_success_rate():
    test = TensorData(torch.zeros(5, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4]), num_classes=10)
    assert attack_success_rate(_Constant(2), test) == 1.0
    assert attack_success_rate(_Constant(0), test) == 0.0


class _Table(nn.Module):
    """Predicts a fixed class per input: the input's first value."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return self.bias + 10 * nn.functional.one_hot(x.flatten(1)[:, 0].long(), 10).float()


def test_each_attack_reports_its_own_success_or_none():
    """A targeted flip's success is the share of its source-class test images classified
    as their targets; an untargeted flip, and an attack whose only goal is a lower
    accuracy, report none; the backdoor reports its triggered images' rate."""
    y = torch.tensor([7, 7, 7, 7, 3, 3, 0, 1])
    predicted = torch.tensor([1, 1, 7, 2, 5, 3, 1, 1])  # two of four 7s → 1; one of two 3s → 5
    test = TensorData(predicted.float()[:, None], y, num_classes=10)
    assert get_attack("label_flip", mapping={7: 1}).success_rate(_Table(), test) == 0.5
    assert get_attack("label_flip", mapping={7: 1, 3: 5}).success_rate(_Table(), test) == 3 / 6
    assert get_attack("label_flip", mapping={"7": 1}).success_rate(_Table(), test) == 0.5  # keys as JSON gives them
    assert get_attack("label_flip", mapping={4: 1}).success_rate(_Table(), test) is None  # no source image
    assert get_attack("label_flip").success_rate(_Table(), test) is None
    assert get_attack("sign_flip").success_rate(_Table(), test) is None
    images = TensorData(torch.zeros(5, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4]), num_classes=10)
    assert get_attack("backdoor", target=2).success_rate(_Constant(2), images) == 1.0
    assert get_attack("backdoor", target=3).success_rate(_Constant(2), images) == 0.0


def test_tuning_and_scaling_norms():
    prev = torch.tensor([1.0, -2.0, 0.0])  # ‖w^{r-1} − w^{r-2}‖ = 0.5
    upload = REF + torch.tensor([3.0, 4.0, 0.0])  # ‖Δ‖ = 5
    fixed = get_attack("tuning_scaling", gamma=1000).poison_update(upload, ctx(prev))
    assert torch.allclose(fixed - REF, torch.tensor([3000.0, 4000.0, 0.0]))
    bound = get_attack("tuning_scaling", scaling="bound", norm_bound=2.0, margin=0.01)
    assert (bound.poison_update(upload, ctx(prev)) - REF).norm().item() == pytest.approx(1.98)
    hist = get_attack("tuning_scaling", scaling="history").poison_update(upload, ctx(prev))
    # min(a1·0.5, a2 + 0.5) with a1 ∈ [10, 11], a2 ∈ [1, 1.1] → a2 + 0.5 ∈ [1.5, 1.6]
    assert 1.5 <= (hist - REF).norm().item() <= 1.6
    attack = get_attack("tuning_scaling")
    assert torch.equal(attack.start_vector(ctx(prev)), prev) and torch.equal(attack.start_vector(ctx()), REF)
    cfg = attack.training_config(LocalTrainingConfig(lr=0.01))
    assert cfg.maximize and cfg.lr == pytest.approx(0.001)


def _tiny_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=g)
    return TensorData(x, torch.randint(0, 10, (64,), generator=g), num_classes=10)


def test_local_upload_runs_the_hooks_around_training():
    torch.manual_seed(0)
    model = create_model("bmfl_cnn")
    data = _tiny_task()
    ref = flatten(model.state_dict())
    cfg = LocalTrainingConfig(epochs=3, dp=False, sampling="fixed", lr=0.05)
    c = AttackContext(ref, torch.Generator().manual_seed(1))
    honest = local_upload(model, data, cfg, c)
    ascent = local_upload(model, data, cfg, c, get_attack("tuning_scaling", gamma=1.0, lr_divisor=1.0))
    loss = lambda v: evaluate(_load(model, v), data).loss
    assert loss(honest) < loss(ref) < loss(ascent)
    flipped = local_upload(model, data, cfg, c, get_attack("sign_flip"))
    assert flipped.shape == ref.shape and not torch.equal(flipped, honest)


def _load(model, vector):
    from bmfl.params import load_vector

    return load_vector(model, vector)


@register_attack("test_zero_update")
class _ZeroUpdate(Attack):
    """A user-defined attack: registered without touching the core."""

    def poison_update(self, upload, context):
        return context.reference.clone()


def test_extension_point():
    attack = get_attack("test_zero_update")
    assert torch.equal(attack.poison_update(torch.ones(3), ctx()), REF)
    with pytest.raises(ValueError, match="already registered"):
        register_attack("sign_flip")(_ZeroUpdate)
