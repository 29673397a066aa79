"""Known answers and invariants for the DP-SGD envelope filter (``dp_envelope``), its
defence-aware attacker (``envelope_aware``), centered clipping (``centered_clip``) and
its defence-aware attacker (``cc_aware``)."""

from __future__ import annotations

import math

import pytest
import torch

from bmfl.aggregation import compose, get_aggregator
from bmfl.attacks import get_attack
from bmfl.attacks.alie import mean_minus_z_std
from bmfl.attacks.base import AttackContext, EdgeView
from bmfl.attacks.frame import GRID
from bmfl.filters import get_filter
from bmfl.filters import gram
from bmfl.filters.dp_envelope import SHAPE_QUANTILES, maximum_independent_set, shape_excess, signal_bound
from bmfl.filters.dp_floor import noise_variance
from bmfl.filters.gram import carry_gram, gram_matrix
from bmfl.reproduce.grid import BMFL_TRAINING
from bmfl.task import TrainingSpec

D = 20_000
N = 400  # data size of every upload: ⌈400/64⌉ > max_steps, so T = 3
CONFIG = TrainingSpec.model_validate(dict(BMFL_TRAINING)).local()


def honest_uploads(k: int, seed: int = 0, signal: float = 0.5):
    """w^{r-1} and k honest DP-SGD uploads: a shared signal direction of norm ``signal``
    plus a little heterogeneity, plus N(0, v I) noise as the task's DP-SGD adds."""
    g = torch.Generator().manual_seed(seed)
    v = noise_variance(CONFIG, N)
    ref = torch.randn(D, generator=g)
    direction = torch.randn(D, generator=g)
    direction = direction / direction.norm()
    deltas = []
    for _ in range(k):
        own = torch.randn(D, generator=g)
        s = signal * (0.8 * direction + 0.2 * own / own.norm())
        deltas.append(s + math.sqrt(v) * torch.randn(D, generator=g))
    return ref, ref + torch.stack(deltas), v


def envelope():
    return get_filter("dp_envelope", training=dict(BMFL_TRAINING))


def test_signal_bound_known_answer():
    # η·C·κ·Σ c_s with c = (1.75, 1.5, 1) and κ = 1 + 4·√((1 − 64/400)/64)
    kappa = 1 + 4 * math.sqrt((1 - 64 / 400) / 64)
    assert signal_bound(CONFIG, N, 4.0) == pytest.approx(0.3 * 1.0 * kappa * 4.25)


def test_gram_in_blocks_equals_the_whole_product():
    ref, uploads, _ = honest_uploads(5)
    deltas = uploads.double() - ref.double()
    whole = deltas @ deltas.T
    for budget in (8 * 5, 8 * 5 * 7, 8 * 5 * D):  # one coordinate, 7 (a ragged last block), all at once
        fresh = uploads.clone()  # no memo: each budget computes its own blocks
        assert torch.allclose(gram_matrix(fresh, ref, budget), whole, rtol=1e-12, atol=0)


def test_the_gram_matrix_is_computed_once_a_round_and_follows_the_kept_subset(monkeypatch):
    """The default pipeline's dp_envelope and signal_median read one Gram pass; a kept
    subset carries the exact sub-matrix; an in-place change of the uploads recomputes;
    callers may edit their copy."""
    ref, uploads, _ = honest_uploads(6)
    deltas = uploads.double() - ref.double()
    first = gram_matrix(uploads, ref)
    first.diagonal().sub_(1e6)  # a caller's in-place edit does not reach the memo
    assert torch.allclose(gram_matrix(uploads, ref), deltas @ deltas.T, rtol=1e-12, atol=0)
    rows = torch.tensor([0, 2, 5])
    subset = uploads[rows]
    carry_gram(uploads, subset, rows, ref)
    passes = []
    product = gram._product
    monkeypatch.setattr(gram, "_product", lambda *args: passes.append(args[0].shape[0]) or product(*args))
    sub = gram_matrix(subset, ref)
    assert passes == [] and torch.allclose(sub, deltas[rows] @ deltas[rows].T, rtol=1e-12, atol=0)
    subset[0] += 1.0  # changed in place: the memo no longer applies
    moved = subset.double() - ref.double()
    assert torch.allclose(gram_matrix(subset, ref), moved @ moved.T, rtol=1e-12, atol=0) and passes
    count = len(passes)
    gram_matrix(uploads, ref.clone())  # another reference: computed afresh
    assert len(passes) == count + 1
    # the pipeline: envelope, then signal median over what it kept, one pass over the uploads
    passes.clear()
    rule = compose(get_aggregator("fedavg"), envelope(), get_filter("signal_median", training=dict(BMFL_TRAINING)))
    out = rule(uploads.clone(), torch.full((6,), float(N)), ref)
    assert passes == [6] and out.info["keep"].all()  # the envelope's pass over all six; the median reads it


