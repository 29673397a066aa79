"""Known answers that close gaps found by ``make mutation`` (docs/mutation.md): rules and
filters at their boundaries, defaults and validation, each through public behaviour
(weights, aggregates, keep masks, diagnostics, errors)."""

import pytest
import torch

from bmfl.aggregation import compose, get_aggregator
from bmfl.aggregation.krum import default_f, krum_scores
from bmfl.filters import directions, distances, get_filter, norm_bounds


# ---------------------------------------------------------------- random_pick


def test_random_pick_takes_one_whole_upload_reproducibly():
    ups = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    picks = []
    for seed in (0, 0, 1):
        rule = get_aggregator("random_pick", seed=seed)
        expected = int(torch.randint(4, (1,), generator=torch.Generator().manual_seed(seed)))
        r = rule(ups, None, torch.zeros(3))
        assert r.info["selected"] == [expected]
        assert r.weights.dtype == torch.float64
        assert r.weights.tolist() == [1.0 if i == expected else 0.0 for i in range(4)]
        assert r.aggregate.tolist() == ups[expected].tolist()
        picks.append(expected)
    assert picks[0] == picks[1]
    assert get_aggregator("random_pick").seed == 0
    # successive rounds draw from the same seeded stream
    rule = get_aggregator("random_pick", seed=5)
    stream = torch.Generator().manual_seed(5)
    for _ in range(5):
        want = int(torch.randint(4, (1,), generator=stream))
        assert rule(ups, None, torch.zeros(3)).info["selected"] == [want]


# ---------------------------------------------------------------- krum


def test_krum_default_f_and_validation():
    assert [default_f(n) for n in range(1, 10)] == [0, 0, 0, 0, 1, 1, 2, 2, 3]
    ups = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    # f = 0, n = 4: 2 neighbours each; squared distances: 0→1,9,49; 1→1,4,36; 3→9,4,16; 7→49,36,16
    assert krum_scores(ups, 0).tolist() == [10.0, 5.0, 13.0, 52.0]
    assert krum_scores(ups, 1).tolist() == [1.0, 1.0, 4.0, 16.0]  # n − f − 2 = 1 neighbour
    with pytest.raises(ValueError, match=r"^Krum needs n - f - 2 >= 1 \(n=4, f=2\)$"):
        krum_scores(ups, 2)
    with pytest.raises(ValueError, match="Krum needs"):
        krum_scores(ups, -1)


def test_multi_krum_defaults_and_single_upload():
    ups = torch.tensor([[0.0], [1.0], [3.0], [7.0], [100.0]])
    # n = 5: f = 1 by default, m = n − f = 4 → the four lowest scores (all but 100)
    r = get_aggregator("multi_krum")(ups, None, torch.zeros(1))
    assert r.info["f"] == 1 and r.info["selected"] == [1, 0, 2, 3]
    assert r.weights.tolist() == [0.25, 0.25, 0.25, 0.25, 0.0]
    assert r.aggregate.item() == pytest.approx(11 / 4)
    one = get_aggregator("krum")(torch.tensor([[2.0, 3.0]]), None, torch.zeros(2))
    assert one.aggregate.tolist() == [2.0, 3.0]
    assert one.weights.dtype == torch.float64 and one.weights.tolist() == [1.0]
    assert one.info == {"selected": [0]}
    two = get_aggregator("multi_krum", f=0)(torch.tensor([[0.0], [4.0], [5.0]]), None, torch.zeros(1))
    assert two.info["selected"] == [1, 2, 0] and two.weights.tolist() == pytest.approx([1 / 3] * 3)


# ---------------------------------------------------------------- fedavg


def test_fedavg_refuses_a_zero_total_and_has_no_diagnostics():
    ups = torch.tensor([[1.0], [3.0]])
    with pytest.raises(ValueError, match=r"^FedAvg needs a positive total data size$"):
        get_aggregator("fedavg")(ups, torch.tensor([0.0, 0.0]), torch.zeros(1))
    r = get_aggregator("fedavg")(ups, torch.tensor([1.0, 3.0]), torch.zeros(1))
    assert r.info == {} and r.weights.tolist() == [0.25, 0.75] and r.aggregate.item() == 2.5


# ---------------------------------------------------------------- composed rules


