"""Communication accounting of one round (docs/accounting.md): which blobs move
between which parties, and how many bytes each party sends (up) and receives (down).

A round moves, by blob (sizes are the encoded blobs' lengths, ``bmfl.blobs.codec``):

1. w^{r-1} from the cloud to every trainer and to every edge with trainers (the
   reference the edge filters against);
2. each trainer's upload w̃_m to its edge;
3. each recording edge's preliminary w_ℓ to the cloud, and to every other recording
   edge (proof of testing accuracy: every edge scores every preliminary);
4. in the services, w^r from the cloud to the edges that evaluate it (``evaluators``;
   the simulator evaluates w^r itself and moves nothing for it).

Blobs go through the blob store (IPFS), but each is counted once per party that sends
or fetches it, so every byte is sent once and received once: totals up equal totals
down. The simulator and the cloud's round record both use :func:`round_transfers`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

CLOUD = "cloud"
Blob = tuple[int, "str | None"]
"""A blob's size in bytes and, where known, its CID."""


def vehicle(v: int | str) -> str:
    return f"vehicle:{v}"


def edge(e: int) -> str:
    return f"edge:{e}"


@dataclass(frozen=True)
class Transfer:
    sender: str
    receiver: str
    size: int  # bytes of the encoded blob
    cid: str | None = None


@dataclass
class RoundTraffic:
    """Bytes up (sent) and down (received) per party; vehicles also carry compute seconds."""

    vehicles: dict[int | str, dict[str, float]] = field(default_factory=dict)  # v → {up, down[, compute_s]}
    edges: dict[int, dict[str, int]] = field(default_factory=dict)  # ℓ → {up, down}
    cloud: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})

    def total(self, party: str, direction: str) -> int:
        """Bytes of ``direction`` ("up"/"down") summed over ``party`` ("vehicles"/"edges"/"cloud")."""
        if party == CLOUD:
            return self.cloud[direction]
        return int(sum(p[direction] for p in getattr(self, party).values()))

    def as_dict(self) -> dict:
        return {"vehicles": self.vehicles, "edges": self.edges, "cloud": self.cloud}


def round_transfers(
    reference: Blob,
    uploads: Mapping[int, Mapping[int | str, Blob]],
    preliminaries: Mapping[int, Blob],
    evaluation: tuple[Blob, Sequence[int]] | None = None,
) -> list[Transfer]:
    """The transfers of one round: ``reference`` is w^{r-1}, ``uploads`` edge → vehicle
    → its upload, ``preliminaries`` edge → w_ℓ, ``evaluation`` (w^r, the edges that
    evaluate it) in the services."""
    out: list[Transfer] = []

    def send(blob: Blob, sender: str, receivers: Sequence[str]) -> None:
        out.extend(Transfer(sender, r, blob[0], blob[1]) for r in receivers)

    active = [e for e, ups in uploads.items() if ups]
    send(reference, CLOUD, [vehicle(v) for e in active for v in uploads[e]] + [edge(e) for e in active])
    for e in active:
        for v, blob in uploads[e].items():
            send(blob, vehicle(v), [edge(e)])
    for e, blob in preliminaries.items():
        send(blob, edge(e), [CLOUD, *(edge(o) for o in preliminaries if o != e)])
    if evaluation is not None:
        send(evaluation[0], CLOUD, [edge(e) for e in evaluation[1]])
    return out


def summarise(transfers: Sequence[Transfer], compute_s: Mapping[int | str, float] | None = None) -> RoundTraffic:
    """Per-party bytes of ``transfers`` (and vehicles' compute seconds, when given)."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"up": 0, "down": 0})
    for t in transfers:
        totals[t.sender]["up"] += t.size
        totals[t.receiver]["down"] += t.size
    traffic = RoundTraffic(cloud=dict(totals.pop(CLOUD, {"up": 0, "down": 0})))
    for party, sums in totals.items():
        kind, _, index = party.partition(":")
        if kind == "edge":
            traffic.edges[int(index)] = dict(sums)
            continue
        key: int | str = int(index) if index.isdigit() else index
        traffic.vehicles[key] = dict(sums)
        if compute_s is not None:
            traffic.vehicles[key]["compute_s"] = compute_s.get(key, 0.0)
    traffic.vehicles = dict(sorted(traffic.vehicles.items(), key=lambda kv: str(kv[0])))
    traffic.edges = dict(sorted(traffic.edges.items()))
    return traffic