def test_maximum_independent_set_known_answers():
    # path 0–1–2: {0, 2}; triangle 0–1–2 plus isolated 3: {0, 3} (ties to vertex order)
    assert maximum_independent_set([{1}, {0, 2}, {1}], exact_max=12) == [0, 2]
    assert maximum_independent_set([{1, 2}, {0, 2}, {0, 1}, set()], exact_max=12) == [0, 3]
    # star centred on 0 with 4 leaves: greedy drops the centre first
    star = [{1, 2, 3, 4}, {0}, {0}, {0}, {0}]
    assert maximum_independent_set(star, exact_max=0) == [1, 2, 3, 4]
    assert maximum_independent_set(star, exact_max=12) == [1, 2, 3, 4]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_honest_dp_uploads_are_all_kept(seed):
    ref, ups, _ = honest_uploads(10, seed)
    res = envelope()(ups, torch.full((10,), float(N)), ref)
    assert res.keep.all()
    assert not res.info["conflict"].any()
    assert (res.info["norm_ratio"] - 1).abs().max() < 0.1


def test_alie_and_copies_are_flagged_honest_kept():
    ref, ups, _ = honest_uploads(8, seed=3)
    honest = ups[:6]
    alie = mean_minus_z_std(honest - ref, 1.5) + ref  # norm² ≈ 2.25·d·v: above the norm bound
    z1 = mean_minus_z_std(honest - ref, 1.0) + ref  # norm ≈ honest, but built from honest noise
    ipm = ref - 0.5 * (honest - ref).mean(0)  # far too little noise
    clip_aware = ref - (honest - ref).mean(0) / (honest - ref).mean(0).norm() * (honest - ref).norm(dim=1).median()
    for bad, reason in ((alie, "norm"), (z1, "pair"), (ipm, "norm"), (clip_aware, "pair")):
        stacked = torch.cat([honest, bad.expand(2, D)])
        res = envelope()(stacked, torch.full((8,), float(N)), ref)
        assert res.keep.tolist() == [True] * 6 + [False] * 2, reason
        assert bool(res.info["norm_ok"][6]) == (reason == "pair")


def test_a_duplicated_honest_upload_loses_exactly_one_copy():
    ref, ups, _ = honest_uploads(5, seed=4)
    stacked = torch.cat([ups, ups[1:2]])  # upload 5 copies upload 1
    res = envelope()(stacked, torch.full((6,), float(N)), ref)
    assert res.keep.tolist() == [True] * 5 + [False]  # ties go to the first in order
    assert res.info["conflict"][1, 5]


def test_composes_and_without_dp_keeps_everything():
    ref, ups, _ = honest_uploads(4, seed=5)
    bad = torch.cat([ups, (ref + 10 * (ups[0] - ref))[None]])
    agg = compose(get_aggregator("fedavg"), envelope())(bad, torch.full((5,), float(N)), ref)
    assert torch.allclose(agg.aggregate, ups.mean(0), atol=1e-5)
    assert [v.reason for v in agg.verdicts] == [None] * 4 + ["filter:dp_envelope"]
    no_dp = get_filter("dp_envelope", training={**BMFL_TRAINING, "dp": False})
    assert no_dp(bad, torch.full((5,), float(N)), ref).keep.all()
    with pytest.raises(ValueError):
        envelope()(bad, None, ref)


