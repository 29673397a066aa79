"""Scoring ahead at the edge: the memoized scorer gives the evaluator's accuracies,
evaluates each distinct vector once, and a model scored in the background is read back."""

from __future__ import annotations

import threading
import time

import torch

from edge_node.scoring import Prescorer, Scorer


class CountingEvaluator:
    """Accuracy = the vector's first coordinate; records every vector it scores."""

    def __init__(self) -> None:
        self.scored: list[float] = []

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        self.scored.extend(float(v[0]) for v in vectors)
        return vectors[:, 0].to(torch.float64)


def test_scorer_memoizes_by_content() -> None:
    evaluate = CountingEvaluator()
    scorer = Scorer(evaluate)
    a, b, c = torch.tensor([0.25, 1.0]), torch.tensor([0.5, 2.0]), torch.tensor([0.75, 3.0])
    assert scorer(torch.stack([a, b])).tolist() == [0.25, 0.5]
    assert scorer(torch.stack([b, c, a.clone()])).tolist() == [0.5, 0.75, 0.25]
    assert evaluate.scored == [0.25, 0.5, 0.75]


def test_scorer_forgets_the_oldest_past_its_memo() -> None:
    evaluate = CountingEvaluator()
    scorer = Scorer(evaluate, memo=2)
    for x in (0.125, 0.25, 0.375, 0.125):
        scorer(torch.tensor([[x, 0.0]]))
    assert evaluate.scored == [0.125, 0.25, 0.375, 0.125]


def test_prescorer_scores_in_the_background() -> None:
    evaluate = CountingEvaluator()
    scorer = Scorer(evaluate)
    done = threading.Event()
    prescorer = Prescorer()

    def vector() -> torch.Tensor:
        done.set()
        return torch.tensor([0.5, 1.0])

    prescorer.submit(lambda: scorer, vector)
    prescorer.close()  # waits for the queued scoring
    assert done.is_set() and evaluate.scored == [0.5]
    assert scorer(torch.tensor([[0.5, 1.0]])).tolist() == [0.5]
    assert evaluate.scored == [0.5]


def test_prescorer_logs_a_failure_and_goes_on(caplog) -> None:
    prescorer = Prescorer()

    def broken() -> torch.Tensor:
        raise ValueError("undecodable")

    prescorer.submit(lambda: Scorer(CountingEvaluator()), broken)
    prescorer.close()
    assert "scoring a model ahead failed" in caplog.text


def scored_within(evaluate: CountingEvaluator, seconds: float) -> list[float]:
    """What ``evaluate`` has scored once it scored something, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not evaluate.scored and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    return evaluate.scored


def test_prescorer_waits_while_updates_arrive() -> None:
    evaluate = CountingEvaluator()
    scorer = Scorer(evaluate)
    prescorer = Prescorer(quiet_s=2.0, max_wait_s=60.0)
    prescorer.arrived()
    prescorer.submit(lambda: scorer, lambda: torch.tensor([0.5, 1.0]))
    for _ in range(4):  # arrivals every 0.1 s keep it waiting
        threading.Event().wait(0.1)
        assert evaluate.scored == []
        prescorer.arrived()
    assert scored_within(evaluate, 30) == [0.5]  # quiet: it scores
    prescorer.close()


def test_prescorer_scores_after_its_longest_wait() -> None:
    evaluate = CountingEvaluator()
    prescorer = Prescorer(quiet_s=60.0, max_wait_s=0.2)
    prescorer.arrived()
    prescorer.submit(lambda: Scorer(evaluate), lambda: torch.tensor([0.25, 1.0]))
    assert scored_within(evaluate, 30) == [0.25]
    prescorer.close()


def test_closing_does_not_wait_for_quiet() -> None:
    prescorer = Prescorer(quiet_s=60.0, max_wait_s=60.0)
    prescorer.arrived()
    prescorer.submit(lambda: Scorer(CountingEvaluator()), lambda: torch.tensor([0.25, 1.0]))
    threading.Event().wait(0.05)  # the queued scoring is waiting for quiet
    started = time.monotonic()
    prescorer.close()
    assert time.monotonic() - started < 10


class CountingLoss:
    """Wraps the publisher's test loss and records how many models it evaluates."""

    def __init__(self, inner) -> None:
        self.inner, self.rows, self.gradients = inner, 0, 0

    def per_example(self, vectors: torch.Tensor) -> torch.Tensor:
        self.rows += len(vectors)
        return self.inner.per_example(vectors)

    def losses_and_gradient(self, vectors: torch.Tensor):
        self.gradients += 1
        self.rows += len(vectors)
        return self.inner.losses_and_gradient(vectors)


