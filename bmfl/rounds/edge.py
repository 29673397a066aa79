"""An edge's part of a round (docs/architecture.md, "One round", step 4): build its rule
from the task, then filter and aggregate the uploads into the preliminary model w_ℓ
with one typed :class:`~bmfl.aggregation.Verdict` per upload.

Asynchronous mode (BAFDP, seed ``000``) plugs in here: :func:`aggregate_edge` takes
whatever uploads arrived, so an asynchronous edge calls it on each buffer of S reports,
with staleness weights applied to ``sizes``; the verdict types stay the same.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bmfl.aggregation import Aggregator, Verdict, compose
from bmfl.aggregation.base import AGGREGATORS
from bmfl.aggregation.fedavg import median_capped
from bmfl.aggregation.filtered import aggregate_scaled
from bmfl.aggregation.fltrust import RootUpdate
from bmfl.data.base import TensorData
from bmfl.filters import Evaluator
from bmfl.filters.base import FILTERS
from bmfl.filters.class_floor import ClassDescent
from bmfl.filters.leave_out import TestLoss
from bmfl.models.features import featurized
from bmfl.params import all_finite, flatten, load_vector, unflatten
from bmfl.registry import Registry
from bmfl.rounds.standing import Standings
from bmfl.task import AggregationSpec, RuleSpec, TrainingSpec
from bmfl.training.local import LocalTrainingConfig, train_local

NOT_APPLICABLE = "rule_not_applicable"
"""Verdict reason when the rule cannot run on the kept uploads (too few for its trimming
or Krum's f, a non-finite reference after divergence): the edge records no model."""


def _build(registry: Registry, spec: RuleSpec, supplies: Mapping[str, Any]) -> Any:
    """``spec`` built from ``registry`` with the arguments it declares in ``needs`` taken
    from ``supplies``; refused with the reason when the task cannot supply them."""
    needs = getattr(registry.factory(spec.name), "needs", frozenset())
    missing = sorted(needs - supplies.keys())
    if missing:
        raise ValueError(
            f"{registry.kind} {spec.name!r} needs {', '.join(missing)}, which this task cannot supply "
            "(an accuracy evaluator needs a classification test set)"
        )
    overlap = sorted(needs & spec.options.keys())
    if overlap:
        raise ValueError(f"{registry.kind} {spec.name!r}: {', '.join(overlap)} is supplied by the round, not an option")
    return registry.create(spec.name, **{k: supplies[k] for k in needs}, **spec.options)


def build_rule(rule: RuleSpec, filters: Sequence[RuleSpec], supplies: Mapping[str, Any]) -> Aggregator:
    """``rule`` behind ``filters`` (applied in order). Each filter and the rule receive
    the arguments they declare in ``needs`` from ``supplies`` (``evaluate``,
    ``root_update``, ``training``, ``count_noise``, ``class_descent``, ``test_loss``); one whose needs the task cannot supply is refused with the reason."""
    built = [_build(FILTERS, f, supplies) for f in filters]
    return compose(_build(AGGREGATORS, rule, supplies), *built)


def edge_rule(
    spec: AggregationSpec, evaluate: Evaluator | None, root_update: RootUpdate | None = None,
    training: TrainingSpec | None = None, count_noise: float | None = None, class_descent: ClassDescent | None = None,
    test_loss: TestLoss | None = None, refusals: Callable[[int], int] = lambda round_index: 0,
) -> Aggregator:  # fmt: skip
    """The edge's filters and rule; ``evaluate`` is the test-set accuracy evaluator
    (None for a task that is not classification), ``root_update`` FLTrust's root update
    (:func:`root_updater`; None where the caller cannot train one), ``training`` the
    task's calibrated training spec, from which the DP-aware filters derive the noise an
    honest update carries, ``count_noise`` the std of the noise on the data sizes the
    uploads declare (``bmfl.privacy.COUNT_NOISE`` for registered counts, 0 for exact
    sizes) and ``class_descent`` the test set's per-class descent directions
    (:func:`class_descent`, classification only) and ``test_loss`` its per-example
    losses and their gradient (:class:`PublisherTestLoss`, classification only); None
    where the caller has none. ``refusals``: round → how many rounds in a row before it
    the cloud's guard refused (``bmfl.rounds.ratchet.refused_in_a_row``; a caller without
    the task's history judges as if none was)."""
    supplied = {"evaluate": evaluate, "root_update": root_update, "training": training, "count_noise": count_noise,
                "class_descent": class_descent, "test_loss": test_loss, "refusals": refusals}
    return build_rule(spec.edge, spec.filters, {k: v for k, v in supplied.items() if v is not None})


def scores_uploads(spec: AggregationSpec, training: TrainingSpec) -> bool:
    """Whether the edge's filters or rule read the uploads' test-set accuracy at the close
    (they need ``evaluate``; a filter may say when, as ``reads_accuracy(training)``), so
    that scoring each upload as it arrives saves the close that work. Leave-out testing
    reads it only for a task without DP."""
    for factory in _factories(spec):
        reads = getattr(factory, "reads_accuracy", None)
        if reads(training) if reads is not None else "evaluate" in getattr(factory, "needs", frozenset()):
            return True
    return False


def task_edge_rule(
    spec: AggregationSpec, model: nn.Module, test_set: TensorData, scorer: Evaluator, training: TrainingSpec,
    count_noise: float, *, refusals: Callable[[int], int], test_loss: TestLoss | None = None,
) -> Aggregator:  # fmt: skip
    """:func:`edge_rule` with everything the round derives from the task's model
    architecture and the publisher's test set: the scorer (classification only), FLTrust's
    root update, the per-class descent directions and the per-example losses
    (:class:`PublisherTestLoss`, or ``test_loss``, a view of it that remembers results);
    and from the task's record, ``refusals`` (none counted for a task without the cloud's
    guard, whose rounds are never refused). The simulator, the edge service and the
    audit's re-execution all build their rule here."""
    classification = test_set.is_classification
    return edge_rule(
        spec, scorer if classification else None, root_updater(model, test_set, training.local()), training,
        count_noise, class_descent(model, test_set) if classification else None,
        (test_loss or PublisherTestLoss(model, test_set)) if classification else None,
        refusals if spec.ratchet is not None else lambda round_index: 0,
    )  # fmt: skip


def _factories(spec: AggregationSpec) -> list[Any]:
    """The registry factories of the edge's filters, in order, then of its rule."""
    return [FILTERS.factory(f.name) for f in spec.filters] + [AGGREGATORS.factory(spec.edge.name)]


def rule_needs(spec: AggregationSpec) -> frozenset[str]:
    """What the edge's filters and rule take from the round (their ``needs``, :func:`build_rule`)."""
    return frozenset().union(*(getattr(factory, "needs", frozenset()) for factory in _factories(spec)))


ROOT_SIZE = 100
"""Examples of the test set in FLTrust's root data (the paper's default root set size)."""


def root_data(test_set: TensorData, size: int = ROOT_SIZE) -> TensorData:
    """FLTrust's root data: ``size`` examples of the publisher's test set in a fixed
    order (a permutation drawn with seed 0), the same at every edge and in an audit."""
    order = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0))
    return test_set.subset(order[: min(size, len(test_set))])


