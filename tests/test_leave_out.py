"""Known answers for leave-out testing (``leave_out``): its paired improvements, the
filter on a logistic model whose test loss is known to fall along one direction, the
round core's view of the publisher's test set, and ``white_box``, the attacker that
queries the edge's exact pipeline (issue 17)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bmfl.aggregation import compose, get_aggregator
from bmfl.attacks import EdgeView, get_attack, shape_edge_uploads
from bmfl.data import TensorData
from bmfl.filters import get_filter
from bmfl.filters.dp_floor import noise_variance
from bmfl.filters.leave_out import improvements
from bmfl.models import create_model
from bmfl.params import flatten, load_vector
from bmfl.reproduce.grid import BMFL_TRAINING
from bmfl.rounds.edge import PublisherTestLoss
from bmfl.task import TrainingSpec

N = 400
CONFIG = TrainingSpec.model_validate(dict(BMFL_TRAINING)).local()


def test_improvements_known_answers():
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    # differences (1, 2, 3, 3): mean 2.25, sd √(11/12), se sd/√4; (0, 0, 0, 0): 0 and 0
    gain, se = improvements(losses)
    assert gain.tolist() == pytest.approx([2.25, 0.0]) and se.tolist() == pytest.approx([math.sqrt(11 / 12) / 2, 0.0])


def _task(seed: int = 0):
    """A 2-feature, 2-class logistic model, its test set, w^{r-1} and the descent direction."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(600, 2, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    test = TensorData(x, y, 2)
    torch.manual_seed(seed)
    model = create_model("mlp", in_features=2, hidden=(), num_classes=2)
    ref = flatten(model.state_dict())
    local = load_vector(model, ref)
    loss = F.cross_entropy(local(x), y)
    grad = torch.cat([p.reshape(-1) for p in torch.autograd.grad(loss, list(local.parameters()))])
    return model, test, ref, -grad / grad.norm()


def _filter(model, test):
    return get_filter("leave_out", test_loss=PublisherTestLoss(model, test), training=dict(BMFL_TRAINING))


SIZES = torch.full((6,), float(N))
NOISE = math.sqrt(noise_variance(CONFIG, N))  # the DP noise's standard deviation per coordinate


def _two_attackers(push: float = 1.5):
    """The logistic task with four honest uploads half a unit down the descent and two
    attackers ``push`` up it, at rows 2 and 5, each with its DP noise."""
    model, test, ref, descent = _task()
    g = torch.Generator().manual_seed(1)
    honest = ref + 0.5 * descent + NOISE * torch.randn(4, ref.numel(), generator=g)
    attackers = ref - push * descent + NOISE * torch.randn(2, ref.numel(), generator=g)
    return model, test, ref, descent, honest, attackers, torch.cat([honest[:2], attackers[:1], honest[2:], attackers[1:]])


