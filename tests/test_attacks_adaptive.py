"""Known answers for the colluding and adaptive attacks (issue 17) and the collusion
interface that shapes one edge's attackers' uploads together."""

from __future__ import annotations

import math

import pytest
import torch

from bmfl.attacks import EdgeView, get_attack, shape_edge_uploads, z_max
from bmfl.attacks.agr_agnostic import agnostic_update, largest_gamma
from bmfl.attacks.reliability_aware import distance_budget
from bmfl.filters.self_reliability import directions

HONEST = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 4.0], [2.0, 5.0, 2.0]])
REF = torch.zeros(3)


def view(attack, own=None, honest=HONEST, reference=REF, total=None, round_index=1):
    own = torch.zeros(2, reference.numel()) if own is None else own
    honest = honest if attack.knowledge == "omniscient" else None
    n = total if total is not None else len(own) + (0 if honest is None else len(honest))
    return EdgeView(7, list(range(len(own))), own, reference, torch.Generator().manual_seed(0), n, round_index,
                    honest=honest)


def test_alie_is_mean_minus_z_std_elementwise():
    attack = get_attack("alie", z=1.5)
    out = attack.collude(view(attack))
    # columns: mean (2, 3, 2), unbiased std (1, √3, 2)
    expected = torch.tensor([2 - 1.5, 3 - 1.5 * math.sqrt(3), 2 - 1.5 * 2])
    assert torch.allclose(out, expected.expand(2, 3), atol=1e-6)


def test_alie_partial_knowledge_uses_only_the_attackers_uploads():
    attack = get_attack("alie", z=1.0, omniscient=False)
    own = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    out = attack.collude(view(attack, own=own))
    assert torch.allclose(out, torch.full((2, 3), 1 - math.sqrt(2)), atol=1e-6)


def test_z_max_known_answers():
    # n = 10, f = 2: s = 6 − 2 = 4, Φ⁻¹(0.6) = 0.2533; n = 50, f = 10: s = 16, Φ⁻¹(0.68) = 0.4677
    assert z_max(10, 2) == pytest.approx(0.253347, abs=1e-5)
    assert z_max(50, 10) == pytest.approx(0.467699, abs=1e-5)
    attack = get_attack("alie", z=None)
    out = attack.collude(view(attack, total=5))  # n = 5, f = 2: s = 1, Φ⁻¹(0.8) = 0.8416
    assert float(out[0, 0]) == pytest.approx(2 - 0.841621, abs=1e-5)


@pytest.mark.parametrize("epsilon", [0.1, 100.0])
def test_ipm_sends_minus_epsilon_times_the_honest_mean_update(epsilon):
    reference = torch.tensor([1.0, -1.0, 0.5])
    attack = get_attack("ipm", epsilon=epsilon)
    out = attack.collude(view(attack, honest=HONEST + reference, reference=reference))
    assert torch.allclose(out, (reference - epsilon * torch.tensor([2.0, 3.0, 2.0])).expand(2, 3), atol=1e-4)


def test_halving_search_finds_the_largest_feasible_gamma():
    assert largest_gamma(lambda g: g <= 3.25) == pytest.approx(3.25, abs=1e-4)
    assert largest_gamma(lambda g: False) == 0.0


@pytest.mark.parametrize("objective", ["min_max", "min_sum"])
def test_min_max_and_min_sum_one_dimension(objective):
    # benign {0, 2}: μ = 1, ∇p = −σ = −√2; both constraints are tight at μ + γ∇p = 0
    out = agnostic_update(torch.tensor([[0.0], [2.0]], dtype=torch.float64), "std", objective)
    assert float(out[0]) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
