"""Leave-out testing: drop an upload when the edge's aggregate is measurably better on
the publisher's test set without it, by more than the upload's DP noise can explain
(issue 17; docs/algorithms.md §8.6).

The filters before this one bound what an upload may look like (its noise, its norm,
its signal's distance from the others'); an attacker inside those bounds still moves
the aggregate against the descent direction, by up to a few honest signals' size
(``median_aware``, ``pipeline_aware``). What it cannot hide is the effect of that move on
the test loss. With A(S) the inverse-noise average of a set S of uploads (weights p_m ∝
1/v_m, ``noise_weighted``, the default rule) and ℓ_i(w) the loss of the publisher's
test example i, the filter computes for every kept upload m the paired differences

    δ_i(m) = ℓ_i(A(S)) − ℓ_i(A(S ∖ {m})),   i = 1 … N,

positive where leaving m out lowers the loss, and drops m when

    mean(δ(m)) − z·sd(δ(m))/√N  >  z·p_m·√v_m·‖∇L(A(S))‖,

L the mean test loss. The left side is the improvement less z standard errors of the
test set's sampling (paired: the candidates differ by one upload, so their losses move
together and the differences' spread is far smaller than the losses'). The right side
is z standard deviations of what m's own DP noise moves L by, to first order: p_m·n_m
with n_m ~ N(0, v_m I) changes L by ∇L·p_m·n_m ~ N(0, p_m² v_m ‖∇L‖²). Without that
margin the test would drop honest uploads for their noise, whose harm is real but
tiny and consistent across examples, so a t statistic alone finds it significant.
After a pass that drops uploads the rest are tested again; a pass that drops nothing,
or one upload left, ends it (all uploads failing: the one whose leave-out helps least
stays). z = 3. The :data:`MAX_PASSES`-th pass is the last: it drops every group whose
harm exceeds its margins, most harmful first, skipping those that share an upload with
one already dropped (fewer than 16 uploads never reach it: each earlier pass drops one).

What it can get wrong: an honest upload is dropped only when its signal, not its noise,
measurably raises the test loss of the edge's aggregate; an attacker is kept when its
harm is within the test's resolution plus its noise allowance. Nothing assumes an honest
majority: each upload is judged by the publisher's data. The test set is used only to
accept or refuse uploads, never to fit the model. Without DP (v = 0) the margin is 0
and honest uploads would be dropped for any measurable harm, and ``signal_median`` and
``dp_envelope`` in front keep every upload too; so for a task that trains without DP the
filter hands the judgement to BMFL's self-reliability test on the same test set
(``self_reliability`` at its defaults, Eq. 11–13, which needs no noise model), and keeps
every upload only where the round supplies no accuracy evaluator.

With ``step`` s < 1 every candidate is judged at w^{r-1} + s·(candidate − w^{r-1}), a
fraction of the edge's step (the noise margin scales with it): for a task whose vehicles'
data are so skewed that one edge's full step overshoots on the classes it lacks (docs
§8.6: with s = 0.2 on complete non-IID data 0.6 % of honest uploads were flagged instead
of 7.5 %, and on Dirichlet data the adaptive attacks kept more of their harm).
``escalation`` g ≥ 1 raises that fraction after rounds the cloud's guard refused (§8.9):
a round that begins k rounds in a row from a restored model (``refusals``, supplied by
the round core from the chain's record of the rounds) is judged at min(1, s·g^k). A
refusal says the edges let through a harm the global model's test accuracy shows; the
next round judges closer to the full step, where that harm is visible to this test.

With ``credit`` [y0, y1] the filter also grants each kept upload a share of its weight by
the evidence that it helps (§8.11): its help score y, the loss's rise when it alone is
left out in the first pass over √(se² + sd²) (the test set's standard error of that rise
and the standard deviation of what its DP noise moves the loss by), gives it
min(1, max(0, (y − y0)/(y1 − y0))) of its weight (``FilterResult.credit``; its delta is
shrunk by that share and its θ, hence its pay, multiplied by it). The drop test bounds
how much an upload may harm; credit asks it to show help. Uploads that train on wrong
labels, send nothing but noise, or push just inside the drop test's allowance help by
nothing measurable each round, and so weigh little or nothing, where without credit
they keep their full weight.

``info`` holds, per pass, the uploads tested, their improvements, standard errors,
margins and the uploads dropped. ``reliability`` (recorded as Λ) is −x, each upload's
score in the first pass (:meth:`LeaveOut._scores`): (improvement − z standard errors) /
the noise's standard deviation, the evidence ``bmfl.rounds.standing`` adds up over rounds. Cost: per pass one test-set evaluation per candidate
group (at most 2K + 1 models), the first with its gradient; a clean round is one pass, and each
further pass drops at least one upload, so a round costs at most min(K, MAX_PASSES)
passes (O(K) evaluations: attackers that would each be dropped in a pass of their own
cannot stretch the close beyond 16 passes), plus two evaluations per dropped upload for
re-admission. The candidates are built 16 at a time,
so beyond the uploads themselves memory holds 16 model vectors whatever K is.
Needs a classification test set (``test_loss``, supplied by the round core) and the
task's training settings (the weights and v_m, as ``noise_weighted`` derives them).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from bmfl.aggregation.noise_weighted import NoiseWeighted
from bmfl.filters.base import FilterResult, UpdateFilter, register_filter
from bmfl.filters.self_reliability import Evaluator, SelfReliabilityFilter
from bmfl.filters.signal_median import SignalMedian
from bmfl.task import TrainingSpec


CHUNK = 16
"""Candidate models built and evaluated at a time (memory: CHUNK model vectors)."""

MAX_PASSES = 16
"""Passes of drop-and-test-again; the last drops every harmful group at once (time: at
most this many passes of 2K + 1 evaluations)."""


def harmful_groups(candidates: list[tuple[int, ...]], excess: torch.Tensor, most: int | None = None) -> tuple[int, ...]:
    """The uploads of the candidate groups with positive ``excess``, most harmful first
    (ties: the earlier group), skipping a group that shares an upload with one already
    taken; at most ``most`` groups (None: every one)."""
    taken: set[int] = set()
    count = 0
    for i in sorted(range(len(candidates)), key=lambda i: -float(excess[i])):
        if float(excess[i]) <= 0 or count == most:
            break
        if not taken & set(candidates[i]):
            taken |= set(candidates[i])
            count += 1
    return tuple(sorted(taken))


class TestLoss(Protocol):
    """The publisher's test set as the filter reads it (``bmfl.rounds.edge.PublisherTestLoss``)."""

    def per_example(self, vectors: torch.Tensor) -> torch.Tensor:
        """(n, N) each test example's loss under each of the n flat model vectors."""

    def losses_and_gradient(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_example(vectors)`` and (d,) the gradient of the mean test loss at ``vectors[0]``."""


def improvements(losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard error) over the N examples of ``losses[0] − losses[j]``, for
    j = 1 … n − 1: how much the loss falls from model 0 to model j, and how precisely
    the test set measures it (the differences are paired by example)."""
    diff = losses[0:1].to(torch.float64) - losses[1:].to(torch.float64)
    n = diff.shape[1]
    se = diff.std(dim=1) / math.sqrt(n) if n > 1 else torch.full((diff.shape[0],), math.inf, dtype=torch.float64)
    return diff.mean(dim=1), se


def look_alikes(h: torch.Tensor, floor: torch.Tensor, similarity: float) -> list[tuple[int, ...]]:
    """The groups the filter leaves out together: each upload alone, and each upload with
    every other whose signal points the same way, cos(s_i, s_j) ≥ ``similarity``, from
    the noise-corrected Gram matrix ``h`` (each energy taken at least ``floor``, the
    correction's error, so that a signal lost in the noise resembles nothing). Distinct
    groups, singletons first."""
    energy = torch.maximum(h.diagonal(), floor).sqrt()
    close = h.to(torch.float64) / (energy[:, None] * energy[None, :]).to(torch.float64) >= similarity
    close.fill_diagonal_(True)
    groups = [(m,) for m in range(h.shape[0])]
    seen = set(groups)
    for row in close:
        group = tuple(row.nonzero().flatten().tolist())
        if len(group) > 1 and group not in seen:
            groups.append(group)
            seen.add(group)
    return groups


@register_filter("leave_out")
class LeaveOut(UpdateFilter):
    """``test_loss`` the publisher's test set (per-example losses and the mean loss's
    gradient), ``training`` and ``count_noise`` the averaging weights' and noise
    variances' inputs (``noise_weighted``), ``z`` the standard errors and noise standard
    deviations a group's harm must exceed to be dropped, ``similarity`` the cosine
    between signals above which uploads are also left out together, ``step`` the
    fraction of the aggregate's step at which contributions are judged, ``escalation`` the
    factor it grows by per refused round before this one (``refusals``: round → how many
    rounds in a row before it the cloud's guard refused), ``evaluate`` the test-set
    accuracy evaluator of the self-reliability test that judges a task without DP,
    ``credit`` [y0, y1] the help scores between which a kept upload's share of its weight
    grows from none to all (None: every kept upload keeps its whole weight; y1 at most z,
    so that help the test finds significant earns the whole weight)."""

    needs = frozenset({"test_loss", "training", "count_noise", "evaluate", "refusals"})

    def __init__(
        self, test_loss: TestLoss, training: TrainingSpec | Mapping[str, Any], count_noise: float = 0.0, z: float = 3.0,
        similarity: float = 0.5, step: float = 1.0, escalation: float = 1.0, evaluate: Evaluator | None = None,
        refusals: Callable[[int], int] | None = None, credit: Sequence[float] | None = None,
    ) -> None:  # fmt: skip
        if z <= 0 or not -1 < similarity <= 1 or not 0 < step <= 1 or not escalation >= 1:
            raise ValueError("need z > 0, similarity in (-1, 1], step in (0, 1] and escalation >= 1")
        if credit is not None and not (len(credit) == 2 and math.isfinite(float(credit[0])) and float(credit[0]) < float(credit[1]) <= z):
            raise ValueError(
                f"credit is [y0, y1] with y0 < y1 <= z = {z}, both finite: no weight at a help score of y0 or less, all of it "
                "from y1, so an upload whose help the test finds significant keeps its whole weight (a publisher cannot set "
                "a y1 that no upload reaches and keep the vehicles' pay)"
            )
        self.step = step
        self.escalation = escalation
        self.credit = None if credit is None else (float(credit[0]), float(credit[1]))
        self.refusals = refusals
        self.test_loss = test_loss
        self.z = z
        self.similarity = similarity
        self._average = NoiseWeighted(training, count_noise)
        self._signals = SignalMedian(training, count_noise, z=z)
        self._without_dp = SelfReliabilityFilter(evaluate) if evaluate is not None else None

    @staticmethod
    def reads_accuracy(training: TrainingSpec) -> bool:
        """Only a task without DP has its uploads scored (by the self-reliability test)."""
        return not training.dp

    def _contributions(self, updates, sizes, reference, members: set[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor]:
        """(A(S), each member's contribution p_m·(w̃_m − w^{r-1}) to it, its weights p):
        the inverse-noise average of ``members`` (w^{r-1} when there are none)."""
        rows = sorted(members)
        if not rows:
            return reference, {}, torch.zeros(0, dtype=torch.float64)
        result = self._average.aggregate(updates[rows], sizes[rows], reference)
        weights = result.weights.to(torch.float64)
        parts = {m: float(w) * (updates[m] - reference) for m, w in zip(rows, weights)}
        return result.aggregate.to(reference.dtype), parts, weights

    def step_in(self, round_index: int) -> float:
        """The fraction of the step judged in round ``round_index``: min(1, s·g^k), k the
        refused rounds in a row before it."""
        refused = 0 if self.refusals is None or self.escalation == 1 else self.refusals(round_index)
        return min(1.0, self.step * self.escalation**refused)

    @staticmethod
    def _judged(models: torch.Tensor, reference: torch.Tensor, step: float) -> torch.Tensor:
        """Where candidate models are evaluated: w^{r-1} + s·(model − w^{r-1}); the models
        themselves at s = 1."""
        return models if step == 1 else reference + step * (models - reference)

    def _candidate_losses(
        self, base: torch.Tensor, parts: dict[int, torch.Tensor], candidates: list[tuple[int, ...]], reference: torch.Tensor,
        step: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Per-example losses of A(S) (row 0, with its gradient) and of A(S) minus each
        candidate group's contributions, built :data:`CHUNK` models at a time, so memory
        stays at CHUNK model vectors however many uploads the edge holds."""
        first, gradient = self.test_loss.losses_and_gradient(self._judged(base[None], reference, step))
        rows = [first]
        for start in range(0, len(candidates), CHUNK):
            chunk = torch.stack([base - sum(parts[m] for m in c) for c in candidates[start : start + CHUNK]])
            rows.append(self.test_loss.per_example(self._judged(chunk, reference, step)))
        return torch.cat(rows), gradient

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        if sizes is None:
            raise ValueError("leave_out needs the uploads' data sizes")
        k = updates.shape[0]
        precision = self._average.precisions(sizes)
        if precision is None and self._without_dp is not None and k > 0:  # no DP noise to judge harm against
            judged = self._without_dp(updates, sizes, reference, round_index=round_index)
            return FilterResult(judged.keep, {"without_dp": judged.info}, judged.reliability, judged.threshold)
        if precision is None or k == 0:
            return FilterResult(torch.ones(k, dtype=torch.bool), {"passes": [], "readmitted": []})
        h, allowance = self._signals.corrected_gram(updates, sizes, reference)
        groups = look_alikes(h, allowance, self.similarity)
        step = self.step_in(round_index)
        kept, passes = set(range(k)), []
        while kept:
            base, parts, weights = self._contributions(updates, sizes, reference, kept)
            candidates = [c for c in dict.fromkeys(tuple(m for m in g if m in kept) for g in groups) if c]
            losses, gradient = self._candidate_losses(base, parts, candidates, reference, step)
            gain, se = improvements(losses)
            p = dict(zip(sorted(kept), weights.tolist()))
            noise = torch.tensor([math.sqrt(sum(p[m] ** 2 / float(precision[m]) for m in c)) for c in candidates])
            margin = self.z * step * noise * float(gradient.norm())
            excess = gain - self.z * se - margin
            last = len(passes) + 1 == MAX_PASSES
            dropped = harmful_groups(candidates, excess, None if last else 1)
            passes.append({"kept": sorted(kept), "groups": candidates, "gain": gain, "se": se, "margin": margin, "dropped": dropped})
            kept -= set(dropped)
            if not dropped or last:
                break
        scores = self._scores(passes[0], k) if passes else None
        readmitted = []
        for m in sorted(set(range(k)) - kept):  # one left out with others it resembled comes back if it helps
            base, parts, _ = self._contributions(updates, sizes, reference, kept | {m})
            losses = self.test_loss.per_example(self._judged(torch.stack([base, base - parts[m]]), reference, step)).mean(dim=1)
            if float(losses[0]) < float(losses[1]):
                kept.add(m)
                readmitted.append(m)
        keep = torch.zeros(k, dtype=torch.bool)
        keep[sorted(kept)] = True
        info = {"passes": passes, "readmitted": readmitted, "groups": groups, "step": step}
        credit = self._credit(passes[0], k) if self.credit is not None and passes else None
        if credit is not None:
            info["credit"] = credit
        return FilterResult(keep, info, None if scores is None else -scores, -self.z, credit=credit)

    def _credit(self, first: dict[str, Any], k: int) -> torch.Tensor:
        """Each upload's share of its weight, by the evidence that it helps (``credit`` =
        [y0, y1]): its help score y = (the loss's rise when it alone is left out, in the
        first pass) / √(se² + sd²), se the test set's standard error of that rise and sd
        the standard deviation of what its DP noise moves the loss by, and the share
        min(1, max(0, (y − y0) / (y1 − y0))). An upload that does nothing measurable (a
        free rider's y is about N(0, 1)) keeps a little of its weight or none; one that
        harms keeps none; one that helps by y1 keeps all of it."""
        credit = torch.zeros(k, dtype=torch.float64)
        for i, group in enumerate(first["groups"]):
            if len(group) == 1:
                spread = math.hypot(float(first["se"][i]), float(first["margin"][i]) / self.z)
                help_ = -float(first["gain"][i])
                y = help_ / spread if spread > 0 else (math.inf if help_ > 0 else 0.0)
                low, high = self.credit
                credit[group[0]] = min(1.0, max(0.0, (y - low) / (high - low)))
        return credit

    def _scores(self, first: dict[str, Any], k: int) -> torch.Tensor:
        """Each upload's score in the first pass, where every upload is in the set: a
        group's improvement less z standard errors, in standard deviations of what its
        noise moves the loss by (``bmfl.rounds.standing``; a group drops in a pass when its
        score exceeds z). An upload that helps or does nothing alone (score ≤ 0) is scored
        alone, so no other upload's harm can raise its score; one that harms alone is scored
        with the largest of its groups whose every member harms alone: colluders who send
        the same push are judged together, and so are two honest uploads that carry the
        same classes, whose leaving-out alone measures their over-representation at this
        edge rather than harm (leaving both out loses their classes, which scores low)."""
        groups = first["groups"]
        deviation = first["margin"].to(torch.float64) / self.z
        excess = first["gain"].to(torch.float64) - self.z * first["se"].to(torch.float64)
        score = torch.where(deviation > 0, excess / deviation.clamp_min(1e-300), excess.sign() * math.inf).nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf)
        alone = {g[0]: float(score[i]) for i, g in enumerate(groups) if len(g) == 1}
        x = torch.zeros(k, dtype=torch.float64)
        for m in range(k):
            eligible = [i for i, g in enumerate(groups) if m in g and (len(g) == 1 or all(alone[j] > 0 for j in g))]
            x[m] = float(score[max(eligible, key=lambda i: len(groups[i]))]) if alone[m] > 0 else alone[m]
        return x