def test_composed_rule_passes_sizes_and_the_default_round():
    seen = {}

    class Spy(type(get_filter("l2_norm"))):
        def __call__(self, updates, sizes, reference, *, round_index=1):
            seen["sizes"], seen["round"] = sizes, round_index
            return super().__call__(updates, sizes, reference, round_index=round_index)

    ups = torch.tensor([[1.0, 1.0], [1.1, 0.9], [1.2, 1.0]])
    rule = compose(get_aggregator("fedavg"), Spy())
    r = rule(ups, torch.tensor([1.0, 1.0, 2.0]), torch.ones(2))
    assert seen["round"] == 1 and seen["sizes"].tolist() == [1.0, 1.0, 2.0]
    assert r.weights.tolist() == [0.25, 0.25, 0.5]  # FedAvg behind the filter sees the sizes
    assert r.aggregate.tolist() == pytest.approx([1.125, 0.975])
    assert rule.name == "l2_norm+fedavg"


# ---------------------------------------------------------------- l2_norm


def test_l2_norm_uses_the_update_from_the_reference_and_both_bounds():
    ref = torch.tensor([10.0, 10.0])
    ups = ref + torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0], [0.0, 5.0]])
    # norms of w̃ − w: 1..5, μ = 3, σ = 1 → with c1 = 40, c2 = 2: bounds 120 and 5 (5 kept: ≤)
    res = get_filter("l2_norm", c2=2.0)(ups, None, ref)
    assert res.info["norms"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert (res.info["bound_c1"], res.info["bound_c2"]) == (120.0, 5.0)
    assert res.keep.tolist() == [True] * 5
    assert get_filter("l2_norm", c2=1.5)(ups, None, ref).keep.tolist() == [True, True, True, True, False]
    assert norm_bounds(torch.tensor([1.0, 2, 3, 4, 7]), 2.0, 4.0) == (6.0, 7.0)  # σ = med(2,1,0,1,4) = 1
    assert norm_bounds(torch.tensor([1.0, 3, 3, 5, 9]), 1.0, 4.0) == (3.0, 11.0)  # σ = 2: c2·σ, not c2/σ


def test_l2_norm_defaults_and_validation():
    f = get_filter("l2_norm")
    assert (f.c1, f.c2) == (40.0, 400.0)
    get_filter("l2_norm", c1=0.5, c2=0.5)  # positive, below 1: allowed
    for c1, c2 in [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (0.0, 0.0)]:
        with pytest.raises(ValueError, match=r"^c1 and c2 must be positive$"):
            get_filter("l2_norm", c1=c1, c2=c2)


# ---------------------------------------------------------------- self-reliability parts


def test_direction_ties_and_zero_reference_coordinates():
    ref = torch.tensor([1.0, 1.0, 0.0, -1.0])
    ups = torch.tensor(
        [
            [1.0, -1.0, 5.0, 1.0],  # +, −, 0, − → −1 → dir −1
            [1.0, 1.0, 5.0, 1.0],  # +, +, 0, − → 1 → dir 1
            [1.0, -1.0, 5.0, -1.0],  # +, −, 0, + → 1
            [-1.0, 1.0, 5.0, 1.0],  # −, +, 0, − → −1
            [1.0, -1.0, 5.0, 2.0],  # sum 0 (with the zero coordinate): a tie is not agreement
        ]
    )
    assert directions(ups, ref).tolist() == [-1, 1, 1, -1, -1]
    # a zero reference coordinate contributes sign(0) = 0, whatever the upload holds there
    assert directions(torch.tensor([[1.0, -1.0, 5.0, 0.0]]), ref).tolist() == [-1]
    assert directions(torch.tensor([[1.0, -1.0, 0.0, 0.0]]), torch.tensor([1.0, 1.0, 1.0, 1.0])).tolist() == [-1]


def test_relative_distance_with_a_small_reference():
    ref = torch.tensor([0.5, 0.5])  # ‖w‖² = 0.5 < 1
    ups = torch.tensor([[1.0, 0.5]])
    assert distances(ups, ref, "reference").tolist() == [0.25 / 0.5]
    assert distances(ups, ref, "none").tolist() == [0.25]
    tiny = torch.zeros(2)
    assert distances(torch.tensor([[1e-3, 0.0]]), tiny, "reference").tolist() == pytest.approx([1e-6 / 1e-12])


def test_self_reliability_validation():
    ev = lambda v: torch.zeros(len(v), dtype=torch.float64)  # noqa: E731
    with pytest.raises(ValueError, match=r"^round_index is 1-based$"):
        get_filter("self_reliability", evaluate=ev)(torch.ones(1, 2), None, torch.ones(2), round_index=0)
    with pytest.raises(ValueError, match=r"^normalize must be one of \('reference', 'none'\)$"):
        get_filter("self_reliability", evaluate=ev, normalize="l2")


def test_self_reliability_diagnostics():
    ref = torch.tensor([1.0, 1.0])
    ups = torch.tensor([[1.5, 1.0], [-1.0, -1.0]])
    ev = lambda v: torch.tensor([0.5, 0.25, 0.75][: len(v)], dtype=torch.float32)  # float32 scores  # noqa: E731
    res = get_filter("self_reliability", evaluate=ev, tolerance=1.0, normalize="none")(ups, None, ref, round_index=2)
    info = res.info
    assert info["alpha"].dtype == torch.float64 and info["alpha"].tolist() == [0.25, 0.75]
    assert info["direction"].tolist() == [1, -1]
    assert info["distance"].tolist() == [0.25, 8.0]
    assert info["reliability"].tolist() == [1.25 * 0.25 - 0.25, float("-inf")]
    assert info["threshold"] == 1.25 * 0.5 - 1.0 and info["alpha_reference"] == 0.5
    assert res.keep.tolist() == [True, False]


# ---------------------------------------------------------------- evaluators (α of Eq. 11)


def _tiny():
    from torch import nn

    from bmfl.data import TensorData

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1, 0])
    # flat vector of nn.Linear(2, 2): weight (row-major), then bias
    identity = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # predicts argmax x: 0,1,0,1,0 → 4/5
    swapped = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # 1,0,1,0,1 → 1/5
    always_one = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # 1 everywhere → 3/5
    return nn.Linear(2, 2), TensorData(x, y, num_classes=2), torch.stack([identity, swapped, always_one, identity])


