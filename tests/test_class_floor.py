"""Known answers for the per-class floor (``class_floor``): its projection, the filter on
uploads with known projections, and the round core's per-class descent directions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bmfl.data import TensorData
from bmfl.filters import get_filter
from bmfl.filters.class_floor import floor_projection
from bmfl.filters.dp_floor import noise_variance
from bmfl.models import create_model
from bmfl.params import flatten, load_vector
from bmfl.reproduce.grid import BMFL_TRAINING
from bmfl.rounds import class_descent
from bmfl.task import TrainingSpec

N = 400
CONFIG = TrainingSpec.model_validate(dict(BMFL_TRAINING)).local()


def test_projection_known_answers():
    # orthonormal directions: each floor is its own, λ_c = max(0, −q_c)
    q = torch.tensor([[-2.0, 3.0, -0.5], [1.0, 1.0, 1.0]], dtype=torch.float64)
    lam = floor_projection(torch.eye(3, dtype=torch.float64), q)
    assert torch.equal(lam, torch.tensor([[2.0, 0.0, 0.5], [0.0, 0.0, 0.0]], dtype=torch.float64))
    # a1 = (1, 0), a2 = (1, 1)/√2, x = (−1, −1), t = 0: the nearest point of
    # {x1 ≥ 0, x1 + x2 ≥ 0} is the apex (0, 0) = x + √2·a2
    a = torch.tensor([[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]], dtype=torch.float64)
    x = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    lam = floor_projection(a @ a.T, x @ a.T)
    assert lam[0].tolist() == pytest.approx([0.0, math.sqrt(2)], abs=1e-9)
    assert (x + lam @ a)[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)


def test_the_filter_raises_only_a_push_against_a_class_and_only_along_it():
    d, v = 5_000, noise_variance(CONFIG, N)
    t = 4 * math.sqrt(v)
    g = torch.Generator().manual_seed(0)
    directions = torch.linalg.qr(torch.randn(d, 3, generator=g, dtype=torch.float64)).Q.T  # orthonormal rows
    ref = torch.randn(d, generator=g)
    honest = ref + 0.3 * directions[0].float() + math.sqrt(v) * torch.randn(4, d, generator=g)
    harmful = torch.randn(d, generator=g, dtype=torch.float64)
    harmful -= directions.T @ (directions @ harmful)  # orthogonal to every class direction
    attacker = ref + (-1.8 * directions[1] + 0.5 * harmful / harmful.norm()).float()
    floor = get_filter("class_floor", class_descent=lambda reference: directions, training=dict(BMFL_TRAINING))
    res = floor(torch.cat([honest, attacker[None]]), torch.full((5,), float(N)), ref)
    assert res.keep.all() and res.info["raised"].tolist() == [False] * 4 + [True]
    assert torch.equal(res.updates[:4], honest)
    moved = (res.updates[4] - attacker).to(torch.float64)
    assert float(moved @ directions[1]) == pytest.approx(1.8 - t, abs=1e-5)  # raised to the floor −t, no further
    assert float((moved - (moved @ directions[1]) * directions[1]).norm()) < 1e-4  # and only along a_1
    assert float((res.updates[4] - ref).to(torch.float64) @ directions[1]) == pytest.approx(-t, abs=1e-5)


def test_without_dp_the_floor_is_zero():
    directions = torch.eye(2, 4, dtype=torch.float64)
    floor = get_filter("class_floor", class_descent=lambda reference: directions, training={"dp": False})
    ups = torch.tensor([[-1.0, 2.0, 3.0, 4.0]])
    res = floor(ups, torch.tensor([10.0]), torch.zeros(4))
    assert res.updates.tolist() == [[0.0, 2.0, 3.0, 4.0]]


def test_class_descent_directions_lower_each_class_loss():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, 1, 28, 28, generator=g)
    y = torch.tensor([0, 1, 3] * 20)
    test = TensorData(x, y, 10)
    model = create_model("bmfl_cnn")
    reference = flatten(model.state_dict())
    directions = class_descent(model, test)(reference)
    assert directions.shape == (3, reference.numel()) and directions.dtype == torch.float64
    assert directions.norm(dim=1).tolist() == pytest.approx([1.0] * 3)
    for row, c in zip(directions, (0, 1, 3)):
        def loss(w: torch.Tensor) -> float:
            net = load_vector(create_model("bmfl_cnn"), w)
            with torch.no_grad():
                return float(F.cross_entropy(net(x[y == c]), y[y == c]))
        assert loss(reference + 1e-2 * row.float()) < loss(reference) < loss(reference - 1e-2 * row.float())


def test_a_task_without_classes_cannot_run_the_class_floor():
    from bmfl.rounds import edge_rule
    from bmfl.task import AggregationSpec, RuleSpec

    spec = AggregationSpec(edge=RuleSpec(name="fedavg"), filters=[RuleSpec(name="class_floor")])
    with pytest.raises(ValueError, match="needs class_descent"):
        edge_rule(spec, None, training=TrainingSpec.model_validate(dict(BMFL_TRAINING)), count_noise=0.0)
