"""Each vehicle's standing in a task (``bmfl.rounds.standing``, docs/algorithms.md §8.10):
the clipped one-sided sum of its leave-out scores, known answers for the rule, the scores
``leave_out`` gives, the round core barring a vehicle over several rounds, the chain's
record as the standing's only store, a standing that follows its vehicle from edge to
edge, the task's validation and the white-box attacker that keeps itself under the limit."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from rich.console import Console

from bmfl.aggregation import Verdict, compose, get_aggregator
from bmfl.filters import get_filter
from bmfl.incentives import to_fixed
from bmfl.reproduce import robustness
from bmfl.reproduce.grid import BMFL_TRAINING
from bmfl.rounds import aggregate_edge
from bmfl.rounds.edge import PublisherTestLoss
from bmfl.rounds.standing import BARRED, StandingRule, Standings, task_standings
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.task import AggregationSpec, StandingSpec, TaskDraft
from chain.records import RECORD_BYTES, TrainerRecord, pack_records
from chain.tasks import RecordedRound, RoundLog, standings_before
from test_leave_out import NOISE, SIZES, _filter, _side_and_honest, _task, _two_attackers, _white_box_view


def test_the_standing_adds_clipped_scores_less_the_drift_and_never_goes_below_zero():
    rule = StandingRule(drift=0.5, relief=1.0, cap=3.0, limit=5.0)
    assert rule.advance(0.0, 2.0) == 1.5
    assert rule.advance(1.5, 40.0) == 4.0  # one round adds at most cap − drift
    assert rule.advance(4.0, -30.0) == 2.5  # and takes off at most relief + drift
    assert rule.advance(0.2, -0.1) == 0.0  # one-sided: no credit banked
    assert rule.advance(0.0, 0.1234567) == 0.0 and rule.advance(1.0, 0.1234567891) == 0.623457  # the record's 10⁻⁶
    with pytest.raises(ValueError):
        StandingRule(drift=0.5, cap=0.5)


def test_standings_bar_over_the_limit_and_advance_uploads_the_test_scored_and_barred_ones():
    standings = Standings(StandingRule(limit=5.0), {1: 5.5, 2: 1.0, 3: 4.0, 5: 5.2})
    assert standings.barred([1, 2, 3, 4]) == {1: Verdict(0.0, True, BARRED, -5.5, -5.0)}
    after = standings.after({
        1: Verdict(0.0, True, BARRED, -5.5, -5.0),  # serves its bar: a score of 0, less the drift
        5: Verdict(0.0, True, BARRED, -5.2, -5.0),
        2: Verdict(0.4, False, None, -2.7, -3.0),  # kept, scored x = 2.7 by leave-out
        3: Verdict(0.0, True, "filter:leave_out", -9.0, -3.0),  # dropped by it: x = 9, clipped at 3
        4: Verdict(0.0, True, "filter:dp_envelope"),  # never reached the test
    })  # fmt: skip
    assert {v: -x.reliability for v, x in after.items()} == {1: 5.0, 5: 4.7, 2: 3.2, 3: 6.5, 4: 0.0}
    assert after[2].theta == 0.4 and not after[2].flagged and after[3].reason == "filter:leave_out"
    assert all(x.threshold == -5.0 for x in after.values())
    assert standings.barred_after(after) == {3}  # 1 and 5 are back at the limit: their next upload is judged


def _score(first: dict, group: tuple[int, ...]) -> float:
    """A group's score in a pass: (improvement − 3 standard errors) / (margin / 3)."""
    i = first["groups"].index(group)
    return float((first["gain"][i] - 3 * first["se"][i]) / (first["margin"][i] / 3))


