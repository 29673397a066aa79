"""The batched self-reliability evaluator (one pass over the test set for K models,
bmfl.filters.self_reliability.batched_accuracy_evaluator) against the per-model one."""

import pytest
import torch

from bmfl.data import load_dataset
from bmfl.filters import accuracy_evaluator, get_filter
from bmfl.filters.self_reliability import batched_accuracy_evaluator
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.training import LocalTrainingConfig, train_local


@pytest.fixture(scope="module")
def setup():
    train, test = load_dataset("mnist")
    test = test.subset(list(range(300)))
    torch.manual_seed(0)
    models = [create_model("bmfl_cnn") for _ in range(3)]
    trained = create_model("bmfl_cnn")
    train_local(trained, train.subset(list(range(600))), LocalTrainingConfig(epochs=2, dp=False, lr=0.05), torch.Generator().manual_seed(0))
    vectors = torch.stack([flatten(m.state_dict()) for m in [*models, trained]])
    return create_model("bmfl_cnn"), test, vectors


@pytest.mark.parametrize("vectorise", [False, True])
def test_batched_accuracies_equal_the_per_model_evaluator(setup, vectorise):
    model, test, vectors = setup
    expected = accuracy_evaluator(model, test)(vectors)
    got = batched_accuracy_evaluator(model, test, batch_size=128, vectorise=vectorise)(vectors)
    assert got.dtype == torch.float64 and got.shape == (len(vectors),)
    assert torch.equal(got, expected)
    assert got[-1] > got[:-1].max() + 0.2  # the trained model scores higher: the scores mean something


def test_the_filter_gives_the_same_verdicts_with_either_evaluator(setup):
    model, test, vectors = setup
    reference, uploads = vectors[-1], vectors[:-1].clone()
    uploads[0] = -uploads[0]
    verdicts = [
        get_filter("self_reliability", evaluate=ev)(uploads, None, reference, round_index=2)
        for ev in (accuracy_evaluator(model, test), batched_accuracy_evaluator(model, test))
    ]
    assert torch.equal(verdicts[0].keep, verdicts[1].keep)
    assert torch.equal(verdicts[0].info["reliability"], verdicts[1].info["reliability"])


def test_repeated_vectors_are_scored_once(setup, monkeypatch):
    model, test, vectors = setup
    evaluator = batched_accuracy_evaluator(model, test, memo=2)
    calls = []
    original = torch.func.functional_call
    monkeypatch.setattr("bmfl.filters.self_reliability.functional_call", lambda *a: calls.append(1) or original(*a))
    first = evaluator(vectors[:2])
    per_model = len(calls) // 2  # forward passes over the test set per model
    again = evaluator(torch.stack([vectors[1], vectors[0], vectors[1]]))
    assert torch.equal(again, first[[1, 0, 1]]) and len(calls) == 2 * per_model  # nothing re-evaluated
    evaluator(vectors[2:])  # two new vectors push both old ones out of a memo of 2
    evaluator(vectors[:1])
    assert len(calls) == 5 * per_model
