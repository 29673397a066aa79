import pytest
import torch

from bmfl.models import available_models, count_parameters, create_model, register_model


def test_bmfl_cnn_has_exactly_21840_parameters():
    model = create_model("bmfl_cnn")
    per_layer = {name: p.numel() for name, p in model.named_parameters()}
    assert per_layer == {
        "conv1.weight": 250, "conv1.bias": 10,
        "conv2.weight": 5000, "conv2.bias": 20,
        "fc1.weight": 16000, "fc1.bias": 50,
        "fc2.weight": 500, "fc2.bias": 10,
    }
    assert count_parameters(model) == 21_840


@pytest.mark.parametrize(
    "name, x, out_shape",
    [
        ("bmfl_cnn", torch.zeros(3, 1, 28, 28), (3, 10)),
        ("bmfl_cnn_gn", torch.zeros(3, 1, 28, 28), (3, 10)),
        ("mlp", torch.zeros(3, 1, 28, 28), (3, 10)),
        ("scatter_linear", torch.zeros(3, 1, 28, 28), (3, 10)),
        ("lstm_forecaster", torch.zeros(3, 6), (3,)),
        ("mlp_forecaster", torch.zeros(3, 6), (3,)),
    ],
)
def test_models_forward_shapes(name, x, out_shape):
    assert create_model(name)(x).shape == out_shape


def test_the_group_norm_cnn_treats_each_sample_alone_so_dp_sgd_can_stack_it():
    from bmfl.data import TensorData
    from bmfl.training.fleet import can_vectorise

    torch.manual_seed(0)
    model = create_model("bmfl_cnn_gn")
    assert count_parameters(model) == 21_900 and not list(model.buffers())
    x = torch.randn(4, 1, 28, 28)
    alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(model(x), alone, atol=1e-6)  # no batch statistics: batch norm would fail this
    assert can_vectorise(model, TensorData(x, torch.tensor([0, 1, 2, 3]), 10))


def test_registry_rejects_unknown_and_duplicate_names():
    assert {"bmfl_cnn", "mlp", "lstm_forecaster"} <= set(available_models())
    with pytest.raises(KeyError, match="unknown model"):
        create_model("resnet9000")
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp")(lambda: None)


def test_model_moves_to_requested_device():
    model = create_model("bmfl_cnn", device="cpu")
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("shape", [(3, 4, 24, 24), (2, 1, 9, 7), (5, 20, 8, 8)])
def test_scoring_pool_equals_max_pool2d_bit_for_bit(shape):
    from bmfl.models.cnn import max_pool_2x2

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0], x[-1, -1, 1, 1] = float("nan"), float("-inf")
    assert torch.equal(torch.nn.functional.max_pool2d(x, 2).nan_to_num(7.0), max_pool_2x2(x).nan_to_num(7.0))


def test_bmfl_cnn_scores_with_the_outputs_it_trains_with():
    """Without autograd the CNN pools by strided views: the same logits, bit for bit."""
    model = create_model("bmfl_cnn")
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        scored = model(x)
    assert torch.equal(scored, model(x).detach())
