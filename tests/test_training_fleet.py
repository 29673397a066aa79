"""Vectorised fleet training (bmfl.training.fleet) against sequential train_local and
the attack hooks around it under the same seeds: same random streams consumed, same
models to float tolerance, the same steps accounted once in each vehicle's privacy
engine; fallback for models that cannot be stacked; a fleet of one is the same vehicle
as inside a larger fleet."""

import copy
import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from bmfl.attacks import Attack, AttackContext, get_attack, local_upload
from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.params import flatten, load_vector
from bmfl.privacy import BudgetExceeded, PrivacyAccountant, PrivacyEngine
from bmfl.training import LocalTrainingConfig, round_plan, train_local
from bmfl.training.fleet import _remembered, can_ghost_clip, can_vectorise, fleet_uploads, plan_upload, train_fleet

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
    """train_local one by one, and the accountant each vehicle's round should leave."""
    results = [train_local(copy.deepcopy(model), d, config, g) for d, g in zip(datasets, gens)]
    accs = [PrivacyAccountant(1e-5) for _ in datasets]
    for a, r in zip(accs, results):
        if config.dp and config.noise_multiplier > 0:
            a.step(r.sampling_rate, config.noise_multiplier, r.steps)
            r.epsilon = a.epsilon()
    return results, accs


