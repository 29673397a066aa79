"""Codec: canonical safetensors encoding and strict decoding against the task's model."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load as st_load

from bmfl.blobs.cid import compute_cid
from bmfl.blobs.codec import BlobMeta, blob_digest, decode_state, encode_state, model_spec
from bmfl.blobs.errors import BlobCodecError, CodecReason
from bmfl.models import create_model

META = BlobMeta(task="task-7", round=3, producer="0x00000000000000000000000000000000000000aa", model="bmfl_cnn")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("bmfl_cnn").state_dict()


@pytest.fixture(scope="module")
def blob(state: dict[str, torch.Tensor]) -> bytes:
    return encode_state(state, META)


def raw_blob(header: dict, payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def parts(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def reason(data: bytes, **kwargs: object) -> CodecReason:
    with pytest.raises(BlobCodecError) as info:
        decode_state(data, "bmfl_cnn", **kwargs)
    assert str(info.value).startswith(info.value.reason.value + ":")
    return info.value.reason


def test_round_trip_keeps_order_values_and_metadata(state: dict, blob: bytes) -> None:
    decoded, meta = decode_state(blob, "bmfl_cnn")
    assert meta == META
    assert list(decoded) == list(state)
    assert all(torch.equal(decoded[k], state[k]) and decoded[k].dtype == state[k].dtype for k in state)
    assert sum(t.numel() for t in decoded.values()) == 21840


def test_blob_is_plain_safetensors(state: dict, blob: bytes) -> None:
    assert set(st_load(blob)) == set(state)


def test_encoding_is_canonical_across_processes(blob: bytes) -> None:
    code = (
        "import torch;from bmfl.blobs.codec import encode_state,BlobMeta,blob_digest;"
        "from bmfl.models import create_model;torch.manual_seed(0);"
        f"print(blob_digest(encode_state(create_model('bmfl_cnn').state_dict(),BlobMeta(**{META.__dict__!r}))).hex)"
    )
    env = {"PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == blob_digest(blob).hex


def test_digest_is_sha256_and_the_raw_cid_digest(blob: bytes) -> None:
    digest = blob_digest(blob)
    assert digest.hex0x == "0x" + digest.hex and len(digest.raw) == 32
    cid = compute_cid(blob)
    assert cid.codec.name == "raw" and cid.raw_digest == digest.raw


def test_empty_oversize_truncated_and_header_overflow(blob: bytes) -> None:
    assert reason(b"") is CodecReason.EMPTY
    assert reason(blob, max_bytes=len(blob) - 1) is CodecReason.OVERSIZE
    assert reason(blob[:5]) is CodecReason.TRUNCATED
    assert reason(blob[:-4]) is CodecReason.TRUNCATED
    assert reason(struct.pack("<Q", 1 << 40) + blob[8:]) is CodecReason.HEADER_OVERFLOW
    assert reason(struct.pack("<Q", len(blob)) + blob[8:]) is CodecReason.HEADER_OVERFLOW
    assert reason(b"\x04\0\0\0\0\0\0\0\xff\xfe{}") is CodecReason.MALFORMED


def test_tensor_names_are_checked(blob: bytes) -> None:
    header, payload = parts(blob)
    missing = {k: v for k, v in header.items() if k != "fc2.bias"}
    assert reason(raw_blob(missing, payload)) is CodecReason.MISSING_TENSOR
    extra = dict(header, **{"evil": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})
    assert reason(raw_blob(extra, payload)) is CodecReason.EXTRA_TENSOR
    text = json.dumps(header)
    dup = text[:-1] + ',"fc2.bias":' + json.dumps(header["fc2.bias"]) + "}"
    assert reason(struct.pack("<Q", len(dup)) + dup.encode() + payload) is CodecReason.DUPLICATE_TENSOR


def test_dtype_shape_and_model_are_checked(state: dict) -> None:
    as_double = {k: v.double() for k, v in state.items()}
    assert reason(encode_state(as_double, META)) is CodecReason.DTYPE
    reshaped = dict(state, **{"fc2.bias": state["fc2.bias"].reshape(2, 5)})
    assert reason(encode_state(reshaped, META)) is CodecReason.SHAPE
    other = BlobMeta(META.task, META.round, META.producer, "bmfl_mlp")
    assert reason(encode_state(state, other)) is CodecReason.MODEL


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(state: dict, value: float) -> None:
    bad = dict(state, **{"conv1.bias": state["conv1.bias"].clone()})
    bad["conv1.bias"][3] = value
    assert reason(encode_state(bad, META)) is CodecReason.NON_FINITE


@pytest.mark.parametrize("name", ["net.0.weight", "net.2.bias", "net.4.weight"])  # 156,800 values (checked alone), 200, 2,000
def test_a_non_finite_value_is_named_in_small_and_large_tensors(name: str) -> None:
    bad = {k: v.clone() for k, v in create_model("mlp").state_dict().items()}
    bad[name].view(-1)[-1] = float("nan")
    with pytest.raises(BlobCodecError, match=rf"^non_finite: {name} holds NaN or Inf$") as info:
        decode_state(encode_state(bad, BlobMeta("t", 1, "p", "mlp")), "mlp")
    assert info.value.reason is CodecReason.NON_FINITE


def test_metadata_is_required_and_typed(blob: bytes) -> None:
    header, payload = parts(blob)
    for meta in [None, {"task": "t"}, dict(header["__metadata__"], round="-1"), dict(header["__metadata__"], x="1")]:
        bad = dict(header)
        if meta is None:
            del bad["__metadata__"]
        else:
            bad["__metadata__"] = meta
        assert reason(raw_blob(bad, payload)) is CodecReason.METADATA


def test_offsets_must_tile_the_data(blob: bytes) -> None:
    header, payload = parts(blob)
    shifted = json.loads(json.dumps(header))
    begin, end = shifted["conv1.bias"]["data_offsets"]
    shifted["conv1.bias"]["data_offsets"] = [begin + 4, end + 4]
    assert reason(raw_blob(shifted, payload)) is CodecReason.MALFORMED
    assert reason(raw_blob(header, payload + b"\0" * 8)) is CodecReason.MALFORMED


def test_spec_is_built_from_the_registry() -> None:
    spec = model_spec("bmfl_cnn")
    assert spec.nbytes == 21840 * 4 and spec.tensors[0].name == "conv1.weight"