def test_leave_out_scores_uploads_alone_unless_they_harm_alone_with_others_that_do():
    model, test, ref, _, _, _, uploads = _two_attackers()  # attackers at 2 and 5
    res = _filter(model, test)(uploads, SIZES, ref)
    first, x = res.info["passes"][0], -res.reliability
    assert (0, 1, 3, 4) in first["groups"] and _score(first, (0, 1, 3, 4)) < _score(first, (0,)) < 0
    for m in (0, 1, 3, 4):  # each helps alone: scored alone, not with the look-alikes it helps with
        assert float(x[m]) == pytest.approx(_score(first, (m,))) and float(x[m]) < 0
    assert _score(first, (2,)) > 0 and _score(first, (5,)) > 0  # each attacker harms alone: judged as the pair
    assert float(x[2]) == float(x[5]) == pytest.approx(_score(first, (2, 5))) and float(x[2]) > 3
    assert res.threshold == -3.0


def test_an_upload_that_helps_alone_is_not_scored_with_a_harmful_look_alike():
    """An attacker whose signal points an honest upload's way (a look-alike, cos ≥ 0.5)
    and harms: the honest upload is scored alone, so the attacker cannot raise its
    standing; the attacker is scored alone too (its group holds an upload that helps)."""
    model, test, ref, descent = _task()
    side, honest, g = _side_and_honest(ref, descent)
    resembling = ref + 0.2 * descent + 2.0 * side  # helps, and points the attackers' way
    attackers = ref - 1.5 * descent + 2.0 * side + NOISE * torch.randn(2, ref.numel(), generator=g)
    res = _filter(model, test)(torch.cat([honest, resembling[None], attackers]), torch.full((7,), float(SIZES[0])), ref)
    first, x = res.info["passes"][0], -res.reliability
    assert (4, 5, 6) in first["groups"] and _score(first, (4, 5, 6)) > 3 and _score(first, (4,)) < 0
    assert float(x[4]) == pytest.approx(_score(first, (4,)))
    assert (5, 6) not in first["groups"]  # each attacker's look-alikes include the honest upload 4
    assert float(x[5]) == pytest.approx(_score(first, (5,))) and float(x[5]) > 3  # alone, not with 4


def _rounds(standing: Standings | None, rounds: int):
    """``rounds`` closes of the same six uploads on the logistic task, the attackers at 2
    and 5 pushing just against the descent: each round's verdicts, the standing carried."""
    model, test, ref, _, _, _, stacked = _two_attackers(push=0.03)
    rule = compose(get_aggregator("noise_weighted", training=dict(BMFL_TRAINING)),
                   get_filter("leave_out", test_loss=PublisherTestLoss(model, test), training=dict(BMFL_TRAINING)))  # fmt: skip
    uploads = dict(enumerate(stacked))
    sizes = {v: int(SIZES[v]) for v in uploads}
    out = []
    for r in range(1, rounds + 1):
        outcome = aggregate_edge(rule, uploads, sizes, ref, r, standing=standing)
        out.append(outcome.verdicts)
        if standing is not None:
            standing = Standings(standing.rule, {v: -x.reliability for v, x in outcome.verdicts.items()})
    return out


def test_uploads_each_round_lets_through_are_barred_once_their_scores_add_up():
    """The attackers score x = 1.76 and 2.94 (< z = 3: every round's test keeps them); each
    round adds x − 0.5 to their standing, which passes 5 after round 4 (1.26 a round; once
    the other is barred its score moves a little) and after round 3 (2.44 a round): they are
    flagged ``standing`` from rounds 5 and 4, before the filters run, and each barred round
    takes the drift off their standing. Honest uploads score about −52 and their standing
    stays 0."""
    plain = _rounds(None, 1)[0]
    x = {v: -plain[v].reliability for v in (2, 5)}
    assert x[2] == pytest.approx(1.759, abs=1e-3) and x[5] == pytest.approx(2.939, abs=1e-3)
    rounds = _rounds(Standings(StandingRule()), 5)
    assert [[v for v, verdict in verdicts.items() if verdict.flagged] for verdicts in rounds] == [[], [], [], [5], [2, 5]]
    for v, last in ((2, 4), (5, 3)):
        standing = [-rounds[r][v].reliability for r in range(5)]
        assert standing[:3] == pytest.approx([(r + 1) * (x[v] - 0.5) for r in range(3)], abs=1e-5)
        # barred: no more evidence, and the standing falls by the drift per round served
        assert standing[last - 1] > 5 and standing[last:] == pytest.approx([standing[last - 1] - 0.5 * (r + 1) for r in range(5 - last)])
        assert rounds[last][v].reason == BARRED and rounds[last][v].theta == 0.0
    assert all(-verdicts[v].reliability == 0.0 for verdicts in rounds for v in (0, 1, 3, 4))
    assert sum(verdict.theta for verdict in rounds[4].values()) == pytest.approx(1.0)
    # without a standing the same attackers are kept in every round: no single round sees them
    assert not any(verdict.flagged for verdict in plain.values())


