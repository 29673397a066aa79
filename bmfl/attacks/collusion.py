"""Colluding attackers of one edge shape their uploads together (issue 17).

The simulator (and the vehicle fleet, for the vehicles one batch trains) trains every
selected vehicle first, honest and attacker alike, then calls
:func:`shape_edge_uploads` once per edge: the edge's attackers' trained uploads go to
:meth:`bmfl.attacks.base.Attack.collude` together, with the honest uploads of the edge
when the attack's ``knowledge`` is ``"omniscient"`` or ``"white_box"``, and for
``"white_box"`` an oracle of the edge's pipeline (``edge_aggregate``). The random source is keyed by
(seed, round, edge), so a rerun or an auditor draws the same.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from bmfl.attacks.base import KNOWLEDGE, Attack, EdgeView

COLLUSION_SEED_STRIDE = 1_000_033
"""A prime larger than any number of edges or rounds: distinct (seed, round, edge) keys."""


def collusion_generator(seed: int, round_index: int, edge: int) -> torch.Generator:
    """The generator of edge ``edge``'s attackers in round ``round_index``."""
    key = (seed * COLLUSION_SEED_STRIDE + round_index) * COLLUSION_SEED_STRIDE + edge
    return torch.Generator().manual_seed(key % 2**63)


def shape_edge_uploads(
    attack: Attack,
    uploads: Mapping[int, torch.Tensor],
    attackers: frozenset[int] | set[int],
    edge: int,
    reference: torch.Tensor,
    round_index: int,
    seed: int,
    previous_reference: torch.Tensor | None = None,
    edge_aggregate: Callable[[Mapping[int, torch.Tensor]], torch.Tensor] | None = None,
    edge_bars: Callable[[Mapping[int, torch.Tensor]], frozenset[int]] | None = None,
) -> dict[int, torch.Tensor]:
    """``uploads`` (vehicle → trained w̃_m, every upload of ``edge`` this round) with
    the attackers' replaced by what ``attack.collude`` sends; unchanged when the attack
    does not collude or the edge has no attacker. ``edge_aggregate`` maps a round's
    uploads of the edge to what the edge records from them; a white-box attack needs it.
    ``edge_bars`` maps them to the vehicles the edge would bar from its later rounds (an
    edge that keeps standings, ``bmfl.rounds.standing``); both receive the same mapping
    for one push, so a caller may answer both from one close."""
    if attack.knowledge not in KNOWLEDGE:
        raise ValueError(f"attack knowledge must be one of {KNOWLEDGE}, got {attack.knowledge!r}")
    mine = [v for v in sorted(uploads) if v in attackers]
    if not attack.colludes or not mine:
        return dict(uploads)
    honest = [v for v in sorted(uploads) if v not in attackers]
    oracle = bars = None
    if attack.knowledge == "white_box":
        if edge_aggregate is None:
            raise ValueError(f"attack {attack.name!r} is white-box: it needs the edge's pipeline, which this caller cannot give")
        last: dict[str, object] = {}

        def trial(sent: torch.Tensor) -> Mapping[int, torch.Tensor]:
            if last.get("sent") is not sent:
                last.update(sent=sent, trial={**uploads, **dict(zip(mine, sent))})
            return last["trial"]  # type: ignore[return-value]

        oracle = lambda sent: edge_aggregate(trial(sent))  # noqa: E731
        if edge_bars is not None:
            bars = lambda sent: len(edge_bars(trial(sent)) & set(mine))  # noqa: E731
    view = EdgeView(
        edge=edge,
        vehicles=mine,
        own=torch.stack([uploads[v] for v in mine]),
        reference=reference,
        generator=collusion_generator(seed, round_index, edge),
        total=len(uploads),
        round_index=round_index,
        previous_reference=previous_reference,
        honest=torch.stack([uploads[v] for v in honest]) if attack.knowledge != "own" and honest else None,
        edge_aggregate=oracle,
        edge_bars=bars,
    )
    sent = attack.collude(view)
    if sent.shape != view.own.shape:
        raise ValueError(f"collude returned shape {tuple(sent.shape)}, expected {tuple(view.own.shape)}")
    return {**uploads, **dict(zip(mine, sent))}
