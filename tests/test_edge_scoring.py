"""Scoring ahead at the edge: the memoized scorer gives the evaluator's accuracies,
evaluates each distinct vector once, and a model scored in the background is read back."""

from __future__ import annotations

import threading

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
