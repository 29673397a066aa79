"""The self-reliability filter (BMFL §IV-C-2, Eq. 11–13; docs/algorithms.md §2).

For upload w̃_m in round r (1-based), against the reference w^{r-1}:

- α_m: accuracy of w̃_m on the publisher's test set (fraction correct);
- dir_m = 1 if Σ_k sign(w̃_m[k]·w^{r-1}[k]) > 0 else −1 (Eq. 13);
- D_m = ‖w̃_m − w^{r-1}‖₂² if dir_m = 1, else +∞ (Eq. 12);
- Λ_m = (1 + χ/r)·α_m − D_m, χ = 0.5 (Eq. 11).

m is unreliable when Λ_m < T_Λ: it is left out and its weight recorded as malicious.
Every quantity depends on w̃_m, w^{r-1} and the test set only, never on the other
uploads, which is what keeps the filter working with more than 50 % attackers.

**Scale of D.** α ∈ [0, 1] while the paper's D is an unbounded squared distance that
grows with d, the learning rate, the number of local steps and the DP noise (DP noise
inflates D for honest vehicles too), so no fixed T_Λ fits every task. Two settings:

- ``threshold=T`` (a float): the paper's rule, Λ_m < T with D as chosen by
  ``normalize`` (``"none"`` = the paper's raw D).
- ``threshold=None`` (default): T_Λ = (1 + χ/r)·α_ref − ``tolerance``, where α_ref is
  the accuracy of w^{r-1} itself, i.e. the reference model's own Λ (its D is 0): an
  upload must score at most ``tolerance`` below the model it started from. With the
  default ``normalize="reference"``, D_m = ‖w̃_m − w^{r-1}‖² / ‖w^{r-1}‖² is the
  relative squared change, a scale-free quantity comparable to accuracies.

The default ``tolerance`` = 25 is set empirically, like the paper's threshold, for the
platform's default training (``bmfl.task.TrainingSpec``): an honest DP-SGD upload in
round 1 changes the freshly initialised CNN by a relative squared distance D of about 1
(160 samples, E = 2, η = 0.3) to 21 (800 samples), while sign-flipped uploads have
D = ∞ and same-value ones D ≈ 10⁶. The reproduction grid (``bmfl.reproduce.grid``)
trains far fewer steps per round and uses 1.0 (honest D well below 1 there, see
``docs/robustness_rules.md``). Updates far smaller than these (few steps, no DP noise) make
a flipped update's D small too; lower the tolerance for such tasks.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

from bmfl.data.base import TensorData
from bmfl.models.features import featurized
from bmfl.filters.base import FilterResult, UpdateFilter, register_filter
from bmfl.params import load_vector, unflatten

Evaluator = Callable[[torch.Tensor], torch.Tensor]
"""Maps stacked flat model vectors (n, d) to their test accuracies (n,) in [0, 1]."""

NORMALIZATIONS = ("reference", "none")


def accuracy_evaluator(model: nn.Module, data: TensorData, batch_size: int = 2048) -> Evaluator:
    """An :data:`Evaluator` scoring each vector with ``bmfl.training.evaluate`` on
    ``data`` (``model`` gives the architecture; a private copy is used)."""
    from bmfl.training.evaluate import evaluate

    work = copy.deepcopy(model)
    data = featurized(work, data)  # once, not once per candidate

    def score(vectors: torch.Tensor) -> torch.Tensor:
        out = [evaluate(load_vector(work, v), data, batch_size).accuracy for v in vectors]
        return torch.tensor(out, dtype=torch.float64)

    return score


def batched_accuracy_evaluator(
    model: nn.Module, data: TensorData, batch_size: int = 256, vectorise: bool | None = None, memo: int = 64
) -> Evaluator:
    """An :data:`Evaluator` scoring all K vectors in one pass over ``data``: each batch
    goes through every candidate before the next is read, with ``vmap`` over the
    stacked models (``torch.func.functional_call``) when ``vectorise`` (default: off the
    CPU), else model by model; on CPU the grouped convolutions that ``vmap`` produces
    are slower than the loop (``docs/performance.md``). Same accuracies as
    :func:`accuracy_evaluator` (α_m of Eq. 11); the small default batch keeps the
    activations in cache. Accuracies of the last ``memo`` distinct vectors are kept,
    so w^{r-1}, which every edge's filter scores, is evaluated once per round."""
    work = copy.deepcopy(model).eval()
    data = featurized(work, data)
    template = work.state_dict()
    device = next(work.parameters()).device
    stacked = device.type != "cpu" if vectorise is None else vectorise
    known: OrderedDict[bytes, float] = OrderedDict()

    def score(vectors: torch.Tensor) -> torch.Tensor:
        keys = [hashlib.sha256(v.detach().cpu().numpy().tobytes()).digest() for v in vectors]
        new: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in known:
                new.setdefault(key, i)
        if new:
            known.update(zip(new, _accuracies(vectors[list(new.values())]).tolist()))
        out = torch.tensor([known[k] for k in keys], dtype=torch.float64)
        while len(known) > memo:
            known.popitem(last=False)
        return out

    @torch.no_grad()
    def _accuracies(vectors: torch.Tensor) -> torch.Tensor:
        states = [unflatten(v.to(device), template) for v in vectors]
        together = {k: torch.stack([s[k] for s in states]) for k in template} if stacked else {}
        correct = torch.zeros(len(states), dtype=torch.long, device=device)
        for start in range(0, len(data), batch_size):
            xb = data.x[start : start + batch_size].to(device)
            yb = data.y[start : start + batch_size].to(device)
            if stacked:
                logits = vmap(lambda p: functional_call(work, p, (xb,)))(together)
            else:
                logits = torch.stack([functional_call(work, s, (xb,)) for s in states])
            correct += (logits.argmax(-1) == yb).sum(1)
        return correct.cpu().to(torch.float64) / max(1, len(data))

    return score


