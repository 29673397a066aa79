"""Multi-task models (FedAuxHMTL): heads and outputs, the weighted loss against hand
computations, DP clipping over the whole multi-task loss, stacked fleet training equal
to training alone, main-head evaluation by every evaluator; the flow datasets."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bmfl.data import TensorData, load_dataset
from bmfl.data.flows import APPS, load_packet_csv, synthetic_flows
from bmfl.filters import accuracy_evaluator, batched_accuracy_evaluator
from bmfl.models import count_parameters, create_model
from bmfl.params import flatten
from bmfl.rounds.consensus import task_scorer
from bmfl.training import LocalTrainingConfig, evaluate, train_fleet, train_local
from bmfl.training.fleet import can_vectorise


def _flows(n: int, seed: int, aux: bool = True) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 2, 32, generator=g), torch.randint(0, 5, (n,), generator=g)
    return TensorData(x, y, 5, None, torch.randn(n, 2, generator=g) if aux else None)


def test_heads_training_and_eval_outputs():
    model = create_model("mtl_cnn1d", aux_heads=[1, 3])
    x = torch.randn(4, 2, 32)
    assert model(x).shape == (4, 5 + 1 + 3)
    assert model.eval()(x).shape == (4, 5)
    base = create_model("cnn1d")
    # the auxiliary heads are 64·1+1 and 64·3+3 parameters on top of the same backbone
    assert count_parameters(model) - count_parameters(base) == 65 + 195


def test_uniform_and_fixed_losses_match_hand_computation():
    data = _flows(6, 0)
    out = torch.randn(6, 7)
    ce = F.cross_entropy(out[:, :5], data.y, reduction="sum")
    mse = [F.mse_loss(out[:, 5 + a], data.aux[:, a], reduction="sum") for a in range(2)]
    uniform = create_model("mtl_cnn1d", weighting="uniform")
    loss = uniform.task_loss()(out, uniform.training_targets(data))
    assert float(loss) == pytest.approx(float(ce + mse[0] + mse[1]), rel=1e-6)
    fixed = create_model("mtl_cnn1d", weighting="fixed", aux_weights=[0.5, 0.0])
    loss = fixed.task_loss()(out, fixed.training_targets(data))
    assert float(loss) == pytest.approx(float(ce + 0.5 * mse[0]), rel=1e-6)


def test_random_weights_are_redrawn_per_step_and_keyed_by_step():
    loss = create_model("mtl_cnn1d", weighting="random", weight_seed=3).task_loss()
    draws = []
    for step in (0, 1, 0):
        loss.begin_step(step)
        draws.append(loss.weights.clone())
    assert all(float(w.sum()) == pytest.approx(3.0) and bool((w > 0).all()) for w in draws)
    assert not torch.equal(draws[0], draws[1])
    assert torch.equal(draws[0], draws[2])


def test_missing_aux_targets_train_the_main_head_only():
    model = create_model("mtl_cnn1d", weighting="uniform")
    data, bare = _flows(5, 1), _flows(5, 1, aux=False)
    out = torch.randn(5, 7, requires_grad=True)
    loss = model.task_loss()(out, model.training_targets(bare))
    assert loss.item() == pytest.approx(F.cross_entropy(out[:, :5], data.y, reduction="sum").item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(out.grad).all() and float(out.grad[:, 5:].abs().sum()) == 0.0


def test_dp_clips_the_whole_multitask_gradient():
    """One sample, σ = 0, no momentum: the step is −η·ḡ with ‖ḡ‖ = C exactly when the
    gradient of the whole loss (backbone and all heads) is larger than C."""
    torch.manual_seed(0)
    model = create_model("mtl_cnn1d", weighting="uniform")
    data = _flows(1, 2)
    data = TensorData(data.x, data.y, 5, None, data.aux * 100.0)  # huge regression error
    before = flatten(model.state_dict())
    config = LocalTrainingConfig(epochs=1, batch_size=1, lr=1.0, momentum=0.0, clip=0.5, noise_multiplier=0.0, sampling="fixed")
    after = flatten(train_local(copy.deepcopy(model), data, config, torch.Generator().manual_seed(0)).state)
    assert float((after - before).norm()) == pytest.approx(0.5, rel=1e-4)
    heads = [k for k in model.state_dict() if k.startswith("aux.")]
    assert heads  # the step moved the auxiliary heads too
    moved = train_local(copy.deepcopy(model), data, config, torch.Generator().manual_seed(0)).state
    assert any(not torch.equal(moved[k], model.state_dict()[k]) for k in heads)


@pytest.mark.parametrize("dp", [True, False])
def test_stacked_fleet_equals_training_alone(dp):
    torch.manual_seed(1)
    model = create_model("mtl_cnn1d", weighting="random", weight_seed=7)
    datasets = [_flows(40, 3), _flows(17, 4), _flows(25, 5, aux=False)]
    assert can_vectorise(model, datasets[0])
    config = LocalTrainingConfig(epochs=2, batch_size=8, dp=dp)
    gens = lambda: [torch.Generator().manual_seed(50 + i) for i in range(3)]  # noqa: E731
    stacked = train_fleet(model, datasets, config, gens())
    alone = [train_local(copy.deepcopy(model), d, config, g) for d, g in zip(datasets, gens())]
    for s, a in zip(stacked, alone):
        assert s.steps == a.steps
        assert torch.allclose(flatten(s.state), flatten(a.state), atol=1e-5)


def test_evaluators_score_the_main_head():
    torch.manual_seed(2)
    model = create_model("mtl_cnn1d")
    test = _flows(64, 6)
    vectors = torch.stack([flatten(model.state_dict())] * 2)
    expected = evaluate(model, test).accuracy
    assert model.training  # evaluate restores the mode training relies on
    for evaluator in (accuracy_evaluator(model, test), batched_accuracy_evaluator(model, test), task_scorer(model, test)):
        assert evaluator(vectors).tolist() == pytest.approx([expected, expected])


def test_synthetic_flows_are_seeded_and_aux_targets_follow_the_class():
    a, b = synthetic_flows(500, seed=4), synthetic_flows(500, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.aux, b.aux) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, synthetic_flows(500, seed=5).x)
    assert a.x.shape == (500, 2, 32) and a.aux.shape == (500, 2) and a.num_classes == len(APPS)
    volume = [float(a.aux[a.y == c, 0].mean()) for c in range(5)]
    assert volume[APPS.index("video")] > volume[APPS.index("drive")] > volume[APPS.index("search")]
    train, test = load_dataset("flows_synthetic", num_flows=500, seed=4)
    assert len(train) + len(test) == 500 and abs(len(test) - 100) <= 3 and train.aux is not None
    assert train.subset([0, 1]).aux.shape == (2, 2)


def test_packet_csv_loader(tmp_path):
    path = tmp_path / "packets.csv"
    path.write_text(
        "label,flow_id,time,size,direction\n"
        "video,f1,0.0,1500,down\nvideo,f1,0.01,100,up\nvideo,f1,0.11,1200,1\n"
        "search,f2,5.0,300,0\nsearch,f2,5.5,600,down\n"
    )
    data, classes = load_packet_csv(path, length=4)
    assert classes == ("search", "video") and data.y.tolist() == [1, 0]
    assert data.x[0, 0].tolist() == pytest.approx([1.0, -100 / 1500, 0.8, 0.0])
    assert data.x[0, 1].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 0.0])  # (log10 gap + 3) / 3
    volume = [math.log(2801.0), math.log(901.0)]
    assert data.aux[:, 0].tolist() == pytest.approx([1.0, -1.0]) and volume[0] > volume[1]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("flow_id,time,size,label\nf,0,1,a\n", "missing columns"),
        ("flow_id,time,size,direction,label\nf,0,1,sideways,a\n", "direction"),
        ("flow_id,time,size,direction,label\nf,0,big,1,a\n", "numbers"),
        ("flow_id,time,size,direction,label\nf,0,1,1,a\nf,1,1,1,b\n", "two labels"),
        ("flow_id,time,size,direction,label\n", "no packets"),
    ],
)
def test_packet_csv_rejects_bad_input(tmp_path, text, reason):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason):
        load_packet_csv(path)


def test_robust_rules_see_the_multitask_vector_and_refuse_same_value_attackers():
    """The task's default defence (self-reliability + reweighting) on mtl_cnn1d: the
    filter scores the main head, the rule sees backbone and heads as one vector."""
    from rich.console import Console

    from bmfl.simulation import SimulationConfig, run_simulation

    config = SimulationConfig.model_validate({
        "name": "mtl-robust", "rounds": 1, "vehicles": 6, "edges": 3, "model": "mtl_cnn1d",
        "data": {"name": "flows_synthetic", "options": {"num_flows": 600}},
        "partition": {"kind": "iid", "options": {}},
        "training": {"epochs": 1, "batch_size": 16, "lr": 0.05, "max_steps": 3},
        "aggregation": {"edge": {"name": "reweight"}, "filters": [{"name": "self_reliability", "options": {"tolerance": 1.0}}]},
        "attack": {"name": "same_value", "fraction": 0.34},
    })  # fmt: skip
    result = run_simulation(config, Console(quiet=True))
    m = result.final
    assert m.attackers_selected == 2 and m.attackers_flagged == 2 and m.honest_flagged == 0
    assert m.attacker_weight == 0.0 and m.accuracy is not None
