"""The simulator's blobs (docs/accounting.md): every model a simulated round moves is
encoded as the services encode it (``bmfl.blobs.codec``: safetensors with task, round,
a 42-character producer address and the model name in the header), so its size is what
the services would send, not d × 4. The transfers themselves are the round core's
(``bmfl.rounds.traffic``). With a blob store every blob is also put there, so a run can
be checked against the store. A vehicle's compute seconds are its share, by samples
processed (steps × expected batch), of the CPU time (``time.process_time``) of the
stacked training call it took part in.
"""

from __future__ import annotations

import torch

from bmfl.blobs.codec import BlobMeta, encode_state
from bmfl.blobs.store import BlobStore
from bmfl.params import State, unflatten
from bmfl.rounds.traffic import CLOUD, Blob, Transfer, round_transfers


def address(party: str) -> str:
    """A 42-character 0x address per party ("vehicle:3", "edge:1", "cloud")."""
    kind, _, index = party.partition(":")
    prefix = {"vehicle": 0xA, "edge": 0xE, CLOUD: 0xC}[kind]
    return f"0x{prefix:x}{int(index or 0):039x}"


class BlobMeter:
    """Encodes a simulated round's models as blobs and returns its transfers."""

    def __init__(self, model: str, template: State, task_id: int, store: BlobStore | None = None) -> None:
        self.model, self.template, self.task_id, self.store = model, template, str(task_id), store

    def blob(self, vector: torch.Tensor, round_: int, producer: str) -> Blob:
        """Size (and, with a store, CID) of ``vector`` encoded as ``producer``'s blob."""
        meta = BlobMeta(self.task_id, round_, address(producer), self.model)
        data = encode_state(unflatten(vector.detach().cpu(), self.template), meta)
        return len(data), self.store.put(data) if self.store is not None else None

    def uploads(self, r: int, uploads: dict[int, torch.Tensor]) -> dict[int, Blob]:
        """One edge's round-``r`` uploads (vehicle → w̃_m) as blobs, so the vectors
        themselves need not outlive the edge's aggregation."""
        return {v: self.blob(w, r, f"vehicle:{v}") for v, w in uploads.items()}

    def round(
        self, r: int, reference: torch.Tensor, uploads: dict[int, dict[int, Blob]], preliminaries: dict[int, torch.Tensor]
    ) -> list[Transfer]:
        """Round ``r``'s transfers (``uploads``: edge → vehicle → blob, from
        :meth:`uploads`; ``preliminaries``: edge → w_ℓ)."""
        return round_transfers(
            self.blob(reference, r - 1, CLOUD), uploads, {e: self.blob(w, r, f"edge:{e}") for e, w in preliminaries.items()}
        )


def share_compute(seconds: float, work: dict[int, float]) -> dict[int, float]:
    """Split ``seconds`` of one stacked call over its vehicles in proportion to ``work``."""
    total = sum(work.values())
    return {v: seconds * w / total if total else 0.0 for v, w in work.items()}
