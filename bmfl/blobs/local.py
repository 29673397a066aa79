"""A directory store whose CIDs equal Kubo's (``ipfs add --cid-version 1 --raw-leaves``).

Layout: ``blobs/<shard>/<cid>`` holds the whole blob, ``pins/<cid>`` marks a pin. Writes
go to a temporary file in the destination directory, are fsynced, then renamed with
``os.replace``: a crash leaves no partially written blob under a CID name, and writers in
several processes racing on one blob all rename identical bytes. Every read rehashes.
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from bmfl.blobs.cid import DEFAULT_PROFILE, Profile, cid_text, parse_cid, verify_cid
from bmfl.blobs.errors import BlobIntegrityError, BlobNotFoundError
from bmfl.blobs.store import BlobStat, BlobStore

_TEMP_PREFIX = ".tmp-"
STALE_TEMP_S = 3600.0


class StoredBlobCorruptError(BlobIntegrityError):
    """A blob on disk no longer matches its CID (tampering or disk corruption)."""


@lru_cache(maxsize=4096)
def _canonical(cid: str) -> str:
    """``cid`` validated and in canonical text (parsing costs about a millisecond, and the
    same CIDs come back often); an invalid one raises every time (errors are not cached)."""
    return str(parse_cid(cid))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class LocalBlobStore(BlobStore):
    """Blobs in a directory; safe for concurrent processes on one machine."""

    def __init__(self, root: str | os.PathLike[str], profile: Profile = DEFAULT_PROFILE) -> None:
        self.root = Path(root)
        self.profile = profile
        self._blobs = self.root / "blobs"
        self._pins = self.root / "pins"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._pins.mkdir(parents=True, exist_ok=True)
        self._sweep_stale_temps()

    def _sweep_stale_temps(self) -> None:
        """Remove temp files left by crashed writers (old enough not to be in flight)."""
        cutoff = time.time() - STALE_TEMP_S
        for tmp in self._blobs.glob(f"*/{_TEMP_PREFIX}*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except FileNotFoundError:
                pass

    def path_of(self, cid: str) -> Path:
        """Where the blob ``cid`` lives (validated, canonical CID)."""
        return self._path(_canonical(cid))

    def _path(self, key: str) -> Path:
        return self._blobs / key[-3:-1] / key

    def put(self, data: bytes, *, pin: bool = False) -> str:
        cid = cid_text(data, self.profile)  # canonical: what parse_cid gives back
        path = self._path(cid)
        path.parent.mkdir(exist_ok=True)
        if not self._intact(path, cid):
            atomic_write(path, data)
        if pin:
            (self._pins / cid).touch(exist_ok=True)
        return cid

    def _intact(self, path: Path, cid: str) -> bool:
        try:
            verify_cid(path.read_bytes(), cid, self.profile)
        except (FileNotFoundError, BlobIntegrityError):
            return False
        return True

    def get(self, cid: str) -> bytes:
        path = self.path_of(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {cid} in {self.root}") from None
        try:
            verify_cid(data, cid, self.profile)
        except BlobIntegrityError as exc:
            raise StoredBlobCorruptError(f"blob {cid} at {path} fails verification: {exc}") from None
        return data

    def has(self, cid: str) -> bool:
        """Presence only; :meth:`get` is what verifies the content."""
        return self.path_of(cid).is_file()

    def pin(self, cid: str) -> None:
        if not self.has(cid):
            raise BlobNotFoundError(f"cannot pin {cid}: not in {self.root}")
        (self._pins / _canonical(cid)).touch(exist_ok=True)

    def stat(self, cid: str) -> BlobStat:
        path = self.path_of(cid)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {cid} in {self.root}") from None
        key = path.name
        return BlobStat(cid=key, size=size, pinned=(self._pins / key).is_file())