def directions(updates: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """dir_m of Eq. 13, as ±1 (int64)."""
    agree = torch.sign(updates * reference[None, :]).sum(dim=1)
    return torch.where(agree > 0, 1, -1)


def distances(updates: torch.Tensor, reference: torch.Tensor, normalize: str) -> torch.Tensor:
    """D_m of Eq. 12 before the direction rule, raw or relative to ‖w^{r-1}‖²."""
    d = (updates.to(torch.float64) - reference.to(torch.float64)).pow(2).sum(dim=1)
    if normalize == "reference":
        d = d / reference.to(torch.float64).pow(2).sum().clamp_min(1e-12)
    return d


def reliability(alpha: torch.Tensor, dist: torch.Tensor, dirs: torch.Tensor, round_index: int, chi: float) -> torch.Tensor:
    """Λ of Eq. 11 (−∞ where dir = −1)."""
    d = torch.where(dirs > 0, dist, torch.full_like(dist, float("inf")))
    return (1 + chi / round_index) * alpha.to(torch.float64) - d


@register_filter("self_reliability")
class SelfReliabilityFilter(UpdateFilter):
    """``evaluate``: the test-set :data:`Evaluator` (the publisher's private set);
    ``chi`` χ; ``threshold`` an absolute T_Λ or ``None`` for the reference-relative
    default; ``tolerance`` its margin; ``normalize`` ∈ {"reference", "none"}."""

    needs = frozenset({"evaluate"})

    def __init__(
        self,
        evaluate: Evaluator,
        chi: float = 0.5,
        threshold: float | None = None,
        tolerance: float = 25.0,
        normalize: str = "reference",
    ) -> None:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}")
        self.evaluate = evaluate
        self.chi = chi
        self.threshold = threshold
        self.tolerance = tolerance
        self.normalize = normalize

    def __call__(self, updates, sizes, reference, *, round_index: int = 1) -> FilterResult:
        if round_index < 1:
            raise ValueError("round_index is 1-based")
        need_ref = self.threshold is None
        scored = torch.cat([reference[None, :], updates]) if need_ref else updates
        acc = torch.as_tensor(self.evaluate(scored), dtype=torch.float64)
        alpha = acc[1:] if need_ref else acc
        dirs = directions(updates, reference)
        dist = self.distances(updates, sizes, reference)
        lam = reliability(alpha, dist, dirs, round_index, self.chi)
        if need_ref:
            alpha_ref = float(acc[0])
            threshold = (1 + self.chi / round_index) * alpha_ref - self.tolerance
        else:
            alpha_ref, threshold = None, float(self.threshold)
        keep = lam >= threshold
        info = {"reliability": lam, "alpha": alpha, "distance": dist, "direction": dirs,
                "threshold": threshold, "alpha_reference": alpha_ref}
        return FilterResult(keep, info, reliability=lam, threshold=threshold)

    def distances(self, updates: torch.Tensor, sizes: torch.Tensor | None, reference: torch.Tensor) -> torch.Tensor:
        """D_m of Eq. 12 (before the direction rule), as ``normalize`` says."""
        return distances(updates, reference, self.normalize)