def _side_and_honest(ref: torch.Tensor, descent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """A unit direction orthogonal to the descent, four honest uploads and the generator
    they were drawn from (seed 3), for uploads that point sideways."""
    g = torch.Generator().manual_seed(3)
    side = torch.randn(ref.numel(), generator=g)
    side = side - (side @ descent) * descent
    honest = ref + 0.5 * descent + NOISE * torch.randn(4, ref.numel(), generator=g)
    return side / side.norm(), honest, g


def test_the_filter_drops_uploads_that_raise_the_test_loss_and_keeps_the_rest():
    model, test, ref, descent, honest, attackers, uploads = _two_attackers()
    res = _filter(model, test)(uploads, SIZES, ref)
    assert res.keep.tolist() == [True, True, False, True, True, False]
    first, last = res.info["passes"][0], res.info["passes"][-1]
    assert (2, 5) in res.info["groups"]  # their signals point the same way: left out together too
    assert first["kept"] == list(range(6)) and first["dropped"] == (2, 5)
    assert last["kept"] == [0, 1, 3, 4] and last["dropped"] == ()  # tested again, then it stops
    # with the attackers a majority it still drops them: nothing assumes an honest majority
    res = _filter(model, test)(torch.cat([honest[:2], attackers, attackers + 0.01]), SIZES, ref)
    assert res.keep.tolist() == [True, True, False, False, False, False]
    # uploads that help less than the others are not harm: each is judged against sending nothing
    weak = ref + torch.tensor([0.05, 0.2, 0.5, 0.5, 1.0, 2.0])[:, None] * descent
    assert _filter(model, test)(weak, SIZES, ref).keep.all()


def test_honest_noise_is_not_harm_but_a_test_without_the_noise_margin_would_call_it_so():
    model, test, ref, descent = _task()
    g = torch.Generator().manual_seed(2)
    significant = 0
    for _ in range(20):  # vehicles whose signal is negligible beside their DP noise
        honest = ref + NOISE * torch.randn(6, ref.numel(), generator=g)
        res = _filter(model, test)(honest, SIZES, ref)
        assert res.keep.all()
        (only,) = res.info["passes"]
        significant += int(((only["gain"] - 3 * only["se"]) > 0).sum())
    assert significant >= 40  # leaving out an honest upload's noise measurably helps, often (58 of 129)


def test_uploads_all_harmful_are_all_dropped_and_a_look_alike_that_helps_comes_back():
    model, test, ref, descent = _task()
    bad = torch.stack([ref - 1.0 * descent, ref - 3.0 * descent])
    res = _filter(model, test)(bad, SIZES[:2], ref)
    assert not res.keep.any()  # the edge then records w^{r-1}, as when every upload is flagged
    side, honest, g = _side_and_honest(ref, descent)
    resembling = ref + 0.2 * descent + 2.0 * side  # points the attackers' way (cos > 0.5) but helps
    attackers = ref - 1.5 * descent + 2.0 * side + NOISE * torch.randn(2, ref.numel(), generator=g)
    res = _filter(model, test)(torch.cat([honest, resembling[None], attackers]), torch.full((7,), float(N)), ref)
    assert (4, 5, 6) in res.info["groups"] and res.info["passes"][0]["dropped"] == (4, 5, 6)
    assert res.info["readmitted"] == [4] and res.keep.tolist() == [True] * 5 + [False] * 2


def test_harmful_groups_are_taken_most_harmful_first_without_sharing_an_upload():
    from bmfl.filters.leave_out import harmful_groups

    groups = [(0,), (1,), (2,), (3,), (1, 2), (2, 3)]
    assert harmful_groups(groups, torch.tensor([-1.0, 0.5, 0.2, 0.0, 0.9, 0.3])) == (1, 2)  # (2, 3) shares 2
    assert harmful_groups(groups, torch.tensor([0.1, -0.5, -0.2, 0.0, -0.9, 0.3])) == (0, 2, 3)
    assert harmful_groups(groups, torch.zeros(6)) == ()
    assert harmful_groups(groups, torch.tensor([0.1, -0.5, -0.2, 0.3, -0.9, 0.3]), most=1) == (3,)  # a tie: the earlier


def test_look_alikes_groups_each_upload_with_the_signals_pointing_its_way():
    from bmfl.filters.leave_out import look_alikes

    # signals of energy 4, 4, 1, 4 and ~0 (below the floor 1): cosines 0.5 (0-1), 0.75 (1-2), -1 (0-3)
    h = torch.tensor([
        [4.0, 2.0, 0.5, -4.0, 0.0],
        [2.0, 4.0, 1.5, 0.0, 0.0],
        [0.5, 1.5, 1.0, 0.0, 0.0],
        [-4.0, 0.0, 0.0, 4.0, 0.9],
        [0.0, 0.0, 0.0, 0.9, 1e-9],
    ], dtype=torch.float64)  # fmt: skip
    floor = torch.ones(5, dtype=torch.float64)
    assert look_alikes(h, floor, 0.5) == [(0,), (1,), (2,), (3,), (4,), (0, 1), (0, 1, 2), (1, 2)]
    assert look_alikes(h, floor, 0.6) == [(0,), (1,), (2,), (3,), (4,), (1, 2)]  # 0-1 at 0.5 no longer; 3-4: 0.9/2 = 0.45
    assert look_alikes(h, floor, 0.4) == [(0,), (1,), (2,), (3,), (4,), (0, 1), (0, 1, 2), (1, 2), (3, 4)]


def test_the_passes_are_bounded_and_the_last_drops_every_harmful_group(monkeypatch):
    """Two attackers in dissimilar directions (not look-alikes) are dropped in a pass
    each; with the passes capped at one, that pass drops both: the same verdicts, so
    attackers cannot stretch the close by making each of them need a pass of its own."""
    import bmfl.filters.leave_out as leave_out

    model, test, ref, descent = _task()
    side, honest, g = _side_and_honest(ref, descent)
    pushing = ref - 1.5 * descent + NOISE * torch.randn(ref.numel(), generator=g)
    sideways = ref - 0.6 * descent + 2.0 * side + NOISE * torch.randn(ref.numel(), generator=g)
    uploads, sizes = torch.cat([honest, pushing[None], sideways[None]]), torch.full((6,), float(N))
    res = _filter(model, test)(uploads, sizes, ref)
    assert [p["dropped"] for p in res.info["passes"]] == [(4,), (5,), ()] and (4, 5) not in res.info["groups"]
    monkeypatch.setattr(leave_out, "MAX_PASSES", 1)
    capped = _filter(model, test)(uploads, sizes, ref)
    assert [p["dropped"] for p in capped.info["passes"]] == [(4, 5)]
    assert capped.keep.tolist() == res.keep.tolist() == [True] * 4 + [False] * 2


def test_judged_at_a_fraction_of_the_aggregates_step():
    """With ``step`` s the candidates are evaluated at w^{r-1} + s·(candidate − w^{r-1}):
    the verdicts of the main scenario hold at s = 0.2."""
    model, test, ref, descent = _task()
    g = torch.Generator().manual_seed(1)
    honest = ref + 0.5 * descent + NOISE * torch.randn(4, ref.numel(), generator=g)
    attackers = ref - 1.5 * descent + NOISE * torch.randn(2, ref.numel(), generator=g)
    uploads = torch.cat([honest[:2], attackers[:1], honest[2:], attackers[1:]])
    seen = []

    class Recording(PublisherTestLoss):
        def losses_and_gradient(self, vectors):  # each pass's candidates
            seen.append(vectors.clone())
            return super().losses_and_gradient(vectors)

    leave_out = get_filter("leave_out", test_loss=Recording(model, test), training=dict(BMFL_TRAINING), step=0.2)
    res = leave_out(uploads, SIZES, ref)
    assert res.keep.tolist() == [True, True, False, True, True, False]
    mean = get_aggregator("noise_weighted", training=dict(BMFL_TRAINING)).aggregate(uploads, SIZES, ref).aggregate
    assert torch.allclose(seen[0][0], ref + 0.2 * (mean - ref), atol=1e-6)
    with pytest.raises(ValueError, match="step"):
        get_filter("leave_out", test_loss=Recording(model, test), training=dict(BMFL_TRAINING), step=0.0)


def test_credit_weighs_each_kept_upload_by_the_evidence_that_it_helps():
    """``credit`` [y0, y1]: a kept upload keeps min(1, max(0, (y − y0)/(y1 − y0))) of its
    weight, y its help (the loss's rise when it alone is left out) over √(se² + sd²). Three
    honest uploads help by y ≈ 15 and keep all of it; two free riders (w^{r-1} plus noise,
    y ≈ 0.9 and −1.2) keep 0.64 and nothing; an upload that harms by less than the drop
    test's allowance (y ≈ −3.2) is kept but weighs nothing. Credit changes no drop and no
    score, and the edge's step moves by the granted shares only: Σθ < 1, the rest of the
    weight stays with w^{r-1}."""
    model, test, ref, descent = _task()
    g = torch.Generator().manual_seed(4)
    honest = ref + 0.5 * descent + NOISE * torch.randn(3, ref.numel(), generator=g)
    riders = ref + NOISE * torch.randn(2, ref.numel(), generator=g)
    mild = ref - 0.1 * descent + NOISE * torch.randn(1, ref.numel(), generator=g)
    uploads = torch.cat([honest, riders, mild])
    plain = _filter(model, test)(uploads, SIZES, ref)
    credited = get_filter("leave_out", test_loss=PublisherTestLoss(model, test), training=dict(BMFL_TRAINING), credit=[-1, 2])
    res = credited(uploads, SIZES, ref)
    assert res.keep.all() and plain.keep.all() and torch.equal(res.reliability, plain.reliability)
    first = res.info["passes"][0]
    singles = [i for i, group in enumerate(first["groups"]) if len(group) == 1]
    y = -first["gain"][singles] / (first["se"][singles] ** 2 + (first["margin"][singles] / 3) ** 2).sqrt()
    assert y[:3].min() > 10 and y[5] < -1  # the honest help; the mild harm is kept, but no help
    assert res.credit.tolist() == pytest.approx((((y + 1) / 3).clamp(0, 1)).tolist())
    assert res.credit[:3].tolist() == [1.0, 1.0, 1.0] and 0 < res.credit[3] < 1 and res.credit[4:].tolist() == [0.0, 0.0]

    rule = get_aggregator("noise_weighted", training=dict(BMFL_TRAINING))
    edge = compose(rule, credited)(uploads, SIZES, ref)
    p = rule.aggregate(uploads, SIZES, ref).weights.to(torch.float64)
    thetas = torch.tensor([v.theta for v in edge.verdicts], dtype=torch.float64)
    assert thetas.tolist() == pytest.approx((p * res.credit).tolist()) and float(thetas.sum()) < 0.9
    assert not any(v.flagged for v in edge.verdicts)  # weighing nothing is not being found malicious
    expected = ref.to(torch.float64) + (thetas[:, None] * (uploads - ref).to(torch.float64)).sum(0)
    assert torch.allclose(edge.aggregate.to(torch.float64), expected, atol=1e-6)
    with pytest.raises(ValueError, match="credit"):
        get_filter("leave_out", test_loss=PublisherTestLoss(model, test), training=dict(BMFL_TRAINING), credit=[2, 1])


def test_after_refused_rounds_the_step_judged_grows_by_the_escalation():
    """With ``escalation`` g the fraction judged is min(1, s·g^k), k the rounds in a row
    before this one that the cloud's guard refused (``refusals``): s, then 0.5, then the
    full step, in rounds 1, 2 and 3 of a task whose rounds 1 and 2 were refused; without
    escalation always s."""
    model, test, ref, descent = _task()
    g = torch.Generator().manual_seed(1)
    uploads = ref + 0.5 * descent + NOISE * torch.randn(6, ref.numel(), generator=g)
    seen = []

    class Recording(PublisherTestLoss):
        def losses_and_gradient(self, vectors):
            seen.append(vectors[0].clone())
            return super().losses_and_gradient(vectors)

    refused = {1: 0, 2: 1, 3: 2}.__getitem__
    mean = get_aggregator("noise_weighted", training=dict(BMFL_TRAINING)).aggregate(uploads, SIZES, ref).aggregate
    for escalation, steps in ((2.5, (0.2, 0.5, 1.0)), (1.0, (0.2, 0.2, 0.2))):
        leave_out = get_filter("leave_out", test_loss=Recording(model, test), training=dict(BMFL_TRAINING), step=0.2,
                               escalation=escalation, refusals=refused)  # fmt: skip
        for r, step in enumerate(steps, start=1):
            seen.clear()
            res = leave_out(uploads, SIZES, ref, round_index=r)
            assert res.info["step"] == pytest.approx(step) and leave_out.step_in(r) == pytest.approx(step)
            assert torch.allclose(seen[0], ref + step * (mean - ref), atol=1e-6)
    with pytest.raises(ValueError, match="escalation"):
        get_filter("leave_out", test_loss=Recording(model, test), training=dict(BMFL_TRAINING), escalation=0.5)


def test_the_round_core_counts_no_refusals_for_a_task_without_the_guard():
    """``task_edge_rule`` hands leave-out testing the refusal count only where the cloud's
    guard runs: without it no round is refused, whatever the record shows."""
    from bmfl.aggregation.filtered import FilteredAggregator
    from bmfl.rounds import task_edge_rule, task_scorer
    from bmfl.task import AggregationSpec

    model, test, _, _ = _task()
    training = TrainingSpec.model_validate(dict(BMFL_TRAINING))
    for ratchet, step in ((0.05, 0.5), (None, 0.2)):
        rule = task_edge_rule(AggregationSpec(ratchet=ratchet), model, test, task_scorer(model, test), training, 0.0,
                              refusals=lambda r: 1)  # fmt: skip
        filters = []
        while isinstance(rule, FilteredAggregator):
            filters.append(rule.filter)
            rule = rule.inner
        (leave_out,) = [f for f in filters if f.name == "leave_out"]
        assert leave_out.step_in(2) == pytest.approx(step)


def test_without_dp_self_reliability_judges_and_without_an_evaluator_every_upload_is_kept():
    """A task without DP gives the test no noise margin: BMFL's self-reliability test
    judges its uploads (the sign-flipped one is dropped with Λ = −∞, the descent step
    kept), exactly as ``self_reliability`` alone would; with no evaluator every upload is
    kept."""
    from bmfl.filters import accuracy_evaluator

    model, test, ref, descent = _task()
    uploads = torch.stack([ref + 1.0 * descent, -3.0 * ref])
    no_dp = {**BMFL_TRAINING, "dp": False}
    evaluate = accuracy_evaluator(model, test)
    judged = get_filter("leave_out", test_loss=PublisherTestLoss(model, test), training=no_dp, evaluate=evaluate)(
        uploads, SIZES[:2], ref, round_index=2)
    alone = get_filter("self_reliability", evaluate=evaluate)(uploads, SIZES[:2], ref, round_index=2)
    assert judged.keep.tolist() == alone.keep.tolist() == [True, False]
    assert torch.equal(judged.reliability, alone.reliability) and judged.threshold == alone.threshold
    assert judged.reliability[1] == -math.inf and "without_dp" in judged.info
    blind = get_filter("leave_out", test_loss=PublisherTestLoss(model, test), training=no_dp)
    res = blind(uploads, SIZES[:2], ref)
    assert res.keep.all() and res.info["passes"] == []


def test_the_publishers_test_loss_is_cross_entropy_per_example_and_its_gradient():
    model, test, ref, descent = _task()
    vectors = torch.stack([ref, ref + descent])
    view = PublisherTestLoss(model, test, batch_size=64)
    losses = view.per_example(vectors)
    assert losses.shape == (2, len(test)) and losses.dtype == torch.float64
    for row, v in zip(losses, vectors):
        expected = F.cross_entropy(load_vector(model, v)(test.x), test.y, reduction="none")
        assert torch.allclose(row, expected.to(torch.float64), atol=1e-6)
    assert float(losses[1].mean()) < float(losses[0].mean())  # the descent direction lowers the loss
    same, gradient = view.losses_and_gradient(vectors)  # the first model's own pass gives its gradient
    assert torch.equal(same, losses)
    assert gradient.dtype == torch.float64 and torch.allclose(-gradient / gradient.norm(), descent.to(torch.float64), atol=1e-6)
    at_descent = view.losses_and_gradient(vectors.flip(0))[1]
    expected = torch.autograd.grad(F.cross_entropy(load_vector(model, ref + descent)(test.x), test.y), list(model.parameters()))
    assert torch.allclose(at_descent, torch.cat([g.reshape(-1) for g in expected]).to(torch.float64), atol=1e-6)


def test_parameters_the_evaluation_skips_get_a_zero_gradient():
    """A multi-task model scores with its main head only (eval mode): the auxiliary
    heads' coordinates of the test loss's gradient are 0, the others those of the main
    head's cross-entropy, so the default pipeline runs on multi-task tasks too."""
    from bmfl.models.multitask import MultiTaskCNN1D

    torch.manual_seed(0)
    model = MultiTaskCNN1D(in_channels=3, length=8, num_classes=4, aux_heads=(1, 3))
    test = TensorData(torch.randn(50, 3, 8), torch.arange(50) % 4, 4)
    ref = flatten(model.state_dict())
    _, gradient = PublisherTestLoss(model, test).losses_and_gradient(ref[None])
    local = load_vector(model, ref).eval()
    named = dict(local.named_parameters())
    used = {k for k, g in zip(named, torch.autograd.grad(F.cross_entropy(local(test.x), test.y), list(named.values()),
                                                            allow_unused=True)) if g is not None}  # fmt: skip
    assert used and used != set(named)  # the auxiliary heads take no part in the main head's loss
    offset, expected = 0, torch.autograd.grad(F.cross_entropy(local(test.x), test.y), [named[k] for k in sorted(used)])
    want = dict(zip(sorted(used), expected))
    for name, tensor in local.state_dict().items():
        part = gradient[offset : offset + tensor.numel()]
        offset += tensor.numel()
        if name in want:
            assert torch.allclose(part, want[name].reshape(-1).to(torch.float64), atol=1e-6)
        else:
            assert not part.any()


def test_the_edge_scores_uploads_ahead_only_where_the_close_reads_their_accuracy():
    """The default (leave-out testing) judges a DP task by its test loss, so scoring each
    upload's accuracy as it arrives would be wasted; without DP it runs the
    self-reliability test, and so does the paper's pipeline: there it pays."""
    from bmfl.rounds import scores_uploads
    from bmfl.task import AggregationSpec, RuleSpec

    dp, no_dp = TrainingSpec(), TrainingSpec(dp=False)
    assert not scores_uploads(AggregationSpec(), dp) and scores_uploads(AggregationSpec(), no_dp)
    paper = AggregationSpec(edge=RuleSpec(name="reweight"), filters=[RuleSpec(name="self_reliability")])
    assert scores_uploads(paper, dp) and not scores_uploads(AggregationSpec(edge=RuleSpec(name="fedavg"), filters=[]), dp)


def test_a_task_without_a_classification_test_set_cannot_run_it():
    from bmfl.rounds.edge import edge_rule
    from bmfl.task import AggregationSpec

    spec = AggregationSpec.model_validate({"edge": {"name": "noise_weighted"}, "filters": [{"name": "leave_out"}]})
    with pytest.raises(ValueError, match="needs evaluate, test_loss"):
        edge_rule(spec, None, training=TrainingSpec.model_validate(dict(BMFL_TRAINING)), count_noise=0.0)


def _white_box_view(oracle, seed: int = 0):
    """Two attackers of ten at an edge of test_signal_median's fleet, with ``oracle`` as the edge."""
    from test_signal_median import D, TRAINING, _fleet

    honest, u = _fleet(seed, 0, 0.0)
    view = EdgeView(edge=0, vehicles=[8, 9], own=torch.stack([0.5 * u, 0.5 * u]), reference=torch.zeros(D),
                    generator=torch.Generator().manual_seed(5), total=10, honest=honest,
                    edge_aggregate=lambda sent: oracle(torch.cat([honest, sent])))  # fmt: skip
    attack = get_attack("white_box", training=TRAINING.model_dump(), num_samples=1000)
    return attack, view, u


def test_the_white_box_attacker_pushes_as_far_as_the_edge_lets_it():
    """Its uploads are w^{r-1} − t·u + n (n its own noise draw): against a plain mean t is
    the envelope's whole S; against the signal median's flags, the longest push the
    filter keeps, to 1 %: farther and it is flagged."""
    from test_signal_median import D, TRAINING

    sizes = torch.full((10,), 1000.0)
    mean = get_aggregator("noise_weighted", training=TRAINING)
    flags = compose(mean, get_filter("signal_median", training=TRAINING, clip=False))
    pushes = {}
    for name, edge in (("mean", lambda up: mean.aggregate(up, sizes, torch.zeros(D)).aggregate),
                       ("flags", lambda up: flags(up, sizes, torch.zeros(D)).aggregate)):  # fmt: skip
        attack, view, u = _white_box_view(edge)
        noise = torch.randn((2, D), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * attack._push.variance**0.5
        sent = attack.collude(view).double()
        push = float(-((sent - noise) @ u.double()).mean())
        assert torch.allclose(sent, noise - push * u.double(), atol=1e-5)
        pushes[name] = push
        if name == "flags":
            assert flags(torch.cat([view.honest, sent.float()]), sizes, torch.zeros(D)).info["keep"].all()
            farther = (noise - 1.01 * push * u.double()).float()
            assert not flags(torch.cat([view.honest, farther]), sizes, torch.zeros(D)).info["keep"][8:].all()
    assert pushes["mean"] == pytest.approx(attack._push.step, rel=1e-6)
    assert 0 < pushes["flags"] < 0.5 * pushes["mean"]


def test_the_white_box_attacker_with_help_earns_credit_and_pushes_against_the_honest_step():
    """With ``help`` the colluders send w^{r-1} + a·g + t·p + n: g their clean descent, p
    the push against the honest mean step orthogonal to g. An edge that weighs each
    upload by its part along g (credit in miniature: none at 0, all from S/2) gives the
    plain white-box attacker's push almost no weight; the attacker with help buys full
    weight with a ≥ S/2 and then pushes the whole S along p. Against a plain mean it
    pushes the whole S along p too."""
    from test_signal_median import D, TRAINING

    attack, view, u = _white_box_view(lambda up: up.mean(dim=0))
    g = u.double() / u.double().norm()
    S = attack._push.step

    def credited(up):
        shares = torch.ones(up.shape[0], dtype=torch.float64)
        shares[-2:] = ((up[-2:].double() @ g) / (0.5 * S)).clamp(0, 1)
        return (shares[:, None] * up.double()).sum(dim=0) / up.shape[0]

    helper = get_attack("white_box", training=TRAINING.model_dump(), num_samples=1000, help=3)
    p = helper._against_honest(view.honest.double(), torch.zeros(D, dtype=torch.float64), g)
    assert abs(float(p @ g)) < 1e-9 and float(p @ view.honest.double().mean(dim=0)) < 0
    moved = {}
    for name, attacker in (("plain", attack), ("help", helper)):
        edge = lambda sent, view=view: credited(torch.cat([view.honest, sent]))  # noqa: E731
        trial = EdgeView(**{**view.__dict__, "generator": torch.Generator().manual_seed(5), "edge_aggregate": edge})
        sent = attacker.collude(trial).double()
        direction = p if name == "help" else -g  # each attacker's own objective
        moved[name] = float((edge(sent.float()) - edge(torch.zeros(2, D))) @ direction)
        if name == "help":
            noise = torch.randn((2, D), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * attack._push.variance**0.5
            assert float(((sent - noise) @ g).min()) >= 0.5 * S - 1e-6  # full credit bought
            assert float(((sent - noise) @ p).mean()) == pytest.approx(S, rel=1e-6)  # and the whole push
    assert moved["help"] > 0.1 * S and moved["help"] > 10 * abs(moved["plain"])
    trial = EdgeView(**{**view.__dict__, "generator": torch.Generator().manual_seed(5)})
    plain_mean = helper.collude(trial).double()
    noise = torch.randn((2, D), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * attack._push.variance**0.5
    assert float(((plain_mean - noise) @ p).mean()) == pytest.approx(S, rel=1e-6)  # the whole push: help costs it nothing


def test_a_white_box_attack_needs_the_edges_pipeline():
    uploads = {0: torch.zeros(3), 1: torch.ones(3)}
    attack = get_attack("white_box", training=dict(BMFL_TRAINING))
    with pytest.raises(ValueError, match="white-box"):
        shape_edge_uploads(attack, uploads, {1}, 0, torch.zeros(3), 1, 0)
    seen = {}

    def edge(trial):
        seen["trial"] = dict(trial)
        return torch.zeros(3)

    shape_edge_uploads(attack, uploads, {1}, 0, torch.zeros(3), 1, 0, edge_aggregate=edge)
    assert torch.equal(seen["trial"][0], uploads[0])  # the oracle gets the honest uploads as they are


def test_candidates_are_evaluated_a_chunk_at_a_time():
    """Forty uploads give dozens of candidate groups; the filter never asks for more than
    CHUNK models at once, and still drops the two harmful uploads and keeps the rest."""
    from bmfl.filters.leave_out import CHUNK

    model, test, ref, descent = _task()
    g = torch.Generator().manual_seed(2)
    honest = ref + 0.5 * descent + NOISE * torch.randn(38, ref.numel(), generator=g)
    attackers = ref - 3.0 * descent + NOISE * torch.randn(2, ref.numel(), generator=g)
    asked = []

    class Counting(PublisherTestLoss):
        def per_example(self, vectors):
            asked.append(len(vectors))
            return super().per_example(vectors)

        def losses_and_gradient(self, vectors):
            asked.append(len(vectors))
            return super().losses_and_gradient(vectors)

    res = get_filter("leave_out", test_loss=Counting(model, test), training=dict(BMFL_TRAINING))(
        torch.cat([honest, attackers]), torch.full((40,), float(N)), ref)
    assert res.keep.tolist() == [True] * 38 + [False] * 2
    assert len(res.info["passes"][0]["groups"]) > CHUNK and max(asked) <= CHUNK

