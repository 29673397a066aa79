"""The round core (bmfl.rounds): known answers and invariants of each step that the
simulator, the edges and the cloud share."""

from __future__ import annotations

import pytest
import torch

from bmfl.aggregation import Verdict
from bmfl.data import load_dataset
from bmfl.filters import UpdateFilter, accuracy_evaluator
from bmfl.filters.base import FilterResult
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.rounds import (
    NOT_APPLICABLE,
    aggregate_cloud,
    aggregate_edge,
    build_rule,
    cloud_rule,
    edge_rule,
    upper_median,
    medians_and_leader,
    select_trainers,
)
from bmfl.filters.dp_floor import noise_variance
from bmfl.privacy import COUNT_NOISE
from bmfl.task import AggregationSpec, RuleSpec, TrainingSpec

REWEIGHT = RuleSpec(name="reweight")  # the filter tests below run behind the paper's rule, which needs nothing


def test_selection_is_seeded_stateless_and_takes_the_ceiling() -> None:
    candidates = list(range(10))
    picked = select_trainers(candidates, 0.25, 7, 1, 1, 0)
    assert len(picked) == 3 and picked == sorted(picked) and set(picked) <= set(candidates)
    assert picked == select_trainers(candidates[::-1] + [3], 0.25, 7, 1, 1, 0)  # order and repeats do not matter
    assert {tuple(select_trainers(candidates, 0.25, 7, 1, 1, e)) for e in range(5)} != {tuple(picked)}
    assert {tuple(select_trainers(candidates, 0.25, 7, 1, r, 0)) for r in range(1, 6)} != {tuple(picked)}
    assert select_trainers([], 1.0, 7, 1, 1, 0) == [] and select_trainers(candidates, 1.0, 7, 1, 1, 0) == candidates


def _mnist_updates() -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    reference = flatten(create_model("bmfl_cnn").state_dict())
    generator = torch.Generator().manual_seed(0)
    honest = {v: reference + 1e-3 * torch.randn(reference.shape, generator=generator) for v in (2, 5, 9)}
    return reference, {**honest, 7: torch.full_like(reference, 100.0)}


@pytest.mark.parametrize("order", [("l2_norm", "self_reliability"), ("self_reliability", "l2_norm")])
def test_verdicts_name_the_filter_and_carry_reliability(order: tuple[str, str]) -> None:
    test = load_dataset("mnist")[1].subset(list(range(100)))
    reference, uploads = _mnist_updates()
    spec = AggregationSpec(edge=REWEIGHT, filters=[RuleSpec(name=name) for name in order])
    rule = edge_rule(spec, accuracy_evaluator(create_model("bmfl_cnn"), test))
    outcome = aggregate_edge(rule, uploads, {2: 10, 5: 20, 7: 30, 9: 40}, reference, 1)
    assert list(outcome.verdicts) == [2, 5, 7, 9]
    bad = outcome.verdicts[7]
    assert bad.flagged and bad.theta == 0.0 and bad.reason == f"filter:{order[0]}"
    assert (bad.reliability is None) == (order[0] == "l2_norm")  # Λ only where the reliability filter scored it
    kept = [outcome.verdicts[v] for v in (2, 5, 9)]
    assert not any(v.flagged for v in kept) and all(v.reliability is not None for v in kept)
    assert sum(v.theta for v in kept) == pytest.approx(1.0)
    assert outcome.samples == 10 + 20 + 20  # the kept uploads' data, each size capped at their median (20)


def test_the_edge_step_does_not_depend_on_arrival_order() -> None:
    reference, uploads = _mnist_updates()
    rule = edge_rule(AggregationSpec(edge=REWEIGHT, filters=[RuleSpec(name="l2_norm")]), None)
    sizes = {2: 10, 5: 20, 7: 30, 9: 40}
    forward = aggregate_edge(rule, uploads, sizes, reference, 3)
    backward = aggregate_edge(rule, dict(reversed(list(uploads.items()))), sizes, reference, 3)
    assert torch.equal(forward.preliminary, backward.preliminary) and forward.verdicts == backward.verdicts