def test_min_max_and_min_sum_constraints_hold_and_bind(name):
    torch.manual_seed(0)
    benign = torch.randn(8, 50, dtype=torch.float64)
    attack = get_attack(name, perturbation="unit")
    out = attack.collude(view(attack, honest=benign.float(), reference=torch.zeros(50), own=torch.zeros(2, 50)))
    m = out[0].to(torch.float64)
    d2 = torch.cdist(benign, benign).pow(2)
    to_m = (benign - m).pow(2).sum(1)
    if name == "min_max":
        lhs, bound = float(to_m.max()), float(d2.max())
    else:
        lhs, bound = float(to_m.sum()), float(d2.sum(1).max())
    assert lhs <= bound * (1 + 1e-5)
    assert lhs >= bound * 0.999  # the largest γ: the constraint binds
    assert torch.equal(out[0], out[1])


def test_reliability_aware_upload_sits_on_the_distance_budget():
    torch.manual_seed(1)
    reference = torch.randn(200).abs() + 0.5  # all-positive: the direction stays +1
    honest = reference + 0.05 * torch.randn(4, 200) + 0.02
    attack = get_attack("reliability_aware", tolerance=1.0, accuracy_drop=0.2, margin=0.01)
    out = attack.collude(view(attack, honest=honest, reference=reference, round_index=2))
    budget = distance_budget(1.0, 0.5, 2, 0.2, 0.01)
    rel = float((out[0].double() - reference.double()).pow(2).sum() / reference.double().pow(2).sum())
    assert rel == pytest.approx(budget, rel=1e-4)
    mean_update = (honest - reference).mean(0)
    assert float(torch.dot(out[0] - reference, mean_update)) < 0  # against the honest direction
    assert int(directions(out[:1], reference)[0]) == 1


def test_reliability_aware_keeps_the_direction_and_hides_without_budget():
    reference = torch.tensor([1.0, 1.0, 1.0, -1.0])
    honest = reference + torch.tensor([[1.0, 1.0, 1.0, -1.0]])
    attack = get_attack("reliability_aware", tolerance=100.0, accuracy_drop=0.0)
    out = attack.collude(view(attack, honest=honest, reference=reference))
    assert int(directions(out[:1], reference)[0]) == 1
    hidden = get_attack("reliability_aware", tolerance=0.1, accuracy_drop=0.5)  # budget < 0
    assert torch.allclose(hidden.collude(view(hidden, honest=honest, reference=reference))[0], honest[0])


def test_scaled_backdoor_boosts_then_bounds_to_the_median_honest_norm():
    reference = torch.ones(3)
    honest = reference + torch.tensor([[3.0, 0, 0], [0, 4.0, 0], [0, 0, 5.0]])  # median norm 4
    own = reference + torch.tensor([[0.1, 0, 0], [0, 0, 10.0]])
    attack = get_attack("scaled_backdoor", margin=0.0)
    out = attack.collude(view(attack, own=own, honest=honest, reference=reference))  # γ = 5/2
    assert torch.allclose(out[0], reference + torch.tensor([0.25, 0, 0]))
    assert torch.allclose(out[1], reference + torch.tensor([0, 0, 4.0]))
    fixed = get_attack("scaled_backdoor", boost=1.0, norm_bound=100.0)
    assert torch.allclose(fixed.collude(view(fixed, own=own, honest=honest, reference=reference)), own)


