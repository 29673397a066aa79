"""The UnixFS file DAG exactly as Kubo's balanced importer lays it out.

Chunks of ``chunk_size`` bytes become leaves (raw blocks, or dag-pb nodes wrapping a
UnixFS ``File``); internal dag-pb nodes hold up to ``max_links`` links. The first leaf is
the root; while data remains, the root becomes the first child of a new root one level
deeper, which is filled depth-first (go-unixfs ``importer/balanced``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

from multiformats import CID, multihash, varint

_UNIXFS_FILE = 2


@dataclass(frozen=True)
class Node:
    """A committed block: its CID, cumulative DAG size (``Tsize``) and file bytes."""

    cid: CID
    tsize: int
    filesize: int


def _field(number: int, wire: int) -> bytes:
    return varint.encode(number << 3 | wire)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _field(number, 2) + varint.encode(len(value)) + value


def _uint_field(number: int, value: int) -> bytes:
    return _field(number, 0) + varint.encode(value)


def unixfs_file(data: bytes | None, filesize: int, blocksizes: list[int]) -> bytes:
    """The UnixFS ``Data`` protobuf of a file node (field order as go-unixfs emits)."""
    out = _uint_field(1, _UNIXFS_FILE)
    if data:
        out += _bytes_field(2, data)
    out += _uint_field(3, filesize)
    for size in blocksizes:
        out += _uint_field(4, size)
    return out


def dag_pb(links: list[Node], data: bytes) -> bytes:
    """A dag-pb ``PBNode``: links first (Hash, empty Name, Tsize), then Data."""
    out = b""
    for link in links:
        body = _bytes_field(1, bytes(link.cid)) + _bytes_field(2, b"") + _uint_field(3, link.tsize)
        out += _bytes_field(2, body)
    return out + _bytes_field(1, data)


def _cid(block: bytes, codec: str, version: int) -> CID:
    mh = multihash.wrap(hashlib.sha256(block).digest(), "sha2-256")
    return CID("base58btc" if version == 0 else "base32", version, codec, mh)


class BalancedBuilder:
    """Builds the root :class:`Node` of a chunk stream (see the module docstring)."""

    def __init__(self, chunks: Iterator[bytes], max_links: int, raw_leaves: bool, cid_version: int) -> None:
        self._chunks = chunks
        self._pending = next(chunks, None)
        self._max_links = max_links
        self._raw_leaves = raw_leaves
        self._version = cid_version

    def build(self) -> Node:
        if self._pending is None:
            return self._leaf(b"")
        root = self._next_leaf()
        depth = 1
        while self._pending is not None:
            root = self._fill([root], depth)
            depth += 1
        return root

    def _next_leaf(self) -> Node:
        chunk, self._pending = self._pending, next(self._chunks, None)
        assert chunk is not None
        return self._leaf(chunk)

    def _leaf(self, chunk: bytes) -> Node:
        if self._raw_leaves:
            return Node(_cid(chunk, "raw", 1), len(chunk), len(chunk))
        block = dag_pb([], unixfs_file(chunk, len(chunk), []))
        return Node(_cid(block, "dag-pb", self._version), len(block), len(chunk))

    def _fill(self, children: list[Node], depth: int) -> Node:
        while len(children) < self._max_links and self._pending is not None:
            children.append(self._next_leaf() if depth == 1 else self._fill([], depth - 1))
        sizes = [c.filesize for c in children]
        block = dag_pb(children, unixfs_file(None, sum(sizes), sizes))
        tsize = len(block) + sum(c.tsize for c in children)
        return Node(_cid(block, "dag-pb", self._version), tsize, sum(sizes))