@pytest.mark.parametrize("batch_size", [2, 5, 64])
def test_accuracy_evaluators_known_answers(batch_size):
    from bmfl.filters.self_reliability import accuracy_evaluator, batched_accuracy_evaluator

    model, data, vectors = _tiny()
    expected = [0.8, 0.2, 0.6, 0.8]
    before = [p.clone() for p in model.parameters()]
    for evaluator in (
        accuracy_evaluator(model, data, batch_size),
        batched_accuracy_evaluator(model, data, batch_size, vectorise=False),
        batched_accuracy_evaluator(model, data, batch_size, vectorise=True),
        batched_accuracy_evaluator(model, data, batch_size, memo=1),
    ):
        got = evaluator(vectors)
        assert got.dtype == torch.float64 and got.tolist() == pytest.approx(expected)
        assert evaluator(vectors[1:3]).tolist() == pytest.approx([0.2, 0.6])  # again, from the memo or not
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the caller's model is untouched


# ---------------------------------------------------------------- order statistics


def test_median_even_and_odd_along_any_dimension():
    from bmfl.aggregation.stats import median

    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 4, 5, 8, 9, 64, 100, 256):
        x = torch.randn(n, 7, generator=g)
        s = x.sort(dim=0).values
        want = s[(n - 1) // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        assert torch.allclose(median(x, dim=0), want), n
        assert torch.allclose(median(x.T, dim=1), want), n
        assert torch.allclose(median(x.T), want), n
    assert median(torch.tensor([[4.0, 1.0, 3.0, 2.0, 9.0, 0.0]]), dim=1).tolist() == [2.5]
    # count: the median of the smallest values only
    assert median(torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0]]), dim=1, count=4).tolist() == [2.5]


def test_round_index_reaches_a_filter_nested_in_compose():
    # compose(rule, outer, inner): the round must pass through the outer filter to the inner
    ref = torch.tensor([1.0, 1.0, -1.0, 2.0])
    close, far = torch.tensor([1.5, 1.0, -1.0, 2.0]), torch.tensor([3.0, 1.0, -1.0, 2.0])
    ev = lambda v: torch.tensor([{1.5: 0.8, 3.0: 0.75}[float(x[0])] for x in v], dtype=torch.float64)  # noqa: E731
    reliability = get_filter("self_reliability", evaluate=ev, threshold=0.7, normalize="none")
    rule = compose(get_aggregator("fedavg"), get_filter("l2_norm"), reliability)
    ups = torch.stack([close, far])
    # Λ(close) = (1 + 0.5/r)·0.8 − 0.25: 0.75 at r = 2 (kept), 0.65 at r = 4 (dropped)
    assert rule(ups, None, ref, round_index=2).weights.tolist() == [1.0, 0.0]
    assert rule(ups, None, ref, round_index=4).weights.tolist() == [0.0, 0.0]


