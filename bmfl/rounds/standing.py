"""A vehicle's standing in a task: leave-out testing's evidence carried from round to
round and from edge to edge (issue 17; docs/algorithms.md §8.10).

One round's leave-out test (``bmfl.filters.leave_out``) lets through any harm below its
resolution, and attackers who know the defence send exactly that, round after round.
Each round the test scores every upload it judges, x = (improvement from leaving the
upload out, with the look-alikes that harm alone too when it harms alone, − z standard
errors) / the standard deviation of what their DP noise moves the test loss by
(``LeaveOut._scores``): about N(≤ 0, 1) for an honest upload, which helps or does
nothing, and up to z for the attacker who stays just inside the round's test. The task
keeps a one-sided cumulative sum (CUSUM; Page 1954) of the clipped scores per vehicle,

    S_r = max(0, S_{r−1} + clip(x_r, −``relief``, ``cap``) − ``drift``),

and bars a vehicle whose S exceeds ``limit`` at every edge (its uploads are flagged
``standing`` before the filters run): a vehicle chooses its edge (it signs its own
association), so a standing kept per edge would be shed by handing over to another.
An attacker kept under the limit must hold x to about ``drift`` on average instead of z:
its harm is then bounded by z standard errors of the test set plus half a noise deviation
a round, instead of z of each. The clip keeps one round from deciding: an honest upload
measured far above z once (a round in which its classes are over-represented at the
edge) adds at most ``cap``, and a push measured as helpful once cannot pay back more than
``relief`` of earlier harm. A barred upload counts as a score of 0, so S falls by the
drift for each round the vehicle serves barred, and it returns once S is back at the
limit: an honest vehicle that a run of unlucky rounds pushed over it is out for a few
rounds, not for the rest of a long task, and the bound stays (whatever a vehicle does,
the clipped scores of its accepted uploads sum to at most drift × its rounds + limit +
cap).

S is recorded on chain as the record's Λ (as −S, so that higher is better, with −``limit``
its threshold). So every edge starts a round from the vehicle's latest record, at whatever
edge, and resumes from the chain after a restart; an auditor recomputes each S from the
vehicle's record before it and a re-executed score (``chain.tasks.standings_before``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bmfl.aggregation.base import Verdict
from bmfl.incentives import SCALE, to_fixed
from bmfl.task import TaskDraft

BARRED = "standing"
"""The verdict reason of an upload from a vehicle the edge has barred."""
SCORED_BY = "filter:leave_out"
"""The filter whose Λ is the round's score (kept uploads carry it too)."""


@dataclass(frozen=True)
class StandingRule:
    """``drift`` k, the score per round a vehicle may keep without its standing growing;
    ``relief`` and ``cap``, the clip of one round's score; ``limit`` h, the standing above
    which it is barred."""

    drift: float = 0.5
    relief: float = 1.0
    cap: float = 3.0
    limit: float = 5.0

    def __post_init__(self) -> None:
        if not (self.drift > 0 and self.relief >= 0 and self.cap > self.drift and self.limit > 0):
            raise ValueError("need drift > 0, relief >= 0, cap > drift and limit > 0")

    def advance(self, standing: float, score: float) -> float:
        """S after a round scored ``score``, in the record's fixed point (what the next
        round reads back from the chain)."""
        raised = max(0.0, standing + min(max(score, -self.relief), self.cap) - self.drift)
        return to_fixed(raised) / SCALE


@dataclass(frozen=True)
class Standings:
    """What an edge knows before closing a round: the rule and each vehicle's standing
    after its latest record in the task, at any edge (absent: 0)."""

    rule: StandingRule
    before: Mapping[int, float] = field(default_factory=dict)

    def of(self, vehicle: int) -> float:
        return self.before.get(vehicle, 0.0)

    def barred(self, vehicles) -> dict[int, Verdict]:
        """The flagged verdicts of ``vehicles`` whose standing exceeds the limit."""
        return {v: self._verdict(v, 0.0, True, BARRED) for v in vehicles if self.of(v) > self.rule.limit}

    def after(self, verdicts: Mapping[int, Verdict]) -> dict[int, Verdict]:
        """``verdicts`` with Λ = −S after this round: advanced by the leave-out score of
        each upload the test judged (Λ = −x, the filter's convention), by a score of 0 for
        a barred upload (its standing falls by the drift: it serves its bar), unchanged for
        the others (flagged before the test)."""
        out = {}
        for v, verdict in verdicts.items():
            score = None
            if verdict.reason == BARRED:
                score = 0.0
            elif verdict.reliability is not None and (not verdict.flagged or verdict.reason == SCORED_BY):
                score = -verdict.reliability
            standing = self.of(v) if score is None else self.rule.advance(self.of(v), score)
            out[v] = self._verdict(v, verdict.theta, verdict.flagged, verdict.reason, standing)
        return out

    def _verdict(self, vehicle: int, theta: float, flagged: bool, reason: str | None, standing: float | None = None) -> Verdict:
        value = self.of(vehicle) if standing is None else standing
        return Verdict(theta, flagged, reason, reliability=-value if value else 0.0, threshold=-self.rule.limit)

    def barred_after(self, verdicts: Mapping[int, Verdict]) -> frozenset[int]:
        """The vehicles that ``verdicts`` (from :meth:`after`) bar from the next round on."""
        return frozenset(v for v, x in verdicts.items() if x.reliability is not None and -x.reliability > self.rule.limit)


def task_standings(task: TaskDraft, before: Mapping[int, float]) -> Standings | None:
    """The task's :class:`Standings` given each vehicle's standing ``before`` the round;
    None where the task keeps none: without ``aggregation.standing``, and in
    asynchronous rounds or without DP, where leave-out testing gives no scores in units
    of DP noise."""
    spec = task.aggregation.standing
    if spec is None or not task.training.dp or task.asynchrony.mode != "sync":
        return None
    return Standings(StandingRule(**spec.model_dump()), dict(before))