def test_shape_excess_known_answers():
    ref = torch.zeros(4_000)
    # every coordinate at w^{r-1}: all below the first threshold, F̂ = 1 where p = 1/32
    assert float(shape_excess(ref[None], ref, torch.ones(1))) == pytest.approx(1 - 1 / SHAPE_QUANTILES)
    # far from w^{r-1} everywhere: no coordinate below any threshold, the excess is −1/32
    assert float(shape_excess(ref[None] + 100.0, ref, torch.ones(1))) == pytest.approx(-1 / SHAPE_QUANTILES)
    # half the coordinates at 0, half far out: F̂ = 1/2 at every threshold, the excess peaks at p = 1/32
    half = torch.cat([torch.zeros(2_000), torch.full((2_000,), 100.0)])
    assert float(shape_excess(half[None], ref, torch.ones(1))) == pytest.approx(0.5 - 1 / SHAPE_QUANTILES)
    # scale-free: the thresholds follow √v
    noise = torch.randn(4_000, generator=torch.Generator().manual_seed(0))
    assert float(shape_excess((3 * noise)[None], ref, torch.full((1,), 9.0))) == pytest.approx(
        float(shape_excess(noise[None], ref, torch.ones(1))), abs=1e-12)


def heavy_tailed_signal(seed: int) -> torch.Tensor:
    """A gradient-like direction: most coordinates near 0, a few large (Laplace cubed)."""
    g = torch.Generator().manual_seed(seed)
    laplace = torch.distributions.Laplace(0.0, 1.0).icdf(torch.rand(D, generator=g).clamp(1e-6, 1 - 1e-6))
    return laplace**3 / (laplace**3).norm()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_signal_scaled_to_an_honest_norm_fails_the_shape_not_the_norm(seed):
    """The constrain-and-scale backdoor: no noise, a signal at the median honest norm. Its
    norm passes; its coordinates are not those of Gaussian noise, so the shape flags it,
    while the same signal sent at S with fresh noise (what an honest vehicle may carry)
    passes."""
    ref, ups, v = honest_uploads(6, seed=seed)
    direction = heavy_tailed_signal(seed)
    median = float((ups - ref).norm(dim=1).median())
    scaled = ref + 0.99 * median * direction
    res = envelope()(torch.cat([ups, scaled[None]]), torch.full((7,), float(N)), ref)
    assert res.keep.tolist() == [True] * 6 + [False]
    assert bool(res.info["norm_ok"][6])
    assert float(res.info["shape_excess"][6]) > 10 * res.info["shape_bound"]
    assert (res.info["shape_excess"][:6] <= res.info["shape_bound"]).all()
    noisy = ref + 0.95 * signal_bound(CONFIG, N, 4.0) * direction + math.sqrt(v) * torch.randn(
        D, generator=torch.Generator().manual_seed(100 + seed))
    assert envelope()(torch.cat([ups, noisy[None]]), torch.full((7,), float(N)), ref).keep.all()


def test_pure_noise_passes_the_shape_at_the_stated_rate():
    """Pure N(0, v) noise of the least variance: the shape's bound holds for all of 200
    uploads (each fails with probability ≤ 3·10⁻⁵), and with a variance 10 % too small
    (the noise an honest vehicle must add, missing) every upload fails."""
    g = torch.Generator().manual_seed(11)
    ref = torch.zeros(D)
    noise = torch.randn(200, D, generator=g)
    bound = envelope()(noise[:2], torch.full((2,), float(N)), ref).info["shape_bound"]
    assert (shape_excess(noise, ref, torch.ones(200)) <= bound).all()
    assert (shape_excess(0.9 * noise, ref, torch.ones(200)) > bound).all()


def test_envelope_aware_attack_passes_the_envelope_by_construction():
    ref, ups, v = honest_uploads(8, seed=6)
    attack = get_attack("envelope_aware", training=dict(BMFL_TRAINING))
    assert not attack.training_config(CONFIG).dp
    own = ref + 0.7 * (ups[5:] - ref).mean(0)  # stands in for the attackers' DP-free updates
    view = EdgeView(edge=0, vehicles=[5, 6, 7], own=own.expand(3, D).clone(), reference=ref,
                    generator=torch.Generator().manual_seed(0), total=8)
    sent = attack.collude(view)
    direction = (own - ref) / (own - ref).norm()
    step = 0.95 * signal_bound(CONFIG, 10_000, 4.0)
    # each attacker: −step along the clean direction, plus its own fresh noise of variance v
    for row in sent - ref:
        assert float(row @ direction) == pytest.approx(-step, abs=5 * math.sqrt(v))
        assert float((row + step * direction).pow(2).mean()) == pytest.approx(v, rel=0.05)
    assert not torch.equal(sent[0], sent[1])
    res = envelope()(torch.cat([ups[:5], sent]), torch.full((8,), float(N)), ref)
    assert res.keep.all()