def test_multi_krum_ties_keep_index_order():
    ups = torch.tensor([[1.0], [1.0], [1.0], [1.0], [9.0]])
    r = get_aggregator("multi_krum", f=1, m=2)(ups, None, torch.zeros(1))
    assert r.info["selected"] == [0, 1] and r.weights.tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------- input checks, trimmed mean


def test_input_checks():
    from bmfl.aggregation.base import check_inputs

    for bad in (torch.zeros(3), torch.zeros(0, 3), torch.zeros(2, 3, 1)):
        with pytest.raises(ValueError, match=r"^updates must be a non-empty \(K, d\) tensor, got shape"):
            check_inputs(bad, None, torch.zeros(3))
    sizes = check_inputs(torch.zeros(2, 3), None, torch.zeros(3))
    assert sizes.dtype == torch.float64 and sizes.tolist() == [1.0, 1.0]
    assert get_aggregator("fedavg")(torch.zeros(2, 3), None, torch.zeros(3)).weights.dtype == torch.float64


def test_trimmed_mean_parameters_and_limits():
    get_aggregator("trimmed_mean", beta=0)
    get_aggregator("trimmed_mean", beta_fraction=0.0)
    get_aggregator("trimmed_mean", beta_fraction=0.49)
    for bad in [dict(beta=-1), dict(beta_fraction=0.5), dict(beta_fraction=-0.1), dict(beta_fraction=1.2)]:
        with pytest.raises(ValueError, match=r"^beta must be >= 0 and beta_fraction in \[0, 0.5\)$"):
            get_aggregator("trimmed_mean", **bad)
    ups = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    with pytest.raises(ValueError, match=r"^cannot trim 2 from each end of 4 updates$"):
        get_aggregator("trimmed_mean", beta=2)(ups, None, torch.zeros(1))
    r = get_aggregator("trimmed_mean", beta=1)(ups, None, torch.zeros(1))
    assert r.aggregate.item() == 2.5 and r.info == {"beta": 1}


# ---------------------------------------------------------------- signed service requests


def test_request_freshness_boundaries_and_headers(monkeypatch: pytest.MonkeyPatch):
    import time

    from eth_account import Account

    from bmfl.protocol import signing

    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)
    assert signing.now_ms() == 1_000_000_000
    signing.check_fresh(1_000_000_000 - 300_000)  # exactly the 300 s skew: accepted
    signing.check_fresh(1_000_000_000 + 300_000)
    for off in (300_001, -300_001):
        with pytest.raises(signing.SignatureError, match=r"^timestamp \d+ is more than 300 s from now$"):
            signing.check_fresh(1_000_000_000 + off)
    assert signing.request_message(1, "post", "/x", b"", 5) == signing.request_message(1, "POST", "/x", b"", 5)
    assert "\nPOST /x\n" in signing.request_message(1, "post", "/x", b"", 5)
    account = Account.create()
    headers = signing.signed_headers(account, 7, "POST", "/x", b"{}")
    assert signing.request_signer(7, "post", "/x", b"{}", headers) == account.address
    for missing in (signing.SIGNATURE_HEADER, signing.TIME_HEADER):
        partial = {k: v for k, v in headers.items() if k != missing}
        with pytest.raises(signing.SignatureError, match=r"^missing .* headers$"):
            signing.request_signer(7, "POST", "/x", b"{}", partial)
    with pytest.raises(signing.SignatureError, match=r"is not an integer$"):
        signing.request_signer(7, "POST", "/x", b"{}", {**headers, signing.TIME_HEADER: "soon"})


# ---------------------------------------------------------------- typed verdicts


def _by_first(mapping: dict[float, float]):
    return lambda vectors: torch.tensor([mapping[float(v[0])] for v in vectors], dtype=torch.float64)