def test_non_finite_excluded_and_inapplicable_uploads_are_flagged_with_their_reason() -> None:
    reference = torch.zeros(4)
    uploads = {1: torch.ones(4), 2: torch.full((4,), float("nan")), 3: 2 * torch.ones(4)}
    rule = build_rule(RuleSpec(name="fedavg"), [], {})
    outcome = aggregate_edge(rule, uploads, {1: 1, 2: 1, 3: 3, 4: 5}, reference, 1, excluded={4: "ideal_filter"})
    assert outcome.verdicts[2] == Verdict(0.0, True, "non_finite")
    assert outcome.verdicts[4] == Verdict(0.0, True, "ideal_filter")
    assert torch.allclose(outcome.preliminary, torch.full((4,), 1.75)) and outcome.samples == 1 + 1  # capped at the lower median
    trimmed = build_rule(RuleSpec(name="trimmed_mean", options={"beta": 2}), [], {})
    silent = aggregate_edge(trimmed, {1: torch.ones(4), 3: torch.ones(4)}, {1: 1, 3: 1}, reference, 1)
    assert silent.preliminary is None and {v.reason for v in silent.verdicts.values()} == {NOT_APPLICABLE}
    assert aggregate_edge(rule, {}, {}, reference, 1).preliminary is None


def test_rule_exclusions_are_flagged_by_the_rule() -> None:
    reference = torch.zeros(3)
    uploads = {v: torch.full((3,), float(v)) for v in range(5)}
    uploads[4] = torch.full((3,), 50.0)
    krum = build_rule(RuleSpec(name="krum", options={"f": 1}), [], {})
    outcome = aggregate_edge(krum, uploads, dict.fromkeys(uploads, 1), reference, 1)
    chosen = [v for v, verdict in outcome.verdicts.items() if not verdict.flagged]
    assert len(chosen) == 1 and outcome.verdicts[4] == Verdict(0.0, True, "rule:krum")


class _Rejects(UpdateFilter):
    needs = frozenset({"evaluate"})

    def __init__(self, evaluate) -> None:
        self.evaluate = evaluate

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        return FilterResult(torch.zeros(len(updates), dtype=torch.bool))


def test_filters_get_what_they_declare_and_are_refused_without_it() -> None:
    with pytest.raises(ValueError, match="'leave_out' needs evaluate, test_loss"):
        edge_rule(AggregationSpec(), None, training=TrainingSpec(), count_noise=0.0)  # the default's leave-out testing
    with pytest.raises(ValueError, match="needs evaluate"):
        edge_rule(AggregationSpec(edge=REWEIGHT, filters=[RuleSpec(name="self_reliability")]), None)
    with pytest.raises(ValueError, match="needs count_noise, training"):
        edge_rule(AggregationSpec(), lambda v: v)  # the default DP envelope needs the task's training
    with pytest.raises(ValueError, match="supplied by the round"):
        edge_rule(AggregationSpec(edge=REWEIGHT, filters=[RuleSpec(name="self_reliability", options={"evaluate": 1})]), lambda v: v)
    with pytest.raises(KeyError, match="unknown filter"):
        edge_rule(AggregationSpec(edge=REWEIGHT, filters=[RuleSpec(name="no_such_filter")]), None)
    from bmfl.filters.base import FILTERS, register_filter

    register_filter("test_rejects")(_Rejects)
    try:
        rule = edge_rule(AggregationSpec(edge=REWEIGHT, filters=[RuleSpec(name="test_rejects")]), lambda v: v)
        outcome = aggregate_edge(rule, {1: torch.ones(2)}, {1: 4}, torch.zeros(2), 1)
    finally:
        del FILTERS._factories["test_rejects"]
    # everything flagged: w_ℓ = w^{r-1} with no data behind it
    assert torch.equal(outcome.preliminary, torch.zeros(2)) and outcome.samples == 0
    assert outcome.verdicts[1].reason == "filter:test_rejects"


def test_upper_median_of_the_other_edges_and_the_leader_match_the_contracts_rule() -> None:
    assert upper_median([5]) == 5 and upper_median([9, 1]) == 9 and upper_median([3, 9, 1, 7]) == 7
    rows = {0: {0: 900, 1: 800, 2: 100}, 1: {0: 0, 1: 800, 2: 700}, 2: {0: 900, 1: 850, 2: 700}}
    consensus = medians_and_leader(rows)
    assert consensus is not None
    medians, leader = consensus
    # edge 0 by edges 1 and 2: [0, 900] → 900; its own 900 does not count; edge 1: [800, 850]
    assert medians == {0: 900, 1: 850, 2: 700} and leader == 0
    tied = medians_and_leader({e: {1: 5, 3: 5, 4: 5} for e in (1, 3, 4)})
    assert tied == ({1: 5, 3: 5, 4: 5}, 1)  # ties to the smallest index
    # two edges: the lower one would be the liar's word alone, so there is no consensus
    assert medians_and_leader({0: {0: 900, 1: 0}, 1: {0: 0, 1: 900}}) is None
    with pytest.raises(ValueError, match="without recording"):
        medians_and_leader({0: {1: 5, 3: 5}})  # only recording edges score
    with pytest.raises(ValueError):
        medians_and_leader({0: {0: 1}, 1: {1: 1}})


