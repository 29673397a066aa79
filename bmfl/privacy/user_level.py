"""User-level (vehicle-level) DP at an edge: DP-FedAvg (McMahan et al. 2018) accounted.

Each round an edge running the ``dp_fedavg`` rule publishes
w^{r-1} + (Σ_m clip_C(w̃_m − w^{r-1}) + N(0, σ²C² I)) / K: a Gaussian mechanism on a sum
with sensitivity C when one vehicle's clipped update is replaced by the zero update
(its participation is public: the chain lists the trainers). A vehicle is in at most
one edge's aggregate per round, so after r rounds it has been through at most r such
steps. Trainer selection is seeded by the task's public seed, so sampling gives no
amplification against anyone who knows it: the default rate is q = 1; a rate below 1
(selected / associated) is for selection that is secret from the adversary.
"""

from __future__ import annotations

from bmfl.privacy.accountant import PrivacyAccountant


def user_level_epsilon(noise_multiplier: float, rounds: int, delta: float, sampling_rate: float = 1.0,
                       method: str = "rdp") -> float:  # fmt: skip
    """ε at ``delta`` of ``rounds`` DP-FedAvg rounds with noise multiplier σ and vehicle
    sampling rate q (0 rounds: ε = 0)."""
    accountant = PrivacyAccountant(delta, method)
    if rounds > 0:
        accountant.step(sampling_rate, noise_multiplier, rounds)
    return accountant.epsilon()
