import pytest
import torch

from bmfl.models import create_model
from bmfl.params import all_finite, flatten, get_state, load_vector, unflatten


def test_flatten_unflatten_round_trip_keeps_names_shapes_and_values():
    torch.manual_seed(0)
    state = get_state(create_model("bmfl_cnn"))
    vec = flatten(state)
    assert vec.shape == (21_840,)
    back = unflatten(vec, state)
    assert list(back) == list(state)
    for name in state:
        assert torch.equal(back[name], state[name])


def test_unflatten_rejects_wrong_length():
    state = get_state(create_model("bmfl_cnn"))
    with pytest.raises(ValueError, match="expected \\(21840,\\)"):
        unflatten(torch.zeros(21_839), state)


def test_load_vector_writes_into_model():
    model = create_model("mlp", hidden=(4,))
    load_vector(model, torch.arange(float(sum(p.numel() for p in model.parameters()))))
    assert float(model.net[0].weight.detach()[0, 1]) == 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, 7, -1])
def test_all_finite_finds_one_bad_value_anywhere(bad: float, where: int) -> None:
    x = torch.randn(3, 50)
    assert all_finite(x) and all_finite(torch.empty(0))
    x.view(-1)[where] = bad
    assert not all_finite(x) and not bool(torch.isfinite(x).all())
