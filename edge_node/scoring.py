"""Test-set results of a task's models, memoized by content and computed ahead.

The edge scores every accepted update whose accuracy the close will read
(``bmfl.rounds.scores_uploads``: the self-reliability filter, not leave-out testing
under DP), the round's global model and the preliminary models in a background thread
while the other vehicles still train, so ``close`` mostly reads its α back. Scoring ahead gives way to intake: while updates keep
arriving it waits for a quiet moment (at most :data:`MAX_WAIT_S` a model), so a burst of
uploads is not slowed by test-set passes that can as well run after it (requests that
are then refused delay it too, by at most that much a model; ``close`` scores whatever
is left). A memoized accuracy is the one the wrapped evaluator
(``bmfl.filters.batched_accuracy_evaluator``) gives for the same vector, so the round's
result does not depend on what was scored ahead.

Leave-out testing's per-example losses are remembered the same way
(:class:`RememberedTestLoss`), and once every trainer of a round has uploaded, a
:class:`Rehearser` runs the close's rule on the accepted updates for the losses it
evaluates (``edge_node.rounds.RoundEngine.rehearse``), while other edges' vehicles may
still train, so the close itself mostly reads them back. It runs at the normal priority:
a close that needs a loss the rehearsal is computing waits for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from bmfl.filters import Evaluator
from bmfl.filters.leave_out import TestLoss

log = logging.getLogger("bmfl.edge")
MEMO = 4096
MEMO_BYTES = 32 << 20
"""Test-set losses remembered per task (400 rows of a 10,000-example test set; a round
needs about (K + 1) × its passes)."""
NICE = 10
QUIET_S = 0.05
"""Scoring ahead starts once no update has arrived for this long…"""
MAX_WAIT_S = 1.0
"""…or once it has waited this long for that (a steady stream of uploads)."""


class Scorer:
    """An :data:`Evaluator` that remembers the last ``memo`` vectors' accuracies."""

    def __init__(self, evaluate: Evaluator, memo: int = MEMO) -> None:
        self._evaluate, self._memo = evaluate, memo
        self._known: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()  # one evaluation at a time: the evaluator's model is shared

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        keys = [_key(v) for v in vectors]
        with self._lock:
            new = [i for i, key in enumerate(keys) if key not in self._known]
            if new:
                self._known.update(zip((keys[i] for i in new), self._evaluate(vectors[new]).tolist()))
            out = torch.tensor([self._known[key] for key in keys], dtype=torch.float64)
            while len(self._known) > self._memo:
                self._known.popitem(last=False)
        return out


def _key(vector: torch.Tensor) -> bytes:
    return hashlib.sha256(vector.detach().cpu().numpy().tobytes()).digest()


class RememberedTestLoss:
    """A :class:`~bmfl.filters.leave_out.TestLoss` that remembers, by content, each
    vector's per-example losses and, apart, each gradient with its vector's losses (the
    pass that takes a gradient runs its first model with autograd), up to ``budget``
    bytes, least recently used dropped first; rows it does not hold are computed in one
    call. The wrapped losses are deterministic, so the filter's results do not depend on
    what was remembered."""

    def __init__(self, inner: TestLoss, budget: int = MEMO_BYTES) -> None:
        self._inner, self._budget, self._held = inner, budget, 0
        self._known: OrderedDict[tuple[str, bytes], tuple[torch.Tensor, ...]] = OrderedDict()
        self._lock = threading.Lock()  # one evaluation at a time: the wrapped model is shared

    def per_example(self, vectors: torch.Tensor) -> torch.Tensor:
        keys = [("rows", _key(v)) for v in vectors]
        with self._lock:
            new = [i for i, key in enumerate(keys) if key not in self._known]
            computed = {i: row.clone() for i, row in zip(new, self._inner.per_example(vectors[new]))} if new else {}
            rows = [computed[i] if i in computed else self._known[key][0] for i, key in enumerate(keys)]
            for i in new:
                self._remember(keys[i], (computed[i],))
            for key in keys:
                if key in self._known:
                    self._known.move_to_end(key)
        return torch.stack(rows)

    def losses_and_gradient(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("gradient", _key(vectors[0]))
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                first, gradient = self._known[key]
            else:
                losses, gradient = self._inner.losses_and_gradient(vectors[:1])
                first = losses[0].clone()  # not a view holding the batch's matrix
                self._remember(key, (first, gradient))
        rest = self.per_example(vectors[1:]) if len(vectors) > 1 else first.new_empty(0, len(first))
        return torch.cat([first[None], rest]), gradient

    def _remember(self, key: tuple[str, bytes], value: tuple[torch.Tensor, ...]) -> None:
        size = sum(t.numel() * t.element_size() for t in value)
        if size > self._budget:
            return
        self._known[key] = value
        self._held += size
        while self._held > self._budget:
            _, dropped = self._known.popitem(last=False)
            self._held -= sum(t.numel() * t.element_size() for t in dropped)


def _lower_priority() -> None:
    """Nice the calling thread (Linux: per thread), so requests and training come first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):  # not Linux: scoring ahead keeps the normal priority
        pass


class Rehearser:
    """Runs closes ahead, one at a time, in a background thread; a failure is logged (the
    close computes what it needs itself)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rehearse")

    def submit(self, close: Callable[[], object]) -> None:
        self._pool.submit(self._run, close)

    @staticmethod
    def _run(close: Callable[[], object]) -> None:
        try:
            close()
        except Exception:
            log.exception("rehearsing a close failed")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Prescorer:
    """Scores models in one low-priority background thread, each once the intake has been
    quiet for ``quiet_s`` (or after ``max_wait_s``); a failure is logged (the step that
    needs the accuracy computes it again)."""

    def __init__(self, quiet_s: float = QUIET_S, max_wait_s: float = MAX_WAIT_S) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prescore", initializer=_lower_priority)
        self._quiet_s, self._max_wait_s = quiet_s, max_wait_s
        self._last_arrival = float("-inf")
        self._closing = threading.Event()

    def arrived(self) -> None:
        """An update just came in: scoring ahead waits until the intake is quiet."""
        self._last_arrival = time.monotonic()

    def submit(self, scorer: Callable[[], Scorer], vector: Callable[[], torch.Tensor]) -> None:
        self._pool.submit(self._score, scorer, vector)

    def _await_quiet(self) -> None:
        give_up = time.monotonic() + self._max_wait_s
        while (now := time.monotonic()) < give_up and (wait := self._last_arrival + self._quiet_s - now) > 0:
            if self._closing.wait(min(wait, give_up - now)):
                return

    def _score(self, scorer: Callable[[], Scorer], vector: Callable[[], torch.Tensor]) -> None:
        self._await_quiet()
        try:
            scorer()(vector()[None, :])
        except Exception:
            log.exception("scoring a model ahead failed")

    def close(self) -> None:
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