def test_rule_verdicts_come_from_the_weights_unless_already_set():
    from bmfl.aggregation import AggregationResult, Verdict

    ups = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [50.0, 50.0]])
    result = get_aggregator("krum", f=1)(ups, None, torch.zeros(2))
    picked = int(result.weights.argmax())
    for i, verdict in enumerate(result.verdicts):
        expected = Verdict(1.0, False, None, None) if i == picked else Verdict(0.0, True, "rule:krum", None)
        assert verdict == expected and verdict.kept == (i == picked)
    preset = AggregationResult(torch.zeros(2), torch.tensor([0.0]), {}, [Verdict(0.0, True, "filter:x", -1.0)])
    assert preset.with_rule_verdicts("krum").verdicts == [Verdict(0.0, True, "filter:x", -1.0)]


def test_a_filter_sets_flagged_verdicts_with_reliability_and_keeps_its_diagnostics():
    from bmfl.aggregation import Verdict

    ref = torch.tensor([1.0, 1.0])
    ups = torch.tensor([[1.5, 1.0], [3.0, 1.0], [1.25, 1.0]])  # D = 0.25, 4, 0.0625 (raw)
    ev = _by_first({1.5: 0.75, 3.0: 0.5, 1.25: 0.5})
    sr = get_filter("self_reliability", evaluate=ev, threshold=0.5, normalize="none")  # Λ = 1.5α − D at r = 1
    result = compose(get_aggregator("fedavg"), sr)(ups, torch.tensor([1.0, 1.0, 3.0]), ref)
    assert result.verdicts == [
        Verdict(0.25, False, None, 0.875, 0.5), Verdict(0.0, True, "filter:self_reliability", -3.25, 0.5),
        Verdict(0.75, False, None, 0.6875, 0.5),
    ]  # the threshold T_Λ travels with Λ
    assert result.info["keep"].tolist() == [True, False, True] and result.info["rule"] == {}
    nothing = compose(get_aggregator("fedavg"), sr)(ups[1:2], None, ref)
    assert nothing.verdicts == [Verdict(0.0, True, "filter:self_reliability", -3.25, 0.5)]
    assert nothing.info["keep"].tolist() == [False] and torch.equal(nothing.aggregate, ref)


def test_nested_filters_name_the_first_that_rejects_and_carry_reliability_through():
    from bmfl.aggregation import Verdict

    ref = torch.tensor([1.0, 1.0])
    ups = torch.tensor([[1.5, 1.0], [1.25, 1.0], [1.125, 1.0], [900.0, 1.0]])
    ev = _by_first({1.5: 0.75, 1.25: 0.5, 1.125: 0.5, 900.0: 1.0})
    sr = get_filter("self_reliability", evaluate=ev, threshold=-1e9, normalize="none")  # keeps all
    l2 = get_filter("l2_norm", c1=2.0, c2=400.0)
    outer_l2 = compose(get_aggregator("fedavg"), l2, sr)(ups, None, ref)
    assert outer_l2.verdicts[3] == Verdict(0.0, True, "filter:l2_norm", None)  # never scored by Λ
    assert [v.reliability for v in outer_l2.verdicts[:3]] == [0.875, 0.6875, 0.734375]
    outer_sr = compose(get_aggregator("fedavg"), sr, l2)(ups, None, ref)
    assert outer_sr.verdicts[3].reason == "filter:l2_norm" and outer_sr.verdicts[3].flagged
    assert outer_sr.verdicts[3].reliability == 1.5 * 1.0 - 899.0**2  # Λ from the outer filter is kept
    assert [v.reliability for v in outer_sr.verdicts[:3]] == [0.875, 0.6875, 0.734375]
    assert [v.theta for v in outer_sr.verdicts] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])


def test_with_two_reliability_filters_the_innermost_lambda_is_recorded():
    ref = torch.tensor([1.0, 1.0])
    ups = torch.tensor([[1.5, 1.0]])  # α = 0.75, D = 0.25 (raw), r = 1
    ev = _by_first({1.5: 0.75})
    outer = get_filter("self_reliability", evaluate=ev, threshold=-1e9, normalize="none")  # Λ = 1.5·0.75 − 0.25
    inner = get_filter("self_reliability", evaluate=ev, chi=3.0, threshold=-1e9, normalize="none")  # Λ = 4·0.75 − 0.25
    (verdict,) = compose(get_aggregator("fedavg"), outer, inner)(ups, None, ref).verdicts
    assert verdict.reliability == 2.75 and not verdict.flagged
