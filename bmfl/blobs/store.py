"""The one interface every blob store implements: put → CID, get, has, pin, stat."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class BlobStat:
    cid: str
    size: int
    pinned: bool


class BlobStore(ABC):
    """A content-addressed store; CIDs are strings as Kubo prints them."""

    @abstractmethod
    def put(self, data: bytes, *, pin: bool = False) -> str:
        """Store ``data`` and return its CID (optionally pinning it)."""

    @abstractmethod
    def get(self, cid: str) -> bytes:
        """The bytes named by ``cid``, verified against it."""

    @abstractmethod
    def has(self, cid: str) -> bool:
        """Whether the store holds ``cid`` locally."""

    @abstractmethod
    def pin(self, cid: str) -> None:
        """Keep ``cid`` from garbage collection."""

    @abstractmethod
    def stat(self, cid: str) -> BlobStat:
        """Size and pin state of ``cid``."""
