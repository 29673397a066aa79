"""When a task stops, as ``BMFLTasks`` decides it (BMFL Algorithm 1: at most K rounds, or
until the global model reaches the target accuracy). Plain integers, fixed point in
``bmfl.incentives.SCALE`` units; tests/test_contract_mirrors.py checks them on chain."""

from __future__ import annotations

from bmfl.incentives import to_fixed


def target_fixed(target_accuracy: float | None) -> int:
    """A task's target accuracy as the chain holds it: 0 (run all K rounds) when none,
    else ``to_fixed``, at least 1 so that a tiny target is not read as "no target"."""
    return 0 if target_accuracy is None else max(1, to_fixed(target_accuracy))


def stop_reached(round_: int, max_rounds: int, target_accuracy: int, last_accuracy: int, finalized: bool) -> bool:
    """``BMFLTasks._stopReached``: only once the current round is finalized, K =
    ``max_rounds`` rounds have run, or a target was set (``target_accuracy`` ≠ 0) and the
    last global accuracy reached it."""
    if not finalized:
        return False
    return round_ == max_rounds or (target_accuracy != 0 and last_accuracy >= target_accuracy)


def rounds_run(round_: int, finalized: bool) -> int:
    """``BMFLTasks._roundsRun``: rounds whose leader was paid the block reward (the current
    round counts once it is finalized); a cancelled task refunds the escrow less these."""
    return round_ if finalized or round_ == 0 else round_ - 1