CONFIGS = {
    "dp_poisson": LocalTrainingConfig(epochs=2, batch_size=16),
    "fixed_non_private": LocalTrainingConfig(epochs=2, batch_size=16, sampling="fixed", dp=False),  # DP needs Poisson
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
    engines = [PrivacyEngine(1e-5) for _ in datasets]
    before = flatten(model.state_dict())
    got = train_fleet(model, datasets, config, fleet_gens, engines, samples_per_step=10_000)
    assert torch.equal(flatten(model.state_dict()), before)  # the template is not trained
    for d, e, g, a, b, sg, fg in zip(datasets, expected, got, seq_accs, engines, seq_gens, fleet_gens):
        assert torch.equal(sg.get_state(), fg.get_state())  # the same random draws, in the same order
        assert g.steps == e.steps == round_plan(config, len(d)).steps
        assert a.steps == b.steps and b.unbounded == (not config.dp)
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


def test_probes_answer_once_per_architecture_and_input_shape(datasets):
    """A probe runs once per model architecture, input shape and options (vehicles train
    every round), and a model or input that differs in any of them is probed afresh."""
    calls = []

    @_remembered
    def probe(model, data, *rest):
        calls.append((type(model).__name__, tuple(data.x.shape[1:]), rest))
        return isinstance(model, _WithBatchNorm)

    cnn, other_weights = create_model("bmfl_cnn"), create_model("bmfl_cnn")
    assert not torch.equal(flatten(cnn.state_dict()), flatten(other_weights.state_dict()))
    assert not probe(cnn, datasets[0]) and not probe(other_weights, datasets[1]) and not probe(cnn, datasets[0], 1.0)
    assert len(calls) == 2  # the same architecture, other weights and data: remembered; other options: probed
    assert probe(_WithBatchNorm(), datasets[0]) and not probe(create_model("mlp"), datasets[0])
    flat = TensorData(datasets[0].x.flatten(1), datasets[0].y)
    assert not probe(create_model("mlp"), flat) and len(calls) == 5
    assert can_ghost_clip(cnn, datasets[0], LocalTrainingConfig()) and not can_vectorise(_WithBatchNorm(), datasets[0])


def test_load_transforms_imports_what_the_first_round_would():
    """A fleet calls it at set-up, so its first round does not import ``torch._dynamo``."""
    code = (
        "import sys; from bmfl.training.fleet import load_transforms; before = 'torch._dynamo' in sys.modules; "
        "load_transforms(); print(before, 'torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


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


def _hooks_around_train_local(model, data, config, context, attack, accountant):
    """The reference: one vehicle's round as the attack's four hooks around sequential
    ``train_local`` (what ``local_upload`` was), its steps stepped by hand."""
    attack = attack or Attack()
    if not attack.trains:
        return attack.poison_update(context.reference.clone(), context)
    local_data = attack.poison_data(data, context.generator)
    local_config = attack.training_config(config)
    load_vector(model, attack.start_vector(context))
    result = train_local(model, local_data, local_config, context.generator)
    accountant.step(result.sampling_rate, local_config.noise_multiplier, result.steps)
    return attack.poison_update(flatten(result.state), context)


ATTACKS = ["sign_flip", "label_flip", "same_value", "tuning_scaling"]


def test_fleet_uploads_equal_the_hooks_around_train_local(datasets):
    config = LocalTrainingConfig(epochs=1, batch_size=16)
    model = create_model("bmfl_cnn")
    reference = flatten(model.state_dict())
    attacks = [None, *(get_attack(name) for name in ATTACKS)]
    data = [*datasets, datasets[0]]

    def contexts():
        return [AttackContext(reference, torch.Generator().manual_seed(7 + i), None, 1) for i in range(len(data))]

    seq_accs = [PrivacyAccountant(1e-5) for _ in data]
    expected = [
        _hooks_around_train_local(copy.deepcopy(model), d, config, c, a, acc)
        for d, c, a, acc in zip(data, contexts(), attacks, seq_accs)
    ]
    engines = [PrivacyEngine(1e-5) for _ in data]
    got = fleet_uploads(model, data, config, contexts(), attacks, engines)
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-4 * max(1.0, float(e.abs().max())), rtol=0)
    assert [e.steps for e in engines] == [a.steps for a in seq_accs]
    assert [e.steps for e in engines] == [plan_upload(d, config, a).steps for d, a in zip(data, attacks)]
    assert engines[3].steps == 0  # same_value does not train


# ------------------------------------------------------------------ one path for one vehicle and for many


def _context(reference: torch.Tensor, seed: int) -> AttackContext:
    return AttackContext(reference, torch.Generator().manual_seed(seed), None, 1)


def test_a_fleet_of_one_is_the_same_vehicle_as_inside_a_larger_fleet(datasets):
    """Bit for bit when the vehicle trains in its own stacked step — the default on CPU
    for the paper's B = 64 (each vehicle fills the 64-sample budget) — and, stacked with
    others, from the same random draws to float summation order (``vmap`` over more
    vehicles changes the kernels' summation, by ~1e-8 here)."""
    torch.manual_seed(0)
    model = create_model("bmfl_cnn")
    reference = flatten(model.state_dict())
    attacks = [None, get_attack("sign_flip"), None, get_attack("label_flip")]
    big = [_images(n, 10 + i) for i, n in enumerate([64, 100, 70, 130])]  # n ≥ B: expected batch 64
    for config, fleet, samples_per_step, exact in (
        (LocalTrainingConfig(epochs=1, batch_size=64), big, None, True),
        (LocalTrainingConfig(epochs=2, batch_size=16), datasets, 10_000, False),
    ):
        for v in range(len(fleet)):
            alone_ctx, alone_engine = _context(reference, 100 + v), PrivacyEngine()
            (alone,) = fleet_uploads(model, [fleet[v]], config, [alone_ctx], [attacks[v]], [alone_engine],
                                     samples_per_step=samples_per_step)  # fmt: skip
            contexts = [_context(reference, 100 + k) for k in range(len(fleet))]
            engines = [PrivacyEngine() for _ in fleet]
            inside = fleet_uploads(model, fleet, config, contexts, attacks, engines, samples_per_step=samples_per_step)[v]
            assert torch.equal(alone_ctx.generator.get_state(), contexts[v].generator.get_state())
            assert alone_engine.steps == engines[v].steps > 0 and alone_engine.epsilon() == engines[v].epsilon()
            if exact:
                assert torch.equal(alone, inside), v
            else:
                assert torch.allclose(alone, inside, atol=1e-6, rtol=0), v
    # and local_upload is that fleet of one, nothing else
    config, engine = LocalTrainingConfig(epochs=1, batch_size=16), PrivacyEngine()
    one = local_upload(model, datasets[0], config, _context(reference, 100), None, engine)
    again = fleet_uploads(model, [datasets[0]], config, [_context(reference, 100)])
    assert torch.equal(one, again[0]) and engine.steps == round_plan(config, len(datasets[0])).steps == 3


def test_a_round_past_the_budget_is_refused_before_anything_is_trained_or_spent(datasets):
    config = LocalTrainingConfig(epochs=1, batch_size=16)
    model = create_model("bmfl_cnn")
    reference = flatten(model.state_dict())
    plan = plan_upload(datasets[1], config)
    one_round = PrivacyEngine().epsilon(plan=plan)
    two_rounds = PrivacyEngine().epsilon(plan=dataclasses.replace(plan, steps=2 * plan.steps))
    generous, tight = PrivacyEngine(budget=10 * two_rounds), PrivacyEngine(budget=(one_round + two_rounds) / 2)
    engines = [generous, tight]
    pair = [datasets[0], datasets[1]]
    attacks = [get_attack("data_noise"), None]  # data_noise draws from its generator before training

    def round_(contexts):
        return fleet_uploads(model, pair, config, contexts, attacks, engines)

    contexts = [_context(reference, 1), _context(reference, 2)]
    round_(contexts)  # round 1 fits both budgets
    assert tight.steps == plan.steps and tight.epsilon() == pytest.approx(one_round)
    spent = [e.steps for e in engines]
    eps = [e.epsilon() for e in engines]
    states = [c.generator.get_state() for c in contexts]
    with pytest.raises(BudgetExceeded, match="budget"):
        round_(contexts)  # round 2 would take ``tight`` past its budget
    assert [e.steps for e in engines] == spent and [e.epsilon() for e in engines] == eps  # nothing spent, by anyone
    assert all(torch.equal(c.generator.get_state(), s) for c, s in zip(contexts, states))  # nothing drawn or trained
    with pytest.raises(BudgetExceeded):
        tight.check(plan)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    with pytest.raises(BudgetExceeded):  # the lower-level path checks first too
        train_fleet(model, [datasets[1]], config, [gen], [tight])
    assert torch.equal(gen.get_state(), state) and tight.steps == plan.steps


def test_a_round_without_noise_needs_an_unlimited_budget():
    plan = round_plan(LocalTrainingConfig(dp=False), 100)
    assert not plan.private and PrivacyEngine().epsilon(plan=plan) == float("inf")
    with pytest.raises(BudgetExceeded):
        PrivacyEngine(budget=1e9).check(plan)
    engine = PrivacyEngine()
    engine.check(plan)
    engine.record(plan)
    assert engine.steps == 0 and engine.epsilon() == float("inf")  # ε = ∞ from now on
    data = TensorData(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long), 2)
    nothing = plan_upload(data, LocalTrainingConfig(), get_attack("same_value"))
    assert nothing.steps == 0 and PrivacyEngine(budget=1e-9).check(nothing) == 0.0


