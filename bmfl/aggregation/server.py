"""Server-side optimisers at the cloud (Reddi et al. 2021, "Adaptive Federated
Optimization", Algorithm 2; FedAvgM: Hsu et al. 2019): the cloud's aggregate a^r is
read as a pseudo-gradient step Δ^r = a^r − w^{r−1}, and the global model moves by

- ``paper``: w^r = a^r (BMFL Eq. 3, plain averaging; the default);
- ``fedavgm``: m^r = β₁ m^{r−1} + Δ^r, w^r = w^{r−1} + η m^r;
- ``fedadam``: m^r = β₁ m^{r−1} + (1 − β₁) Δ^r, v^r = β₂ v^{r−1} + (1 − β₂) (Δ^r)²,
  w^r = w^{r−1} + η m^r / (√v^r + τ);
- ``fedyogi``: as ``fedadam`` with v^r = v^{r−1} − (1 − β₂) (Δ^r)² sign(v^{r−1} − (Δ^r)²).

m⁰ = 0 and v⁰ = τ² (the paper's v₋₁ ≥ τ²); no bias correction, as in the paper. State
is float64 and a pure function of the sequence of (w^{r−1}, a^r) — a round without an
aggregate leaves it unchanged — so the re-execution audit recomputes it from the
chain's recorded models; :meth:`state` / :meth:`load` carry it across a cloud restart.

η may follow a schedule over the task's R planned rounds: ``constant``, or ``cosine``
(Loshchilov & Hutter 2017, without restarts): η_r = η·½(1 + cos(π(r − 1)/R)) in round r,
from η in round 1 towards 0 in round R. Under DP the global model wanders in a noise
floor whose width scales with the step; the decay shrinks it at the end of the task. It
is a function of the round index alone, so it needs no state and the audit recomputes it.
"""

from __future__ import annotations

import math

import torch

SERVER_OPTIMIZERS = ("paper", "fedavgm", "fedadam", "fedyogi")
SCHEDULES = ("constant", "cosine")


class ServerOptimizer:
    """One task's optimiser state at the cloud; :meth:`step` gives w^r."""

    def __init__(
        self, name: str = "paper", lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
        schedule: str = "constant", rounds: int | None = None,
    ) -> None:  # fmt: skip
        if name not in SERVER_OPTIMIZERS:
            raise ValueError(f"unknown server optimiser {name!r}; one of {SERVER_OPTIMIZERS}")
        if not (lr > 0 and 0 <= beta1 < 1 and 0 <= beta2 < 1 and tau > 0):
            raise ValueError("server optimiser needs lr > 0, β₁, β₂ in [0, 1) and τ > 0")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; one of {SCHEDULES}")
        if schedule != "constant" and (name == "paper" or rounds is None or rounds < 1):
            raise ValueError("a schedule needs a server optimiser (not 'paper') and the task's planned rounds")
        self.name, self.lr, self.beta1, self.beta2, self.tau = name, lr, beta1, beta2, tau
        self.schedule, self.rounds = schedule, rounds
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def rate(self, round_index: int) -> float:
        """η_r, the step size of round ``round_index`` (1-based) under the schedule."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1 + math.cos(math.pi * (min(round_index, self.rounds) - 1) / self.rounds))

    def step(self, reference: torch.Tensor, aggregate: torch.Tensor, round_index: int) -> torch.Tensor:
        """w^r from w^{r−1} (``reference``) and the cloud rule's ``aggregate`` a^r in
        round ``round_index`` (which sets η_r under a schedule)."""
        if self.name == "paper":
            return aggregate
        delta = aggregate.to(torch.float64) - reference.to(torch.float64)
        if self.m is None:
            self.m = torch.zeros_like(delta)
            self.v = torch.full_like(delta, self.tau**2)
        if self.name == "fedavgm":
            self.m = self.beta1 * self.m + delta
            move = self.rate(round_index) * self.m
        else:
            self.m = self.beta1 * self.m + (1 - self.beta1) * delta
            square = delta * delta
            if self.name == "fedadam":
                self.v = self.beta2 * self.v + (1 - self.beta2) * square
            else:
                self.v = self.v - (1 - self.beta2) * square * torch.sign(self.v - square)
            move = self.rate(round_index) * self.m / (self.v.sqrt() + self.tau)
        return (reference.to(torch.float64) + move).to(aggregate.dtype)

    def restart(self) -> None:
        """m ← 0 (v kept): a refused round's step leaves no momentum (``bmfl.rounds.ratchet``)."""
        if self.m is not None:
            self.m = torch.zeros_like(self.m)

    def state(self) -> dict[str, torch.Tensor]:
        """m and v (empty before the first step), for safetensors."""
        return {} if self.m is None else {"m": self.m, "v": self.v}

    def load(self, state: dict[str, torch.Tensor]) -> ServerOptimizer:
        """Restore :meth:`state`'s output."""
        self.m, self.v = (state["m"], state["v"]) if state else (None, None)
        return self
