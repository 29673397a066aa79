"""Core pieces added for the simulator and the reproduction grid: the random-pick rule
(FBFL), input-noise data poisoning, attacks that skip training, the accountant in
``local_upload``, capped local steps, and the regression consensus score."""

import pytest
import torch

from bmfl.aggregation import get_aggregator
from bmfl.attacks import AttackContext, get_attack, local_upload
from bmfl.consensus import consensus_accuracies, consensus_score, score_evaluator
from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.privacy import PrivacyAccountant
from bmfl.training import LocalTrainingConfig, train_local
from bmfl.training.evaluate import Evaluation


def test_random_pick_returns_one_upload_and_is_seeded():
    ups = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    picks = []
    rule = get_aggregator("random_pick", seed=3)
    for _ in range(20):
        res = rule(ups, None, torch.zeros(3))
        (chosen,) = torch.nonzero(res.weights).flatten().tolist()
        assert res.weights.sum() == 1.0 and torch.equal(res.aggregate, ups[chosen])
        picks.append(chosen)
    again = get_aggregator("random_pick", seed=3)
    assert picks == [int(torch.nonzero(again(ups, None, torch.zeros(3)).weights)[0]) for _ in range(20)]
    assert len(set(picks)) > 1  # it does draw anew each call


def test_data_noise_perturbs_inputs_only():
    x = torch.zeros(2000, 1, 2, 2)
    data = TensorData(x, torch.arange(2000) % 10, num_classes=10)
    out = get_attack("data_noise", std=2.0, fraction=0.5).poison_data(data, torch.Generator().manual_seed(0))
    assert torch.equal(out.y, data.y) and torch.equal(data.x, x)  # labels kept, input not modified in place
    changed = (out.x.flatten(1) != 0).any(1)
    assert int(changed.sum()) == 1000
    assert out.x[changed].std().item() == pytest.approx(2.0, rel=0.05)


def _tiny():
    gen = torch.Generator().manual_seed(0)
    return TensorData(torch.randn(40, 1, 28, 28, generator=gen), torch.randint(0, 10, (40,), generator=gen), 10)


def test_attack_without_training_leaves_the_model_and_accountant_alone():
    model = create_model("bmfl_cnn")
    before = flatten(model.state_dict())
    ref = torch.zeros_like(before)
    acc = PrivacyAccountant(1e-5)
    ctx = AttackContext(ref, torch.Generator().manual_seed(0))
    up = local_upload(model, _tiny(), LocalTrainingConfig(epochs=1), ctx, get_attack("same_value"), acc)
    assert torch.equal(up, torch.full_like(ref, 100.0))
    assert torch.equal(flatten(model.state_dict()), before) and acc.steps == 0


def test_local_upload_records_dp_steps_in_the_accountant():
    model = create_model("bmfl_cnn")
    acc = PrivacyAccountant(1e-5)
    ctx = AttackContext(flatten(model.state_dict()), torch.Generator().manual_seed(0))
    local_upload(model, _tiny(), LocalTrainingConfig(epochs=2, batch_size=16), ctx, None, acc)
    assert acc.steps == 2 * 3 and acc.epsilon() > 0


def test_max_steps_caps_local_steps_but_not_the_backdoor_attacker():
    data = _tiny()
    capped = LocalTrainingConfig(epochs=3, batch_size=8, max_steps=4, dp=False)
    assert train_local(create_model("bmfl_cnn"), data, capped, torch.Generator()).steps == 4
    uncapped = LocalTrainingConfig(epochs=3, batch_size=8, dp=False)
    assert train_local(create_model("bmfl_cnn"), data, uncapped, torch.Generator()).steps == 15
    backdoor = get_attack("backdoor", epochs=2).training_config(capped)
    assert backdoor.max_steps is None and backdoor.epochs == 2
    private = LocalTrainingConfig(max_steps=4)
    assert get_attack("backdoor").training_config(private).dp is True
    assert get_attack("backdoor", dp=False).training_config(private).dp is False
    with pytest.raises(ValueError, match="max_steps"):
        LocalTrainingConfig(max_steps=0)


def test_consensus_score_for_regression_ranks_like_minus_mse():
    assert consensus_score(Evaluation(loss=0.3, accuracy=0.9)) == 0.9
    assert consensus_score(Evaluation(loss=1.0, mae=0.5)) == 0.5
    assert consensus_score(Evaluation(loss=0.1, mae=0.1)) > consensus_score(Evaluation(loss=0.2, mae=0.1))
    assert consensus_score(Evaluation(loss=float("nan"), mae=0.1)) == 0.0 == consensus_score(Evaluation(loss=float("inf")))
    model = create_model("lstm_forecaster", hidden_size=4, num_layers=1)
    data = TensorData(torch.randn(30, 6), torch.randn(30))
    good = flatten(model.state_dict())
    bad = good + 5.0
    scores = consensus_accuracies({0: good, 1: bad}, score_evaluator(model, data))
    assert 0 < scores[1] < scores[0] <= 1_000_000