def test_a_rehearsed_close_reads_every_test_loss_back() -> None:
    """The default edge rule run twice on the same uploads (a rehearsal, then the close):
    the second run evaluates no model and gives the same aggregate and verdicts, bit for
    bit, as a rule without memory; rows and gradients are remembered apart."""
    from bmfl.data import load_dataset
    from bmfl.models import create_model
    from bmfl.params import flatten
    from bmfl.privacy import COUNT_NOISE
    from bmfl.rounds import aggregate_edge, task_edge_rule
    from bmfl.rounds.edge import PublisherTestLoss
    from bmfl.task import AggregationSpec, TrainingSpec
    from edge_node.scoring import RememberedTestLoss

    _, test = load_dataset("mnist_5k")
    test = test.subset(torch.arange(300))
    torch.manual_seed(0)
    model = create_model("bmfl_cnn")
    w0 = flatten(model.state_dict())
    g = torch.Generator().manual_seed(1)
    uploads = {v: w0 + 0.05 * torch.randn(w0.shape, generator=g) for v in range(6)}
    uploads[5] = w0 - 0.5 * (uploads[0] - w0)  # pushes against the others
    sizes = {v: 100 for v in uploads}
    spec, training = AggregationSpec(), TrainingSpec()

    def close(test_loss):
        rule = task_edge_rule(spec, create_model("bmfl_cnn"), test, Scorer(CountingEvaluator()), training, COUNT_NOISE,
                              refusals=lambda r: 0, test_loss=test_loss)
        return aggregate_edge(rule, uploads, sizes, w0, 1)

    plain = close(None)
    counting = CountingLoss(PublisherTestLoss(create_model("bmfl_cnn"), test))
    remembered = RememberedTestLoss(counting)
    rehearsed = close(remembered)
    evaluated = (counting.rows, counting.gradients)
    assert evaluated[0] > 0 and evaluated[1] > 0
    closed = close(remembered)
    assert (counting.rows, counting.gradients) == evaluated
    for outcome in (rehearsed, closed):
        assert torch.equal(outcome.preliminary, plain.preliminary) and outcome.verdicts == plain.verdicts


class SumLoss:
    """Per-example losses = the vector's sum plus the example index; the gradient = the vector."""

    def __init__(self) -> None:
        self.rows = 0

    def per_example(self, vectors: torch.Tensor) -> torch.Tensor:
        self.rows += len(vectors)
        return vectors.sum(dim=1, keepdim=True).double() + torch.arange(4, dtype=torch.float64)

    def losses_and_gradient(self, vectors: torch.Tensor):
        return self.per_example(vectors), vectors[0].double()


def test_remembered_losses_stay_within_their_budget() -> None:
    from edge_node.scoring import RememberedTestLoss

    inner = SumLoss()
    losses = RememberedTestLoss(inner, budget=2 * 4 * 8)  # two rows of 4 float64
    a, b, c = (torch.full((3,), x) for x in (1.0, 2.0, 3.0))
    assert losses.per_example(torch.stack([a, b])).tolist() == [[3, 4, 5, 6], [6, 7, 8, 9]]
    losses.per_example(torch.stack([b, c]))  # a, the least recently used, makes room for c
    assert inner.rows == 3
    losses.per_example(torch.stack([b, c]))
    assert inner.rows == 3
    losses.per_example(a[None])
    assert inner.rows == 4
    first, gradient = losses.losses_and_gradient(torch.stack([c, a]))
    assert first.tolist() == [[9, 10, 11, 12], [3, 4, 5, 6]] and gradient.tolist() == [3.0, 3.0, 3.0]
    assert losses._held <= 2 * 4 * 8 and all(t._base is None for value in losses._known.values() for t in value)