def _recorded(edge: int, round_: int, standings: dict[int, float]) -> RecordedRound:
    """A ``recordRound`` whose records carry Λ = −standing."""
    records = [TrainerRecord(vehicle=v, update_digest=bytes(32), reliability=-to_fixed(s), theta=0, malicious=False,
                             signature=bytes(65)) for v, s in standings.items()]  # fmt: skip
    packed = pack_records(records)
    return RecordedRound(edge=edge, round=round_, preliminary_digest=bytes(32), preliminary_cid="", samples=0,
                         entry=RoundLog(round=round_, root=bytes(32), count=len(records), theta_total=0),
                         records=[packed[i : i + RECORD_BYTES] for i in range(0, len(packed), RECORD_BYTES)],
                         manifest_cid="", tx_hash="0x")  # fmt: skip


def test_the_chain_holds_the_standings_each_edge_and_auditor_start_from():
    recorded = [_recorded(0, 1, {1: 2.5, 2: 0.0}), _recorded(1, 1, {3: 9.0}), _recorded(0, 2, {1: 5.0}),
                _recorded(1, 3, {2: 1.5, 3: 4.0}), _recorded(0, 4, {2: 0.5}), _recorded(1, 4, {2: 2.0})]  # fmt: skip
    assert standings_before(recorded, 1) == {}
    assert standings_before(recorded, 2) == {1: 2.5, 2: 0.0, 3: 9.0}
    assert standings_before(recorded, 3) == {1: 5.0, 2: 0.0, 3: 9.0}  # each vehicle's latest record
    # vehicles 2 and 3 handed over to edge 1: their records there carry on, lower or higher
    assert standings_before(recorded, 4) == {1: 5.0, 2: 1.5, 3: 4.0}
    # two records of vehicle 2 in round 4 (two edges): the higher, whatever the chain's order
    assert standings_before(recorded, 5) == standings_before(recorded[::-1], 5) == {1: 5.0, 2: 2.0, 3: 4.0}


def test_a_barred_vehicle_stays_barred_at_every_edge_it_drives_to():
    """Median-aware attackers (40 %, Dirichlet(0.9), the default's training and pipeline) on
    a 1 km ring road at 100–300 m/s, so that vehicles change edge most rounds: each round's
    test drops them (x over its cap, 3), so their standing passes 5 in round 3. From then on
    every upload of theirs is flagged ``standing`` at whichever edge it reaches, with the
    standing it left its last edge with, less the drift; every honest vehicle's standing also carries over
    its handovers (the simulator's copy of what the edges read back from the chain)."""
    scale = robustness.Scale("t", "mnist_5k", 10, 2, 5, 2, 300, (0.4,), (0,), ("median-aware",),
                             ("Envelope+SMmaj+LO(0.2×2.5)+NW+R(0.05)+St",), ("Dirichlet(0.9)",), "private")  # fmt: skip
    run = next(r for r in robustness.matrix(scale) if "median-aware" in r.key)
    road = {"kind": "mobility", "road_length_m": 1000.0, "speed_mps": (100.0, 300.0), "round_seconds": 30.0}
    result = run_simulation(SimulationConfig.model_validate({**run.config, "assignment": road}), Console(quiet=True))
    rule = StandingRule()
    seen: dict[int, tuple[int, float]] = {}  # vehicle → (its edge, its standing) after its last upload
    moved_barred = 0
    for metrics in result.rounds:
        for up in metrics.uploads:
            v, standing = up["vehicle"], -up["reliability"]
            edge, before = seen.get(v, (up["edge"], 0.0))
            if before > rule.limit:
                assert up["flagged"] and up["reason"] == BARRED and standing == before - rule.drift, (metrics.round, up)
                moved_barred += edge != up["edge"]
            elif up["reason"] is None or up["reason"] == "filter:leave_out":
                assert standing <= before + rule.cap - rule.drift + 1e-6 and standing >= max(0.0, before - rule.relief - rule.drift) - 1e-6
            seen[v] = (up["edge"], standing)
    barred = {v for v, (_, standing) in seen.items() if standing > rule.limit}
    assert barred == set(result.attackers) and moved_barred > 0
    assert sum(m.handovers for m in result.rounds) > 10


