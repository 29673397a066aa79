"""Local store: Kubo CIDs, verify-on-read, atomic writes, several processes at once."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from bmfl.blobs.cid import PROFILES, compute_cid
from bmfl.blobs.errors import BlobNotFoundError, InvalidCIDError
from bmfl.blobs.local import LocalBlobStore, StoredBlobCorruptError
from bmfl.blobs.store import BlobStat

DATA = os.urandom(600_000)  # three chunks: a dag-pb root over raw leaves


def test_put_get_has_pin_stat(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    cid = store.put(DATA)
    assert cid == str(compute_cid(DATA)) and cid.startswith("bafybei")
    assert store.has(cid) and store.get(cid) == DATA
    assert store.stat(cid) == BlobStat(cid, len(DATA), pinned=False)
    store.pin(cid)
    assert store.stat(cid).pinned
    assert store.put(b"hello world", pin=True) == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    assert LocalBlobStore(tmp_path).stat("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e").pinned


def test_v0_profile_store(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, PROFILES["v0"])
    cid = store.put(b"hello world")
    assert cid == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD" and store.get(cid) == b"hello world"


def test_missing_and_invalid(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    absent = str(compute_cid(b"absent"))
    assert not store.has(absent)
    for call in (store.get, store.stat, store.pin):
        with pytest.raises(BlobNotFoundError):
            call(absent)
    with pytest.raises(InvalidCIDError):
        store.get("../../etc/passwd")


@pytest.mark.parametrize("tamper", ["flip", "truncate", "append", "swap"])
def test_tampering_on_disk_is_detected_on_read(tmp_path: Path, tamper: str) -> None:
    store = LocalBlobStore(tmp_path)
    cid = store.put(DATA)
    path = store.path_of(cid)
    path.chmod(0o644)
    content = {
        "flip": DATA[:1000] + bytes([DATA[1000] ^ 0x80]) + DATA[1001:],
        "truncate": DATA[:-1],
        "append": DATA + b"\0",
        "swap": os.urandom(len(DATA)),
    }[tamper]
    path.write_bytes(content)
    with pytest.raises(StoredBlobCorruptError, match=cid):
        store.get(cid)
    assert store.put(DATA) == cid and store.get(cid) == DATA  # a fresh put repairs it


def _crash_during_write(root: str) -> None:
    os.fsync = lambda fd: os._exit(17)  # the process dies after writing, before the rename
    LocalBlobStore(root).put(DATA)


def test_crash_mid_write_leaves_no_visible_blob(tmp_path: Path) -> None:
    proc = mp.get_context("spawn").Process(target=_crash_during_write, args=(str(tmp_path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 17
    store = LocalBlobStore(tmp_path)
    cid = str(compute_cid(DATA))
    temps = list(tmp_path.glob("blobs/*/.tmp-*"))
    assert len(temps) == 1 and not store.has(cid)
    with pytest.raises(BlobNotFoundError):
        store.get(cid)
    assert store.put(DATA) == cid and store.get(cid) == DATA
    old = time.time() - 2 * 3600
    os.utime(temps[0], (old, old))
    LocalBlobStore(tmp_path)
    assert not temps[0].exists()


def _writer(root: str, data: bytes, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:
    barrier.wait()
    store = LocalBlobStore(root)
    cids = {store.put(data, pin=True) for _ in range(5)}
    out.put((cids, store.get(next(iter(cids))) == data))


def test_concurrent_writers_of_one_blob(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), DATA, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cid = str(compute_cid(DATA))
    assert all(cids == {cid} and ok for cids, ok in results)
    store = LocalBlobStore(tmp_path)
    assert store.get(cid) == DATA and store.stat(cid).pinned
    assert not list(tmp_path.glob("blobs/*/.tmp-*"))