@pytest.mark.parametrize("colluders", [1, 2])
def test_framing_colluders_get_the_most_useful_honest_upload_flagged(colluders):
    """``frame``: each colluder sends its own honest DP upload plus c·Δ_t, the smallest c of
    the grid that gets the target flagged. Every colluder then conflicts with the target
    and with nothing else; two colluders outnumber it and the envelope drops the target
    (no honest upload copied anything); one colluder ties with it, and vehicle order (the
    honest uploads first here) drops the colluder."""
    ref, ups, _ = honest_uploads(3 + colluders, seed=5)
    honest, own = ups[:3], ups[3:]
    assert envelope()(ups, torch.full((3 + colluders,), float(N)), ref).keep.all()  # honest as they trained
    attack = get_attack("frame", training=dict(BMFL_TRAINING), num_samples=N)
    view = EdgeView(edge=0, vehicles=list(range(3, 3 + colluders)), own=own, reference=ref,
                    generator=torch.Generator().manual_seed(0), total=3 + colluders, honest=honest)
    sent = attack.collude(view)
    t = attack.target(honest, ref)
    assert t == int(torch.argmax((honest - ref) @ (honest - ref).mean(0)))
    added = (sent - own).to(torch.float64)
    c = float(added[0] @ (honest[t] - ref).to(torch.float64)) / float((honest[t] - ref).to(torch.float64).pow(2).sum())
    assert min(abs(c - g) for g in GRID) < 1e-4 and torch.allclose(added, c * (honest[t] - ref).to(torch.float64).expand_as(added), atol=1e-5)
    res = envelope()(torch.cat([honest, sent]), torch.full((3 + colluders,), float(N)), ref)
    conflict = res.info["conflict"]
    assert all(bool(conflict[t, 3 + j]) for j in range(colluders))
    others = [i for i in range(3 + colluders) if i != t]
    assert not conflict[others][:, others].any()
    assert res.keep.tolist() == ([i != t for i in range(3)] + [True] * 2 if colluders == 2 else [True] * 3 + [False])


def test_free_rider_sends_fresh_dp_sized_noise_that_the_envelope_cannot_tell_from_an_honest_upload():
    """The disguised free rider trains nothing and sends w^{r-1} + N(0, v I), v the noise
    an honest DP-SGD upload of the task carries: every coordinate's mean square is v, two
    riders draw different noise, and the envelope keeps them beside honest uploads."""
    ref, ups, v = honest_uploads(5, seed=8)
    attack = get_attack("free_rider", training=dict(BMFL_TRAINING))
    assert not attack.trains and attack.variance == pytest.approx(noise_variance(CONFIG, N))
    sent = torch.stack([attack.poison_update(ups[0], AttackContext(ref, torch.Generator().manual_seed(s))) for s in (1, 2, 3)])
    assert not torch.equal(sent[0], sent[1])
    for row in sent - ref:
        assert float(row.pow(2).mean()) == pytest.approx(v, rel=0.05)
        assert abs(float(row.mean())) < 5 * math.sqrt(v / D)
    assert envelope()(torch.cat([ups, sent]), torch.full((8,), float(N)), ref).keep.all()


def test_centered_clip_known_answers():
    ref = torch.zeros(2)
    ups = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # τ so large nothing is clipped: one iteration from any centre is the weighted mean
    wide = get_aggregator("centered_clip", factor=1e6, iterations=1)(ups, torch.tensor([1.0, 1.0, 2.0]), ref)
    assert torch.allclose(wide.aggregate, torch.tensor([0.75, 0.75]))
    # median centre (1, 1); distances 1, 1, 0 → τ = 1: nothing clipped either
    res = get_aggregator("centered_clip", iterations=1)(ups, None, ref)
    assert res.info["tau"] == pytest.approx(1.0)
    assert torch.allclose(res.aggregate, torch.tensor([2 / 3, 2 / 3]))