def test_a_task_keeps_standings_only_behind_leave_out_with_dp_and_synchronous_rounds():
    spec = AggregationSpec(standing=StandingSpec())
    assert spec.describe().startswith("dp_envelope+signal_median+leave_out+noise_weighted+standing /")
    assert task_standings(TaskDraft(aggregation=AggregationSpec()), {}) is None
    assert task_standings(TaskDraft(aggregation=spec), {4: 1.0}) == Standings(StandingRule(0.5, 1.0, 3.0, 5.0), {4: 1.0})
    for fields in ({"training": {"dp": False}}, {"asynchrony": {"mode": "async"}}):  # no scores in DP noise units
        assert task_standings(TaskDraft(aggregation=spec, **fields), {4: 9.0}) is None
    for filters in ([{"name": "dp_envelope"}], [{"name": "leave_out"}, {"name": "accuracy_test"}], []):
        with pytest.raises(ValidationError, match="standing_without_leave_out"):  # its scores are leave-out's alone
            AggregationSpec(standing=StandingSpec(), filters=filters)
    with pytest.raises(ValidationError, match="standing_cap_below_drift"):
        StandingSpec(drift=1.0, cap=1.0)


def test_the_white_box_attacker_stays_under_the_limit_when_the_edge_keeps_standings():
    """An edge that would bar the attackers for any push beyond half the envelope's step
    gets a push of at most that: a push that ends their stay counts for nothing."""
    from test_signal_median import D, TRAINING

    sizes = torch.full((10,), 1000.0)
    mean = get_aggregator("noise_weighted", training=TRAINING)
    pushes: list[float] = []

    def push(attack, view, u, bars=None) -> float:
        view.edge_bars = bars
        noise = torch.randn((2, D), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * attack._push.variance**0.5
        return float(-((attack.collude(view).double() - noise) @ u.double()).mean())

    full = push(*_white_box_view(lambda up: mean.aggregate(up, sizes, torch.zeros(D)).aggregate))
    attack, view, u = _white_box_view(lambda up: mean.aggregate(up, sizes, torch.zeros(D)).aggregate)
    bound = 0.5 * attack._push.step

    def bars(sent: torch.Tensor, serving: int = 0) -> int:
        noise = torch.randn((2, D), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * attack._push.variance**0.5
        pushes.append(float(-((sent.double() - noise) @ u.double()).mean()))
        return serving + 2 * (pushes[-1] > bound)

    kept = push(attack, view, u, bars)
    assert full == pytest.approx(attack._push.step, rel=1e-6) and 0.99 * bound < kept <= bound
    assert max(pushes) > bound  # it tried farther and was told it would be barred
    # one colluder serves a bar whatever they send: the other still pushes to the bound
    assert 0.99 * bound < push(attack, view, u, lambda sent: bars(sent, serving=1)) <= bound
