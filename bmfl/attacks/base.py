"""Attacks as pluggable vehicle behaviours (docs/algorithms.md §8).

A malicious vehicle runs the same pipeline as an honest one; an :class:`Attack` may
change any of its four steps, each a no-op by default:

1. :meth:`Attack.poison_data`: the local training data (label flipping, backdoor);
2. :meth:`Attack.training_config`: the local training settings (e.g. η_a, E_a, or
   gradient *ascent* for tuning-and-scaling);
3. :meth:`Attack.start_vector`: the model training starts from (normally w^{r-1});
4. :meth:`Attack.poison_update`: the upload itself (sign flip, same value, noise,
   scaling);
5. :meth:`Attack.collude`: the uploads of all of an edge's attackers together, after
   every vehicle of the edge trained (ALIE, IPM, min-max, defence-aware attacks). It
   sees what the attack's ``knowledge`` allows (:class:`EdgeView`): ``"own"`` only
   the attackers' own uploads (partial knowledge), ``"omniscient"`` also the honest
   uploads of the edge, ``"white_box"`` also the edge's exact pipeline as an oracle
   (what the edge would aggregate from any uploads they might send, its test set
   included). ``bmfl.attacks.collusion.shape_edge_uploads`` runs it, in the
   simulator and wherever a fleet holds its attackers' uploads before sending them.

An attack with a goal beyond a lower accuracy says how far it got:
:meth:`Attack.success_rate` on the test set (a backdoor, a targeted label flip), which the
simulator records each round.

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
from typing import Callable

import torch
from torch import nn

from bmfl.data.base import TensorData
from bmfl.training.local import LocalTrainingConfig
from bmfl.registry import ParamsRepr, Registry


KNOWLEDGE = ("own", "omniscient", "white_box")
"""What colluding attackers see at their edge: their own uploads only (partial
knowledge, Fang et al. 2020's "partial knowledge"), also every honest upload, or also
the edge's pipeline itself as an oracle (the worst case: nothing of the edge secret)."""


@dataclass
class AttackContext:
    """What a vehicle knows in round ``round_index``: the global model w^{r-1}
    (``reference``), the one before it w^{r-2} if it kept it, its random source, and
    its own identity and current edge (None where the caller does not say)."""

    reference: torch.Tensor
    generator: torch.Generator
    previous_reference: torch.Tensor | None = None
    round_index: int = 1
    vehicle: int | None = None
    edge: int | None = None


@dataclass
class EdgeView:
    """What the attackers of one edge see together in round ``round_index``:
    ``own`` (A, d) their trained uploads in ``vehicles`` order; ``honest`` (H, d) the
    honest uploads of the edge when the attack is omniscient, else None; ``total`` the
    number of uploads the edge will aggregate (n, known to every attacker, e.g. from
    the trainer list the edge commits on chain); ``edge_aggregate`` (white-box attacks
    only) maps the (A, d) uploads the attackers might send to the aggregate the edge
    would then record (w^{r-1} where it would record none); ``edge_bars`` (white-box, at
    an edge that keeps standings) how many of them the edge would then bar from its
    later rounds (``bmfl.rounds.standing``)."""

    edge: int
    vehicles: list[int]
    own: torch.Tensor
    reference: torch.Tensor
    generator: torch.Generator
    total: int
    round_index: int = 1
    previous_reference: torch.Tensor | None = None
    honest: torch.Tensor | None = None
    edge_aggregate: Callable[[torch.Tensor], torch.Tensor] | None = None
    edge_bars: Callable[[torch.Tensor], int] | None = None

    def known(self) -> torch.Tensor:
        """The benign-looking uploads the attackers can estimate statistics from: the
        honest ones when omniscient, else their own honestly trained uploads."""
        return self.own if self.honest is None or len(self.honest) == 0 else self.honest


class Attack(ParamsRepr):
    name = "attack"
    trains = True  # False: poison_update ignores the trained upload, so skip training
    colludes = False  # True: collude shapes the edge's attackers' uploads together
    knowledge = "own"  # one of KNOWLEDGE: what collude's view holds

    def poison_data(self, data: TensorData, generator: torch.Generator) -> TensorData:
        return data

    @property
    def rewrites_data(self) -> bool:
        """Whether :meth:`poison_data` changes the vehicle's data (then it needs the raw
        inputs: a backdoor draws its trigger on pixels, not on mapped features)."""
        return type(self).poison_data is not Attack.poison_data

    def training_config(self, config: LocalTrainingConfig) -> LocalTrainingConfig:
        return config

    def start_vector(self, context: AttackContext) -> torch.Tensor:
        return context.reference

    def poison_update(self, upload: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return upload

    def collude(self, view: EdgeView) -> torch.Tensor:
        """The (A, d) uploads the edge's attackers send, from what they see."""
        return view.own

    def success_rate(self, model: nn.Module, test: TensorData) -> float | None:
        """How much of its own goal the attack reaches on the test set, in [0, 1] (a
        backdoor's triggered images, a targeted flip's source images, classified as its
        target); None for an attack whose only goal is a lower accuracy."""
        return None


@torch.no_grad()
def predicted_labels(model: nn.Module, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """The classes ``model`` predicts for inputs ``x``, in eval mode (its mode restored)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    labels = [model(part.to(device)).argmax(1).cpu() for part in x.split(chunk)]
    model.train(was_training)
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)


ATTACKS: Registry[Attack] = Registry("attack")
register_attack = ATTACKS.register
get_attack = ATTACKS.create
available_attacks = ATTACKS.names
