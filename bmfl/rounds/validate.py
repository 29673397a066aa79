"""One check of a task before anything is escrowed: the publisher's client runs it before
``createTask`` (``launcher.publisher``), the cloud runs it on ``POST /tasks`` and on its
dry run ``POST /tasks/validate`` (``cloud_aggregator.publishing``). A task that passes
can be built by every edge and the cloud: its model is registered (and the initial
model, if given, is a valid state of it), its filters and rules build with the round
core's :func:`~bmfl.rounds.edge_rule` / :func:`~bmfl.rounds.cloud_rule` (a filter that
needs an accuracy evaluator requires a classification test set), its test set is
well-formed, and its escrow covers ``rounds × block_reward_wei``.

Problems carry the reasons the cloud answers with: ``unknown_model``,
``initial_model_<codec reason>``, ``invalid_spec``, ``invalid_test_set``, ``escrow_too_small``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmfl.blobs.codec import decode_state
from bmfl.blobs.errors import BlobCodecError
from bmfl.data.base import TensorData
from bmfl.models import MODELS
from bmfl.protocol.testset import MAX_TEST_SET_BYTES, TestSetError, decode_test_set, encode_test_set
from bmfl.privacy.engine import COUNT_NOISE
from bmfl.rounds.cloud import cloud_rule
from bmfl.rounds.edge import edge_rule
from bmfl.task import TaskDraft


@dataclass(frozen=True)
class Problem:
    """Why a task would fail: a machine-readable ``reason`` and a human ``detail``."""

    reason: str
    detail: str


_ANY_TEST_LOSS = object()
"""Stands in for ``leave_out``'s view of the test set while a spec is checked: only whether
the task can supply one matters (it can when its test set is for classification)."""


class TaskInvalid(ValueError):
    """:func:`check_task` found problems; ``problems`` lists every one."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.reason}: {p.detail}" for p in problems))
        self.problems = problems


def _test_set_problem(test_set: TensorData | bytes, max_bytes: int) -> tuple[TensorData | None, Problem | None]:
    """The decoded test set, or the problem with it (a TensorData is checked as its encoding)."""
    try:
        raw = test_set if isinstance(test_set, bytes) else encode_test_set(test_set)
        return decode_test_set(raw, max_bytes), None
    except (TestSetError, ValueError, TypeError) as exc:
        return None, Problem("invalid_test_set", str(exc))


def validate_task(
    draft: TaskDraft,
    test_set: TensorData | bytes | None,
    initial_model: bytes | None = None,
    max_test_set_bytes: int = MAX_TEST_SET_BYTES,
) -> list[Problem]:
    """Every problem of ``draft`` (a :class:`TaskDraft` or :class:`TaskSpec`) with its test
    set (decoded, or a blob; None: not known yet, so evaluator filters are assumed
    suppliable) and its initial model blob (None: not checked); empty when it is sound."""
    problems: list[Problem] = []
    if draft.model not in MODELS.names():
        problems.append(Problem("unknown_model", f"model {draft.model!r} is not one of {MODELS.names()}"))
    elif initial_model is not None:
        try:
            decode_state(initial_model, draft.model)
        except BlobCodecError as exc:
            problems.append(Problem(f"initial_model_{exc.reason.value}", str(exc)))
    decoded = None
    if test_set is not None:
        decoded, problem = _test_set_problem(test_set, max_test_set_bytes)
        problems += [problem] if problem else []
    classification = test_set is None or decoded is None or decoded.is_classification
    try:
        evaluate = (lambda state: 0.0) if classification else None  # only whether one exists matters here
        edge_rule(draft.aggregation, evaluate, root_update=lambda reference: reference, training=draft.training,
                  count_noise=COUNT_NOISE, class_descent=(lambda reference: reference[None]) if classification else None,
                  test_loss=_ANY_TEST_LOSS if classification else None)
        cloud_rule(draft.aggregation)
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(Problem("invalid_spec", f"aggregation: {exc}"))
    if draft.reward_wei < draft.rounds * draft.block_reward_wei:
        detail = f"reward_wei {draft.reward_wei} < rounds {draft.rounds} × block_reward_wei {draft.block_reward_wei}"
        problems.append(Problem("escrow_too_small", detail))
    return problems


def check_task(
    draft: TaskDraft, test_set: TensorData | bytes | None, initial_model: bytes | None = None,
    max_test_set_bytes: int = MAX_TEST_SET_BYTES,
) -> None:  # fmt: skip
    """:func:`validate_task`, raising :class:`TaskInvalid` with every problem."""
    problems = validate_task(draft, test_set, initial_model, max_test_set_bytes)
    if problems:
        raise TaskInvalid(problems)