def test_centered_clip_bounds_an_outliers_pull_and_is_translation_equivariant():
    torch.manual_seed(0)
    honest = torch.randn(6, 50)
    rule = get_aggregator("centered_clip", iterations=3)
    base = rule(honest, None, torch.zeros(50))
    for scale in (1e2, 1e6):
        bad = torch.cat([honest, scale * torch.ones(1, 50)])
        res = rule(bad, None, torch.zeros(50))
        # the outlier moves each iteration by at most τ/K; the median centre by a bounded amount
        assert float((res.aggregate - base.aggregate).norm()) < 2 * float(honest.norm(dim=1).max())
    shift = torch.full((50,), 3.0)
    moved = rule(honest + shift, None, shift)
    assert torch.allclose(moved.aggregate, base.aggregate + shift, atol=1e-5)


def test_cc_aware_sits_just_inside_the_radius():
    torch.manual_seed(1)
    ref = torch.zeros(40)
    honest = torch.randn(5, 40) + 0.5
    view = EdgeView(edge=0, vehicles=[5, 6], own=torch.zeros(2, 40), reference=ref,
                    generator=torch.Generator().manual_seed(0), total=7, honest=honest)
    sent = get_attack("cc_aware").collude(view)
    deltas = honest.double()
    centre = deltas.median(dim=0).values
    tau = float((deltas - centre).norm(dim=1).median())
    assert float((sent[0].double() - centre).norm()) == pytest.approx(0.99 * tau, rel=1e-5)
    assert float(sent[0].double() @ deltas.mean(0)) < float(centre @ deltas.mean(0))  # against the descent
    assert torch.equal(sent[0], sent[1])


def test_root_floor_raises_only_projections_below_the_noise_floor():
    ref, ups, v = honest_uploads(6, seed=7)
    root = torch.zeros(D)
    root[:100] = 1.0  # the root update's direction: u = e_{0..99}/10
    unit = root / root.norm()
    attack = ref - 1.5 * unit + math.sqrt(v) * torch.randn(D, generator=torch.Generator().manual_seed(9))
    stacked = torch.cat([ups, attack[None]])
    f = get_filter("root_floor", root_update=lambda w: w + 0.3 * root, training=dict(BMFL_TRAINING))
    res = f(stacked, torch.full((7,), float(N)), ref)
    assert res.keep.all()
    floor = -4 * math.sqrt(v)
    proj = (stacked.double() - ref.double()) @ unit.double()
    after = (res.updates.double() - ref.double()) @ unit.double()
    assert torch.allclose(after, proj.clamp_min(floor), atol=1e-6)
    assert res.info["raised"].tolist() == (proj < floor).tolist() and bool(res.info["raised"][6])
    # nothing changes orthogonally to u
    ortho = lambda x: (x.double() - ref.double()) - ((x.double() - ref.double()) @ unit.double())[:, None] * unit.double()
    assert torch.allclose(ortho(res.updates), ortho(stacked), atol=1e-5)
    # a zero root update leaves every upload as it was
    idle = get_filter("root_floor", root_update=lambda w: w, training=dict(BMFL_TRAINING))(stacked, torch.full((7,), float(N)), ref)
    assert idle.updates is None and idle.keep.all()


def test_envelope_backdoor_sends_its_backdoor_direction_at_s_with_fresh_noise_and_passes():
    ref, ups, v = honest_uploads(8, seed=8)
    attack = get_attack("envelope_backdoor", training=dict(BMFL_TRAINING))
    assert not attack.training_config(CONFIG).dp and attack.training_config(CONFIG).epochs == 10
    own = ref + heavy_tailed_signal(8).expand(3, D) * torch.tensor([[1.0], [2.0], [3.0]])  # the backdoored updates
    view = EdgeView(edge=0, vehicles=[5, 6, 7], own=own, reference=ref,
                    generator=torch.Generator().manual_seed(0), total=8)
    sent = attack.collude(view)
    direction = heavy_tailed_signal(8).double()
    step = 0.95 * signal_bound(CONFIG, 10_000, 4.0)
    for row in sent.double() - ref.double():
        assert float(row @ direction) == pytest.approx(step, abs=5 * math.sqrt(v))  # along the backdoor, not against
        assert float((row - step * direction).pow(2).mean()) == pytest.approx(v, rel=0.05)
    assert not torch.equal(sent[0], sent[1])
    assert envelope()(torch.cat([ups[:5], sent]), torch.full((8,), float(N)), ref).keep.all()
