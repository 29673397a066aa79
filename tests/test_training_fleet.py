"""Vectorised fleet training (bmfl.training.fleet) against sequential train_local /
local_upload under the same seeds: same random streams consumed, same models to float
tolerance, same accounting; fallback for models that cannot be stacked."""

import copy

import pytest
import torch
from torch import nn

from bmfl.attacks import AttackContext, get_attack, local_upload
from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.privacy import PrivacyAccountant
from bmfl.training import LocalTrainingConfig, train_local
from bmfl.training.fleet import can_vectorise, fleet_uploads, train_fleet

SIZES = [40, 5, 70, 23]
TOL = 1e-5


def _images(n: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), 10)


def _gens(seed: int = 100) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(len(SIZES))]


@pytest.fixture(scope="module")
def datasets() -> list[TensorData]:
    return [_images(n, i) for i, n in enumerate(SIZES)]


def _sequential(model, datasets, config, gens):
    accs = [PrivacyAccountant(1e-5) for _ in datasets]
    results = [train_local(copy.deepcopy(model), d, config, g, a) for d, g, a in zip(datasets, gens, accs)]
    return results, accs


CONFIGS = {
    "dp_poisson": LocalTrainingConfig(epochs=2, batch_size=16),
    "dp_fixed": LocalTrainingConfig(epochs=2, batch_size=16, sampling="fixed"),
    "non_private": LocalTrainingConfig(epochs=2, batch_size=16, dp=False),
    "ascent_capped": LocalTrainingConfig(epochs=3, batch_size=16, maximize=True, max_steps=4),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_stacked_training_equals_sequential_train_local(datasets, name):
    config = CONFIGS[name]
    torch.manual_seed(0)
    model = create_model("bmfl_cnn")
    seq_gens, fleet_gens = _gens(), _gens()
    expected, seq_accs = _sequential(model, datasets, config, seq_gens)
    accs = [PrivacyAccountant(1e-5) for _ in datasets]
    before = flatten(model.state_dict())
    got = train_fleet(model, datasets, config, fleet_gens, accs, samples_per_step=10_000)
    assert torch.equal(flatten(model.state_dict()), before)  # the template is not trained
    for e, g, a, b, sg, fg in zip(expected, got, seq_accs, accs, seq_gens, fleet_gens):
        assert torch.equal(sg.get_state(), fg.get_state())  # the same random draws, in the same order
        assert g.steps == e.steps and a.steps == b.steps
        assert g.epsilon == e.epsilon
        assert torch.allclose(flatten(g.state), flatten(e.state), atol=TOL, rtol=0)
        assert g.mean_loss == pytest.approx(e.mean_loss, rel=1e-4)
        assert len(g.losses) == len(e.losses)


def test_another_seed_gives_another_model(datasets):
    config = CONFIGS["dp_poisson"]
    model = create_model("bmfl_cnn")
    expected, _ = _sequential(model, datasets, config, _gens(100))
    got = train_fleet(model, datasets, config, _gens(200), samples_per_step=10_000)
    assert all((flatten(g.state) - flatten(e.state)).abs().max() > 100 * TOL for e, g in zip(expected, got))


def test_chunking_and_start_vectors_do_not_change_results(datasets):
    config = CONFIGS["dp_poisson"]
    model = create_model("mlp", hidden=(32,))
    starts = torch.stack([flatten(create_model("mlp", hidden=(32,)).state_dict()) for _ in datasets])
    alone = train_fleet(model, datasets, config, _gens(), starts=starts, samples_per_step=1, record_losses=False)
    stacked = train_fleet(model, datasets, config, _gens(), starts=starts, samples_per_step=10_000, record_losses=False)
    seq = []
    for d, g, s in zip(datasets, _gens(), starts):
        m = copy.deepcopy(model)
        m.load_state_dict(create_model("mlp", hidden=(32,)).state_dict())
        nn.utils.vector_to_parameters(s, m.parameters())
        seq.append(train_local(m, d, config, g))
    for a, b, c in zip(alone, stacked, seq):
        assert torch.allclose(flatten(a.state), flatten(b.state), atol=TOL, rtol=0)
        assert torch.allclose(flatten(a.state), flatten(c.state), atol=TOL, rtol=0)
        assert a.steps == b.steps == c.steps
    assert all(r.losses == [] for r in alone)


class _WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 10)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x.flatten(1)))))


def test_models_that_cannot_be_stacked_are_trained_one_by_one(datasets):
    assert can_vectorise(create_model("bmfl_cnn"), datasets[0])
    assert can_vectorise(create_model("mlp"), datasets[0])
    model = _WithBatchNorm().eval()  # frozen statistics: buffers, which train_fleet does not stack
    assert not can_vectorise(model, datasets[0])
    config = LocalTrainingConfig(epochs=1, batch_size=16, sampling="fixed", dp=False)
    expected, _ = _sequential(model, datasets, config, _gens())
    got = train_fleet(model, datasets, config, _gens())
    for e, g in zip(expected, got):
        assert all(torch.equal(e.state[k], g.state[k]) for k in e.state)


def test_recurrent_models_fall_back():
    g = torch.Generator().manual_seed(0)
    data = [TensorData(torch.randn(30, 6, generator=g), torch.randn(30, generator=g)) for _ in range(2)]
    model = create_model("lstm_forecaster", hidden_size=4, num_layers=1)
    assert not can_vectorise(model, data[0])
    config = LocalTrainingConfig(epochs=1, batch_size=10)
    expected, _ = _sequential(model, data, config, [torch.Generator().manual_seed(i) for i in range(2)])
    got = train_fleet(model, data, config, [torch.Generator().manual_seed(i) for i in range(2)])
    for e, r in zip(expected, got):
        assert torch.equal(flatten(e.state), flatten(r.state))


def test_a_generator_shared_between_vehicles_is_refused(datasets):
    shared = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="own generator"):
        train_fleet(create_model("bmfl_cnn"), datasets[:2], CONFIGS["dp_poisson"], [shared, shared])


def test_fleet_uploads_equal_local_upload_with_attacks(datasets):
    config = LocalTrainingConfig(epochs=1, batch_size=16)
    model = create_model("bmfl_cnn")
    reference = flatten(model.state_dict())
    attacks = [None, get_attack("sign_flip"), get_attack("label_flip"), get_attack("same_value")]
    tuned = get_attack("tuning_scaling")
    data = [*datasets, datasets[0]]
    attacks.append(tuned)

    def contexts():
        return [AttackContext(reference, torch.Generator().manual_seed(7 + i), None, 1) for i in range(len(data))]

    seq_accs = [PrivacyAccountant(1e-5) for _ in data]
    expected = [
        local_upload(copy.deepcopy(model), d, config, c, a, acc) for d, c, a, acc in zip(data, contexts(), attacks, seq_accs)
    ]
    accs = [PrivacyAccountant(1e-5) for _ in data]
    got = fleet_uploads(model, data, config, contexts(), attacks, accs)
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-4 * max(1.0, float(e.abs().max())), rtol=0)
    assert [a.steps for a in accs] == [a.steps for a in seq_accs]