def root_updater(model: nn.Module, test_set: TensorData, training: LocalTrainingConfig) -> RootUpdate:
    """FLTrust's root update g_0 (docs/algorithms.md §8.2): from w^{r-1}, the task's local
    training on :func:`root_data` without DP (the publisher's data, no vehicle's) and
    with batch order seeded by 0, so every edge and an auditor get the same g_0. The
    root data only sets trust scores and the aggregate's norm; no root gradient enters
    the model."""
    root = root_data(test_set)
    config = replace(training, dp=False, maximize=False)
    template = copy.deepcopy(model)

    def update(reference: torch.Tensor) -> torch.Tensor:
        local = load_vector(template, reference.to(next(template.parameters()).device))
        train_local(local, root, config, torch.Generator().manual_seed(0))
        return flatten(local.state_dict()).to(reference.device)

    return update


def class_descent(model: nn.Module, test_set: TensorData) -> ClassDescent:
    """The per-class descent directions of ``class_floor``: at w^{r-1}, for each class
    with examples in the publisher's test set (in class order), −∇ of the mean
    cross-entropy over its examples, as a unit vector in ``flatten``'s order (zero for
    buffers); a class whose gradient vanishes gets no row. No randomness: every edge and
    an auditor get the same directions. Rows are float64, on the CPU. Nothing is copied or
    computed until a filter asks (most pipelines never do)."""
    made: list = []

    def directions(reference: torch.Tensor) -> torch.Tensor:
        if not made:
            groups = [torch.nonzero(test_set.y == c).flatten() for c in range(test_set.num_classes or 0)]
            made.extend([copy.deepcopy(model), [g for g in groups if len(g)]])
        template, groups = made
        local = load_vector(template, reference)
        params = dict(local.named_parameters())
        rows = []
        for idx in groups:
            loss = F.cross_entropy(local(test_set.x[idx]), test_set.y[idx])
            grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
            g = torch.cat([grads[k].reshape(-1) if k in grads else torch.zeros(t.numel(), device=t.device)
                           for k, t in local.state_dict().items()]).to("cpu", torch.float64)  # fmt: skip
            norm = float(g.norm())
            if norm > 0 and math.isfinite(norm):
                rows.append(-g / norm)
        return torch.stack(rows) if rows else torch.zeros(0, reference.numel(), dtype=torch.float64)

    return directions


