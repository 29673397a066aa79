"""Hypothesis properties of the decoders every untrusted blob goes through and of the CID
builder: random and mutated bytes never make ``decode_state`` or ``decode_test_set``
raise anything but their own refusal; random states round-trip and encode to one byte
string (hence one digest and one CID) whatever their key order; a blob's raw CID carries
its sha2-256. (tests/test_blob_cid.py covers stream/bytes agreement and ``parse_cid``.)"""

from __future__ import annotations

from collections import OrderedDict

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmfl.blobs.cid import compute_cid, parse_cid
from bmfl.blobs.codec import BlobMeta, ModelSpec, blob_digest, decode_state, encode_state
from bmfl.blobs.errors import BlobCodecError
from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.protocol.testset import TestSetError, decode_test_set, encode_test_set
from security_fixtures import forged_headers, mutated

META = BlobMeta(task="7", round=2, producer="0x" + "ab" * 20, model="bmfl_cnn")
HONEST = encode_state(create_model("bmfl_cnn").state_dict(), META)
TEST_SET = encode_test_set(TensorData(torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2]), 3))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def refused_or_decoded(blob: bytes) -> None:
    """``decode_state`` either decodes or raises :class:`BlobCodecError`, nothing else."""
    try:
        state, meta = decode_state(blob, "bmfl_cnn")
    except BlobCodecError:
        return
    assert all(bool(torch.isfinite(t).all()) for t in state.values()) and meta.model == "bmfl_cnn"


@FUZZ
@given(blob=st.binary(max_size=4096))
def test_random_bytes_are_refused(blob: bytes) -> None:
    refused_or_decoded(blob)


@FUZZ
@given(blob=mutated(HONEST))
def test_mutated_blobs_are_refused_or_decoded(blob: bytes) -> None:
    refused_or_decoded(blob)


@FUZZ
@given(blob=forged_headers(HONEST))
def test_forged_headers_are_refused_or_decoded(blob: bytes) -> None:
    refused_or_decoded(blob)


@FUZZ
@given(blob=st.binary(max_size=2048) | mutated(TEST_SET))
def test_test_set_decoder_refuses_garbage(blob: bytes) -> None:
    try:
        data = decode_test_set(blob)
    except TestSetError:
        return
    assert len(data.x) == len(data.y) and bool(torch.isfinite(data.x).all())


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def states(draw: st.DrawFn) -> OrderedDict[str, torch.Tensor]:
    names = draw(st.lists(st.from_regex(r"\A[a-z][a-z0-9_.]{0,11}\Z"), min_size=1, max_size=5, unique=True))
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name in names:
        shape = draw(st.lists(st.integers(1, 4), max_size=3))
        count = int(torch.Size(shape).numel())
        values = draw(st.lists(finite, min_size=count, max_size=count))
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64]))
        out[name] = torch.tensor(values, dtype=torch.float32).reshape(shape).to(dtype)
    return out


@settings(max_examples=100, deadline=None)
@given(state=states(), order=st.randoms(use_true_random=False))
def test_round_trip_and_stable_digest_and_cid(state: OrderedDict[str, torch.Tensor], order) -> None:
    spec = ModelSpec.from_state("fuzz", state)
    meta = BlobMeta(task="1", round=1, producer="p", model="fuzz")
    blob = encode_state(state, meta)
    keys = list(state)
    order.shuffle(keys)
    shuffled = encode_state(OrderedDict((k, state[k].clone()) for k in keys), meta)
    assert shuffled == blob  # canonical: the same digest and CID whatever the order
    decoded, decoded_meta = decode_state(blob, spec)
    assert decoded_meta == meta and list(decoded) == list(state)
    assert all(torch.equal(decoded[k], state[k]) and decoded[k].dtype == state[k].dtype for k in state)
    cid = compute_cid(blob)
    assert cid == compute_cid(shuffled) and parse_cid(str(cid)) == cid
    if len(blob) <= 256 * 1024:  # one raw leaf: the CID's multihash is the on-chain digest
        assert cid.raw_digest == blob_digest(blob).raw