def test_shape_edge_uploads_replaces_only_the_attackers_and_respects_knowledge():
    uploads = {0: torch.zeros(3), 1: torch.ones(3), 2: torch.full((3,), 2.0), 3: torch.full((3,), 5.0)}
    seen = []

    class Probe(type(get_attack("ipm"))):
        def collude(self, v):
            seen.append(v)
            return torch.full_like(v.own, -1.0)

    omniscient = Probe()
    out = shape_edge_uploads(omniscient, uploads, {1, 3}, 4, torch.zeros(3), 2, 0)
    assert [float(out[v][0]) for v in range(4)] == [0.0, -1.0, 2.0, -1.0]
    assert seen[0].vehicles == [1, 3] and seen[0].total == 4 and seen[0].edge == 4
    assert torch.equal(seen[0].honest, torch.stack([uploads[0], uploads[2]]))
    partial = Probe(omniscient=False)
    shape_edge_uploads(partial, uploads, {1, 3}, 4, torch.zeros(3), 2, 0)
    assert seen[1].honest is None and torch.equal(seen[1].known(), seen[1].own)
    assert shape_edge_uploads(omniscient, uploads, set(), 4, torch.zeros(3), 2, 0) == uploads
    # the collusion generator is keyed by (seed, round, edge)
    g1 = shape_edge_uploads(omniscient, uploads, {1}, 4, torch.zeros(3), 2, 0) and seen[-1].generator
    again = shape_edge_uploads(omniscient, uploads, {1}, 4, torch.zeros(3), 2, 0) and seen[-1].generator
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=again))


def test_clip_aware_sends_the_reversed_mean_at_the_median_norm_and_survives_clipping():
    from bmfl.filters import get_filter

    reference = torch.ones(3)
    honest = reference + torch.tensor([[3.0, 0, 0], [0, 4.0, 0], [2.0, 2.0, 0]])  # norms 3, 4, 2√2: median 3; mean (5/3, 2, 0)
    attack = get_attack("clip_aware", margin=0.0)
    out = attack.collude(view(attack, honest=honest, reference=reference))
    mean = torch.tensor([5 / 3, 2.0, 0])
    assert torch.allclose(out[0], reference - 3 * mean / mean.norm(), atol=1e-6)
    clipped = get_filter("norm_clip")(torch.cat([honest, out]), None, reference).updates
    assert torch.allclose(clipped[3:], out, atol=1e-5)  # at the bound: not shrunk


def test_trust_aware_sends_45_degrees_off_the_benign_mean_towards_minus_std():
    attack = get_attack("trust_aware")
    out = attack.collude(view(attack))
    mean, std = torch.tensor([2.0, 3.0, 2.0]), torch.tensor([1.0, math.sqrt(3), 2.0])
    axis = mean / mean.norm()
    side = -std - (-std @ axis) * axis  # Gram–Schmidt by hand
    side = side / side.norm()
    median_norm = sorted(float(h.norm()) for h in HONEST)[1]
    expected = median_norm * (axis + side) / math.sqrt(2)
    assert torch.allclose(out, expected.expand(2, 3), atol=1e-5)
    with pytest.raises(ValueError, match="angle"):
        get_attack("trust_aware", angle=90)


def test_trust_aware_keeps_fltrust_weight_where_sign_flip_gets_none():
    from bmfl.aggregation import get_aggregator

    g = torch.Generator().manual_seed(3)
    d, reference = 400, torch.zeros(400)
    signal = torch.randn(d, generator=g)
    honest = signal + 4.0 * torch.randn(8, d, generator=g)  # DP-like: each honest update is mostly noise
    root = signal.clone()  # the edge's g_0 points along the benign signal
    fltrust = get_aggregator("fltrust", root_update=lambda ref: ref + root)
    honest_cos = torch.nn.functional.cosine_similarity(honest[2:], root[None], dim=1)
    for name, expected_share in (("sign_flip", 0.0), ("trust_aware", 2 / 8)):
        attack = get_attack(name)
        if name == "sign_flip":
            sent = -honest[:2]
        else:
            sent = attack.collude(view(attack, own=honest[:2].clone(), honest=honest[2:], reference=reference))
        result = fltrust.aggregate(torch.cat([sent, honest[2:]]), torch.ones(8), reference)
        share = float(result.weights[:2].sum())
        if expected_share == 0.0:
            assert share == 0.0
        else:  # more weight than their head count: each looks more aligned with g_0 than an honest update
            cos = float(torch.nn.functional.cosine_similarity(sent[0], root, dim=0))
            assert cos > float(honest_cos.max()) and share > expected_share
