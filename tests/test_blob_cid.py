"""The CID builder against Kubo's known answers, and its properties."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from bmfl.blobs.cid import PROFILES, Profile, cid_text, compute_cid, parse_cid, verify_cid
from bmfl.blobs.errors import BlobIntegrityError, InvalidCIDError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ipfs_cid_vectors.json").read_text())  # copy of shared/vectors


def vector_input(spec: dict) -> bytes:
    """Literal bytes, or the ChaCha20 keystream (key sha256(seed), zero nonce) cut to size."""
    if "literal" in spec:
        return spec["literal"].encode()
    key = hashlib.sha256(spec["chacha20_seed"].encode()).digest()
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return encryptor.update(bytes(spec["size"]))


def test_profiles_match_the_vector_file() -> None:
    for name, p in VECTORS["profiles"].items():
        assert PROFILES[name] == Profile(p["chunk_size"], p["max_links"], p["raw_leaves"], p["cid_version"])


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=[v["name"] for v in VECTORS["vectors"]])
def test_kubo_vector(vector: dict) -> None:
    data = vector_input(vector["input"])
    cid = compute_cid(data, PROFILES[vector["profile"]])
    assert str(cid) == vector["cid"]
    verify_cid(data, vector["cid"], PROFILES[vector["profile"]])


def test_empty_file_cids_are_kubos() -> None:
    assert str(compute_cid(b"", PROFILES["v0"])) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert str(compute_cid(b"")) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_single_chunk_raw_cid_digest_is_the_blob_sha256() -> None:
    blob = bytes(range(256)) * 1024  # exactly one 256 KiB chunk
    assert compute_cid(blob).raw_digest == hashlib.sha256(blob).digest()
    assert cid_text(blob) == str(compute_cid(blob)) and cid_text(b"") == str(compute_cid(b""))
    bigger = blob + b"x"
    assert cid_text(bigger) == str(compute_cid(bigger))
    cid = compute_cid(bigger)
    assert cid.codec.name == "dag-pb" and cid.raw_digest != hashlib.sha256(bigger).digest()


class ShortReads(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


small_profiles = st.builds(
    Profile,
    chunk_size=st.integers(1, 64),
    max_links=st.integers(2, 6),
    raw_leaves=st.booleans(),
    cid_version=st.just(1),
) | st.builds(Profile, st.integers(1, 64), st.integers(2, 6), st.just(False), st.just(0))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=2000), profile=small_profiles, step=st.integers(1, 100))
def test_stream_and_bytes_agree_and_verify(data: bytes, profile: Profile, step: int) -> None:
    cid = compute_cid(data, profile)
    assert cid_text(data, profile) == str(cid)  # the one-raw-leaf shortcut names what the DAG does
    assert compute_cid(ShortReads(data, step), profile) == cid
    verify_cid(data, cid, profile)
    if data:
        flipped = bytes([data[0] ^ 1]) + data[1:]
        with pytest.raises(BlobIntegrityError):
            verify_cid(flipped, cid, profile)
    with pytest.raises(BlobIntegrityError):
        verify_cid(data + b"\0", cid, profile)


def test_parse_cid_normalises_and_refuses() -> None:
    v1 = "bafybeigmix7t42i6jacydtquhet7srwvgpizfg7gjbq7627d35mjomtu64"
    assert str(parse_cid(parse_cid(v1).set(base="base36").encode())) == v1
    for bad in ["", "../../etc/passwd", "Qm123", "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"]:
        with pytest.raises(InvalidCIDError):
            parse_cid(bad)


@settings(max_examples=300, deadline=None)
@given(text=st.text() | st.from_regex(r"\A(Qm|bafy|bafk|z|f|k|u)[0-9A-Za-z]{0,60}\Z"))
def test_parse_cid_raises_only_invalid_cid_error(text: str) -> None:
    try:
        parse_cid(text)
    except InvalidCIDError:
        pass


BAD_PROFILES = [(0, 174, True, 1), (1 << 21, 174, True, 1), (1024, 1, True, 1), (1024, 174, True, 0), (1024, 174, False, 2)]


@pytest.mark.parametrize("args", BAD_PROFILES)
def test_bad_profiles_are_refused(args: tuple) -> None:
    with pytest.raises(ValueError):
        Profile(*args)