@pytest.mark.parametrize("model_name", ["bmfl_cnn", "batch_norm"])
def test_each_trained_round_is_accounted_exactly_once(datasets, model_name):
    """Alone, inside a fleet, stacked or in the one-by-one fallback: a round's steps are
    recorded once, so ε after r rounds is the accountant's ε of r rounds' steps."""
    config = LocalTrainingConfig(epochs=2, batch_size=16)
    model = create_model("bmfl_cnn") if model_name == "bmfl_cnn" else _WithBatchNorm().eval()
    reference = flatten(model.state_dict())
    plan = plan_upload(datasets[0], config)
    alone, inside = PrivacyEngine(), PrivacyEngine()
    others = [PrivacyEngine() for _ in datasets[1:]]
    for r in (1, 2):
        fleet_uploads(model, [datasets[0]], config, [_context(reference, r)], None, [alone])
        fleet_uploads(model, datasets, config, [_context(reference, 10 * r + k) for k in range(len(datasets))],
                      None, [inside, *others])  # fmt: skip
        expected = PrivacyAccountant(1e-5)
        expected.step(plan.sampling_rate, plan.noise_multiplier, r * plan.steps)
        assert alone.steps == inside.steps == r * plan.steps
        assert alone.epsilon() == inside.epsilon() == pytest.approx(expected.epsilon(), rel=1e-12)
    assert [e.steps for e in others] == [2 * plan_upload(d, config).steps for d in datasets[1:]]


def test_an_engine_shared_between_vehicles_is_refused(datasets):
    shared = PrivacyEngine()
    with pytest.raises(ValueError, match="own privacy engine"):
        train_fleet(create_model("bmfl_cnn"), datasets[:2], CONFIGS["dp_poisson"], _gens()[:2], [shared, shared])