def test_the_cloud_weights_edges_by_their_data_and_skips_edges_without_any() -> None:
    rule = cloud_rule(AggregationSpec())
    prelims = {0: torch.zeros(2), 1: torch.ones(2), 2: torch.full((2,), 9.0)}
    outcome = aggregate_cloud(rule, prelims, {0: 1, 1: 3, 2: 0}, torch.zeros(2), 1)
    assert torch.allclose(outcome.model, torch.full((2,), 0.75)) and outcome.weights == {0: 0.25, 1: 0.75}
    assert aggregate_cloud(rule, prelims, {0: 0, 1: 0, 2: 0}, torch.zeros(2), 1) is None


def test_the_dp_filters_judge_uploads_by_the_tasks_own_training() -> None:
    """The round core supplies the task's calibrated training spec (``needs``), so a
    task's filters cannot disagree with its training: uploads carrying exactly the noise
    of σ = 2 pass the envelope built for σ = 2, and the same uploads are too large for
    a task that states σ = 0.5; a noiseless one is flagged either way."""
    spec = AggregationSpec(edge=RuleSpec(name="fedavg"), filters=[RuleSpec(name="dp_envelope")])
    with pytest.raises(ValueError, match="supplied by the round"):
        edge_rule(spec.model_copy(update={"filters": [RuleSpec(name="dp_envelope", options={"training": {}})]}), None,
                  training=TrainingSpec(), count_noise=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="needs count_noise"):
        edge_rule(spec, None, training=TrainingSpec())
    with pytest.raises(ValueError, match="calibrated"):
        edge_rule(spec, None, training=TrainingSpec(target_epsilon=8.0, plan_samples=200), count_noise=0.0)
    n, d = 200, 20_000
    task = TrainingSpec(epochs=1, max_steps=3, batch_size=64, lr=0.3, momentum=0.5, noise_multiplier=2.0)
    std = noise_variance(task.local(), n) ** 0.5
    g = torch.Generator().manual_seed(0)
    uploads = {v: std * torch.randn(d, generator=g, dtype=torch.float64).float() for v in range(4)}
    uploads[4] = torch.zeros(d)  # no DP noise at all
    sizes = dict.fromkeys(uploads, n)
    reference = torch.zeros(d)
    same = aggregate_edge(edge_rule(spec, None, training=task, count_noise=0.0), uploads, sizes, reference, 1)
    assert [v for v, verdict in same.verdicts.items() if verdict.flagged] == [4]
    quieter = task.model_copy(update={"noise_multiplier": 0.5})
    other = aggregate_edge(edge_rule(spec, None, training=quieter, count_noise=0.0), uploads, sizes, reference, 1)
    assert all(verdict.flagged for verdict in other.verdicts.values())


def test_the_envelope_keeps_honest_vehicles_whose_declared_count_is_noisy() -> None:
    """In the services a vehicle registers its data size with DP noise (σ_c =
    COUNT_NOISE), and the number of DP-SGD steps, hence its noise, follows from its true
    size. An honest vehicle with 300 samples (5 steps of B = 64) that declared 350 (6
    steps) carries less noise than 350 samples would: with exact sizes it is flagged, with
    the count's noise supplied by the round core it is kept, and an upload with no noise
    is still flagged."""
    spec = AggregationSpec(edge=RuleSpec(name="fedavg"), filters=[RuleSpec(name="dp_envelope")])
    task = TrainingSpec(epochs=1, batch_size=64, lr=0.3, momentum=0.5, noise_multiplier=2.0)
    d, true_size, declared = 20_000, 300, 350
    std = noise_variance(task.local(), true_size) ** 0.5
    g = torch.Generator().manual_seed(1)
    uploads = {v: std * torch.randn(d, generator=g, dtype=torch.float64).float() for v in range(4)}
    uploads[4] = torch.zeros(d)
    sizes = dict.fromkeys(uploads, declared)
    exact = aggregate_edge(edge_rule(spec, None, training=task, count_noise=0.0), uploads, sizes, torch.zeros(d), 1)
    assert all(verdict.flagged for verdict in exact.verdicts.values())
    counted = aggregate_edge(edge_rule(spec, None, training=task, count_noise=COUNT_NOISE), uploads, sizes,
                             torch.zeros(d), 1)  # fmt: skip
    assert [v for v, verdict in counted.verdicts.items() if verdict.flagged] == [4]
