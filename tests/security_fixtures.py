"""Helpers of the security, fuzz, fault and load tests: what "no state changed" means for
a service (its SQLite tables and the blob store's files), bad variants of an honest
update blob (named defects, and hypothesis strategies of mutations), the multipart form
of a signed upload, and the check that refused requests change nothing."""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path
from typing import Any, Callable

import torch
from eth_account.signers.local import LocalAccount
from hypothesis import strategies as st

from bmfl.blobs.codec import BlobMeta, blob_digest, decode_state, encode_state
from bmfl.protocol.signing import sign, update_message

EDGE_TABLES = ("associations", "tasks", "rounds", "updates")
CLOUD_TABLES = ("tasks", "rounds")


def assert_refused(cases: list[tuple[str, Any, int, str]], state: Callable[[], Any]) -> None:
    """Each case is (name, a call returning the response, status, reason): every call
    gets its status and reason, and ``state()`` (the service's state) never changes."""
    before = state()
    for name, call, status, reason in cases:
        reply = call()
        assert (reply.status_code, reply.json().get("reason")) == (status, reason), f"{name}: {reply.text[:300]}"
        assert state() == before, name


def tables(db_file: Path, names: tuple[str, ...]) -> list[list[tuple]]:
    """Every row of the tables ``names`` (missing database: empty)."""
    if not db_file.exists():
        return [[] for _ in names]
    with sqlite3.connect(db_file) as db:
        return [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in names]


def files(root: Path) -> list[str]:
    """Relative paths of the files under ``root`` (a blob store: blobs and pins)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def edge_state(state_dir: Path, blobs: Path) -> tuple:
    """An edge's durable state: its SQLite tables, its test sets and the blob store."""
    return tables(state_dir / "edge.sqlite3", EDGE_TABLES), files(state_dir / "test_sets"), files(blobs)


def cloud_state(state_dir: Path) -> list[list[tuple]]:
    return tables(state_dir / "cloud.sqlite3", CLOUD_TABLES)


def split(blob: bytes) -> tuple[dict, bytes]:
    """A safetensors blob's JSON header and its data."""
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join(header: dict | str, data: bytes) -> bytes:
    """A safetensors blob from a header (dict or raw JSON text) and data."""
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(text)) + text + data


def variant(honest: bytes, model: str, change: str) -> bytes:
    """``honest`` (a valid update of ``model``) with one defect named ``change``."""
    state, meta = decode_state(honest, model)
    first = next(iter(state))
    header, data = split(honest)
    if change in ("inf", "-inf"):
        state[first] = state[first].clone()
        state[first].view(-1)[0] = float(change)
    elif change in ("float64", "float16"):
        state = {k: v.to(getattr(torch, change)) for k, v in state.items()}
    elif change == "missing":
        header.pop(first)
        return join(header, data)
    elif change == "duplicate":
        text = json.dumps(header)
        return join(text[:-1] + f', "{first}": ' + json.dumps(header[first]) + "}", data)
    elif change == "extra":
        return join(dict(header, extra={"dtype": "F32", "shape": [1], "data_offsets": [len(data), len(data) + 4]}), data + bytes(4))
    elif change == "offsets":
        begin, end = header[first]["data_offsets"]
        header[first]["data_offsets"] = [begin + 4, end + 4]
        return join(header, data)
    elif change == "no_metadata":
        header.pop("__metadata__")
        return join(header, data)
    elif change.startswith("task="):
        meta = BlobMeta(change.removeprefix("task="), meta.round, meta.producer, meta.model)
    else:
        raise ValueError(change)
    return encode_state(state, meta)


def upload_form(
    account: LocalAccount, chain_id: int, task_id: int, round_: int, edge: str, blob: bytes, **fields: str
) -> dict[str, Any]:
    """``httpx`` keyword arguments of an upload of ``blob`` signed by ``account``."""
    signature = sign(account, update_message(chain_id, task_id, round_, edge, blob_digest(blob).raw))
    data = {"vehicle": account.address, "signature": signature} | fields
    return {"data": data, "files": {"blob": ("update.safetensors", blob, "application/octet-stream")}}


@st.composite
def mutated(draw: st.DrawFn, blob: bytes) -> bytes:
    """``blob`` with a few bytes replaced, a cut, or an insertion; most edits hit the header."""
    data = bytearray(blob)
    header_end = 8 + int.from_bytes(blob[:8], "little")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        at = draw(st.integers(0, min(len(data), header_end + 16)))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            data = data[:at] + data[at + draw(st.integers(1, 64)) :]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[:8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    return bytes(data)


@st.composite
def forged_headers(draw: st.DrawFn, blob: bytes) -> bytes:
    """``blob``'s header with one entry, or one field of it, replaced by arbitrary JSON."""
    header, data = split(blob)
    key = draw(st.sampled_from([*header, "__metadata__", "extra"]))
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    )
    entry = header.get(key, {})
    if isinstance(entry, dict) and entry and draw(st.booleans()):
        field = draw(st.sampled_from(sorted(entry)))
        header[key] = dict(entry, **{field: draw(json_values)})
    else:
        header[key] = draw(json_values)
    return join(json.dumps(header, allow_nan=True), data)
