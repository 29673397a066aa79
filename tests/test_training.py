import pytest
import torch
import torch.nn.functional as F

from bmfl.data import TensorData, load_dataset
from bmfl.models import create_model
from bmfl.privacy import PrivacyAccountant, PrivacyEngine, PrivacyRefused
from bmfl.training import LocalTrainingConfig, evaluate, round_plan, train_fleet, train_local
from bmfl.training.local import _clipped_sum
from torch.func import functional_call, grad, vmap
from tooling import import_tool


def _per_sample_naive(model, x, y):
    """One backward pass per sample: the reference for torch.func's vmap(grad)."""
    grads = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        grads.append({k: p.grad.detach().clone() for k, p in model.named_parameters()})
    return grads


def _clip_naive(grads, clip):
    out = {k: torch.zeros_like(v) for k, v in grads[0].items()}
    for g in grads:
        norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
        for k, v in g.items():
            out[k] += v / max(1.0, float(norm) / clip)
    return out


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))


def _vmap_per_sample(model, x, y):
    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0), reduction="sum")

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


@pytest.mark.parametrize("clip", [0.05, 1.0, 1e6])
def test_clipped_per_sample_sum_matches_naive_loop(batch, clip):
    torch.manual_seed(1)
    model = create_model("bmfl_cnn")
    x, y = batch
    ours = _clipped_sum(_vmap_per_sample(model, x, y), clip)
    ref = _clip_naive(_per_sample_naive(model, x, y), clip)
    for k in ref:
        assert torch.allclose(ours[k], ref[k], atol=1e-6, rtol=1e-5), k


def test_clipped_gradients_match_opacus(batch):
    opacus = import_tool("opacus")
    from opacus.grad_sample import GradSampleModule

    torch.manual_seed(2)
    model = create_model("bmfl_cnn")
    x, y = batch
    ours = _clipped_sum(_vmap_per_sample(model, x, y), 1.0)
    gsm = GradSampleModule(create_model("bmfl_cnn"))
    gsm._module.load_state_dict(model.state_dict())
    F.cross_entropy(gsm(x), y, reduction="sum").backward()
    samples = {k: p.grad_sample for k, p in gsm._module.named_parameters()}
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in samples.values()))
    factor = (1.0 / (norms + 1e-6)).clamp(max=1.0)  # Opacus's flat clipping rule
    for k, g in samples.items():
        assert torch.allclose(ours[k], torch.einsum("i,i...->...", factor, g), atol=1e-5), k
    assert opacus.__version__


def _tiny_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), 10)


def test_same_seed_same_result_and_noise_changes_it():
    data = _tiny_data()
    cfg = LocalTrainingConfig(epochs=1, batch_size=16)
    states = []
    for seed in (7, 7, 8):
        torch.manual_seed(0)
        model = create_model("bmfl_cnn")
        states.append(train_local(model, data, cfg, torch.Generator().manual_seed(seed)).state)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_non_private_path_is_momentum_sgd_on_the_batch_gradient():
    """σ = 0, no clipping, fixed full batch: two steps of w ← w − η(g + βv)."""
    data = _tiny_data(32)
    cfg = LocalTrainingConfig(epochs=2, batch_size=32, dp=False, sampling="fixed", lr=0.1, momentum=0.5)
    torch.manual_seed(0)
    model = create_model("mlp", hidden=(8,))
    ref = create_model("mlp", hidden=(8,))
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.5)
    gen = torch.Generator().manual_seed(0)
    train_local(model, data, cfg, gen)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        perm = torch.randperm(32, generator=gen)
        opt.zero_grad()
        F.cross_entropy(ref(data.x[perm]), data.y[perm]).backward()
        opt.step()
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_dp_training_reports_epsilon_and_counts_steps():
    data = _tiny_data(128)
    engine = PrivacyEngine(1e-5)
    cfg = LocalTrainingConfig(epochs=3, batch_size=32)
    (result,) = train_fleet(create_model("bmfl_cnn"), [data], cfg, [torch.Generator().manual_seed(0)], [engine])
    assert result.steps == 12 and engine.steps == 12
    plan = round_plan(cfg, len(data))
    assert (plan.steps, plan.sampling_rate, plan.noise_multiplier) == (12, 0.25, 2.0)
    assert result.sampling_rate == 0.25
    ref = PrivacyAccountant(1e-5)
    ref.step(0.25, 2.0, 12)
    assert result.epsilon == pytest.approx(ref.epsilon())
    alone = train_local(create_model("bmfl_cnn"), data, cfg, torch.Generator().manual_seed(0))
    assert alone.steps == 12 and alone.epsilon is None  # train_local accounts nothing
    with pytest.raises(PrivacyRefused, match="fixed_batches_with_dp"):  # accounted DP needs Poisson batches
        train_fleet(create_model("bmfl_cnn"), [data], LocalTrainingConfig(sampling="fixed"), [torch.Generator()], [PrivacyEngine()])


def test_the_plan_counts_the_steps_train_local_takes():
    data = _tiny_data(50)
    for cfg in (LocalTrainingConfig(epochs=2, batch_size=16), LocalTrainingConfig(epochs=3, batch_size=16, max_steps=5),
                LocalTrainingConfig(epochs=1, batch_size=16, sampling="fixed", dp=False)):  # fmt: skip
        plan = round_plan(cfg, len(data))
        assert plan.steps == train_local(create_model("mlp", hidden=(8,)), data, cfg, torch.Generator()).steps
        assert plan.private == cfg.dp and plan.sampling_rate == 16 / 50
    assert [round_plan(c, 50).steps for c in (LocalTrainingConfig(epochs=2, batch_size=16),
                                               LocalTrainingConfig(epochs=3, batch_size=16, max_steps=5))] == [8, 5]


def test_short_training_learns_mnist_5k():
    torch.manual_seed(0)
    train, test = load_dataset("mnist_5k")
    model = create_model("bmfl_cnn")
    before = evaluate(model, test).accuracy
    cfg = LocalTrainingConfig(epochs=2, dp=False, lr=0.05)
    train_local(model, train, cfg, torch.Generator().manual_seed(0))
    after = evaluate(model, test).accuracy
    assert before < 0.2 and after > 0.85


def test_lstm_forecaster_trains_with_dp_on_synthetic_traffic():
    torch.manual_seed(0)
    train, test = load_dataset("traffic_synthetic", num_cells=4, days=21)
    model = create_model("lstm_forecaster", hidden_size=16, num_layers=1)
    before = evaluate(model, test).loss
    cfg = LocalTrainingConfig(epochs=2, batch_size=64, lr=0.05, noise_multiplier=0.5)
    train_local(model, train, cfg, torch.Generator().manual_seed(0))
    after = evaluate(model, test)
    assert after.loss < 0.5 * before and after.mae is not None
