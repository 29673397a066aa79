"""Attacks as pluggable vehicle behaviours (docs/algorithms.md §8).

A malicious vehicle runs the same pipeline as an honest one; an :class:`Attack` may
change any of its four steps, each a no-op by default:

1. :meth:`Attack.poison_data`: the local training data (label flipping, backdoor);
2. :meth:`Attack.training_config`: the local training settings (e.g. η_a, E_a, or
   gradient *ascent* for tuning-and-scaling);
3. :meth:`Attack.start_vector`: the model training starts from (normally w^{r-1});
4. :meth:`Attack.poison_update`: the upload itself (sign flip, same value, noise,
   scaling).

``bmfl.attacks.behaviour.local_upload`` runs the four steps around
``bmfl.training.train_local``; model-poisoning attacks that need no training are
applied to an honest upload directly with ``poison_update``. An attack whose upload
does not depend on the trained model (same value, Gaussian noise) sets
``trains = False``, and ``local_upload`` then skips the (wasted) local training.

**Extension point.** To add an attack, subclass :class:`Attack`, override the steps it
changes and decorate it with ``@register_attack("my_attack")`` in your own module;
``get_attack("my_attack", **params)`` then builds it wherever attacks are configured
by name (simulator, fleet runner, benchmarks). Nothing in the core changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bmfl.data.base import TensorData
from bmfl.training.local import LocalTrainingConfig
from bmfl.registry import ParamsRepr, Registry


@dataclass
class AttackContext:
    """What a vehicle knows in round ``round_index``: the global model w^{r-1}
    (``reference``), the one before it w^{r-2} if it kept it, and its random source."""

    reference: torch.Tensor
    generator: torch.Generator
    previous_reference: torch.Tensor | None = None
    round_index: int = 1


class Attack(ParamsRepr):
    name = "attack"
    trains = True  # False: poison_update ignores the trained upload, so skip training

    def poison_data(self, data: TensorData, generator: torch.Generator) -> TensorData:
        return data

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return config

    def start_vector(self, context: AttackContext) -> torch.Tensor:
        return context.reference

    def poison_update(self, upload: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return upload



ATTACKS: Registry[Attack] = Registry("attack")
register_attack = ATTACKS.register
get_attack = ATTACKS.create
available_attacks = ATTACKS.names