class PublisherTestLoss:
    """``leave_out``'s view of the publisher's test set (:class:`~bmfl.filters.leave_out.TestLoss`):
    cross-entropy per example and the gradient of its mean, for flat model vectors in
    ``flatten``'s order. Deterministic, so every edge and an auditor get the same
    numbers; the fixed front end (``featurized``) runs once, when a filter first asks.
    Batches of 1,024 examples: a 300-image test set in one pass per model, half the
    time of batches of 256 for the BMFL CNN."""

    def __init__(self, model: nn.Module, test_set: TensorData, batch_size: int = 1024) -> None:
        self._model = model
        self._test_set = test_set
        self.batch_size = batch_size
        self._made: tuple[nn.Module, TensorData] | None = None

    def _prepared(self) -> tuple[nn.Module, TensorData]:
        if self._made is None:
            template = copy.deepcopy(self._model).eval()
            self._made = template, featurized(template, self._test_set)
        return self._made

    def per_example(self, vectors: torch.Tensor) -> torch.Tensor:
        return self._losses(vectors, gradient=False)[0]

    def losses_and_gradient(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._losses(vectors, gradient=True)

    def _losses(self, vectors: torch.Tensor, gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each example's loss under each vector and, with ``gradient``, the mean loss's
        gradient at ``vectors[0]``, taken from that model's own forward pass."""
        template, data = self._prepared()
        device = next(template.parameters()).device
        states = [unflatten(v.to(device), template.state_dict()) for v in vectors]
        names = [k for k, _ in template.named_parameters()] if gradient else []
        for k in names:
            states[0][k] = states[0][k].detach().requires_grad_()
        grads = [torch.zeros_like(states[0][k]) for k in names]
        out = torch.empty(len(states), len(data), dtype=torch.float64)
        for start in range(0, len(data), self.batch_size):
            xb = data.x[start : start + self.batch_size].to(device)
            yb = data.y[start : start + self.batch_size].to(device)
            for i, state in enumerate(states):
                with torch.set_grad_enabled(gradient and i == 0):
                    losses = F.cross_entropy(functional_call(template, state, (xb,)), yb, reduction="none")
                if losses.requires_grad:  # parameters the eval-mode forward skips (a multi-task model's auxiliary heads): 0
                    for g, part in zip(grads, torch.autograd.grad(losses.sum(), [state[k] for k in names], allow_unused=True)):
                        if part is not None:
                            g += part
                out[i, start : start + len(yb)] = losses.detach().cpu()
        if not gradient:
            return out, None
        by_name = dict(zip(names, grads))
        flat = [by_name[k].reshape(-1) if k in by_name else torch.zeros(t.numel(), device=device) for k, t in states[0].items()]
        return out, (torch.cat(flat) / max(1, len(data))).to("cpu", torch.float64)


@dataclass(frozen=True)
class EdgeOutcome:
    """``preliminary``: w_ℓ, or None when there is nothing to record (no upload, none
    finite, or the rule not applicable); ``samples``: the data behind it, the cloud's
    weight for w_ℓ (Σ min(n_m, median n) over the unflagged uploads, so no declared size
    counts for more than the median one; 0 when every upload was flagged and w_ℓ = w^{r-1});
    ``verdicts``: vehicle → its verdict, for every vehicle given;
    ``user_level_epsilon``: the user-level ε a ``dp_fedavg`` rule reports after this
    round (None for other rules)."""

    preliminary: torch.Tensor | None
    samples: int
    verdicts: dict[int, Verdict]
    user_level_epsilon: float | None = None


def _user_level_epsilon(info: Mapping[str, Any]) -> float | None:
    """``user_level_epsilon`` from a rule's (possibly filter-nested) diagnostics."""
    if "user_level_epsilon" in info:
        return float(info["user_level_epsilon"])
    inner = info.get("rule")
    return _user_level_epsilon(inner) if isinstance(inner, Mapping) else None


def aggregate_edge(
    rule: Aggregator,
    uploads: Mapping[int, torch.Tensor],
    sizes: Mapping[int, int],
    reference: torch.Tensor,
    round_index: int,
    excluded: Mapping[int, str] | None = None,
    scales: Mapping[int, float] | None = None,
    standing: Standings | None = None,
) -> EdgeOutcome:
    """Filter and aggregate ``uploads`` (vehicle → flat w̃_m) against w^{r-1}
    (``reference``) in vehicle order, so the result does not depend on arrival order.
    ``sizes``: vehicle → n_m; ``excluded``: vehicles dropped before the rule, with the
    reason (they need no upload). Non-finite uploads are flagged ``non_finite``.
    ``scales``: vehicle → the weight of its delta to w^{r-1} in the rule, applied after
    the filters (asynchronous staleness; absent: 1). ``standing``: the vehicles' standings
    before the round (``bmfl.rounds.standing``); those over its limit are flagged
    ``standing`` before the rule, and every verdict's Λ becomes the standing after it."""
    verdicts = {v: Verdict(0.0, True, reason) for v, reason in (excluded or {}).items()}
    if standing is not None:
        verdicts |= standing.barred(v for v in sorted(uploads) if v not in verdicts)
    outcome = _judged(rule, uploads, sizes, reference, round_index, verdicts, scales)
    if standing is None:
        return outcome
    return replace(outcome, verdicts=standing.after(outcome.verdicts))


def _judged(
    rule: Aggregator, uploads: Mapping[int, torch.Tensor], sizes: Mapping[int, int], reference: torch.Tensor,
    round_index: int, verdicts: dict[int, Verdict], scales: Mapping[int, float] | None,
) -> EdgeOutcome:  # fmt: skip
    """:func:`aggregate_edge` over the uploads not already in ``verdicts``."""
    for v in sorted(uploads):
        if v not in verdicts and not all_finite(uploads[v]):
            verdicts[v] = Verdict(0.0, True, "non_finite")
    order = [v for v in sorted(uploads) if v not in verdicts]
    if not order:
        return EdgeOutcome(None, 0, verdicts)
    stacked = torch.stack([uploads[v] for v in order])
    n = torch.tensor([float(sizes[v]) for v in order], dtype=torch.float64)
    weights = None if scales is None else torch.tensor([float(scales.get(v, 1.0)) for v in order])
    try:
        result = aggregate_scaled(rule, stacked, n, reference, round_index=round_index, scales=weights)
    except ValueError:
        verdicts.update({v: Verdict(0.0, True, NOT_APPLICABLE) for v in order})
        return EdgeOutcome(None, 0, verdicts)
    verdicts.update(zip(order, result.verdicts))
    kept = torch.tensor([not verdicts[v].flagged for v in order])
    samples = int(median_capped(n[kept]).sum()) if bool(kept.any()) else 0
    return EdgeOutcome(result.aggregate, samples, dict(sorted(verdicts.items())), _user_level_epsilon(result.info))
