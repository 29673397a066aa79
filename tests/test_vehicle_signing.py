"""A vehicle's signed association and upload recover to its address with the protocol's
messages; changing any signed field makes verification fail; signing and recovery give
eth_account's answers."""

from __future__ import annotations

import hashlib
import json

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from bmfl.protocol.signing import SignatureError, associate_message, recover, sign, update_message, verify
from chain.anvil import dev_key
from vehicle_client.vehicle import Vehicle
from vehicle_fixtures import CHAIN_ID, EDGE, image_data

OTHER_EDGE = Account.from_key(dev_key(2)).address


@pytest.fixture
def vehicle() -> Vehicle:
    return Vehicle(Account.from_key(dev_key(5)), image_data(), CHAIN_ID, position=(1.25, -3.5))


def test_association_signature(vehicle: Vehicle) -> None:
    req = vehicle.associate_request(EDGE, previous_edge=OTHER_EDGE)
    assert (req.vehicle, req.x, req.y, req.previous_edge) == (vehicle.address, 1.25, -3.5, OTHER_EDGE)
    signed = (CHAIN_ID, req.vehicle, EDGE, req.x, req.y, req.timestamp_ms)
    assert recover(associate_message(*signed), req.signature) == vehicle.address
    for tampered in (
        (CHAIN_ID + 1, req.vehicle, EDGE, req.x, req.y, req.timestamp_ms),
        (CHAIN_ID, req.vehicle, OTHER_EDGE, req.x, req.y, req.timestamp_ms),
        (CHAIN_ID, req.vehicle, EDGE, req.x + 0.01, req.y, req.timestamp_ms),
        (CHAIN_ID, req.vehicle, EDGE, req.x, req.y, req.timestamp_ms + 1),
    ):
        with pytest.raises(SignatureError):
            verify(associate_message(*tampered), req.signature, vehicle.address)


def test_update_signature(vehicle: Vehicle) -> None:
    blob = b"an update blob"
    form = vehicle.upload_form(EDGE, 7, 3, blob, epsilon=2.5)
    assert form["vehicle"] == vehicle.address and float(form["epsilon"]) == 2.5
    digest = hashlib.sha256(blob).digest()
    assert recover(update_message(CHAIN_ID, 7, 3, EDGE, digest), form["signature"]) == vehicle.address
    for tampered in (
        (CHAIN_ID, 7, 4, EDGE, digest),  # replay in another round
        (CHAIN_ID, 8, 3, EDGE, digest),  # another task
        (CHAIN_ID, 7, 3, OTHER_EDGE, digest),  # another edge
        (CHAIN_ID, 7, 3, EDGE, hashlib.sha256(blob + b"!").digest()),  # other bytes
        (CHAIN_ID + 1, 7, 3, EDGE, digest),  # another chain
    ):
        with pytest.raises(SignatureError):
            verify(update_message(*tampered), form["signature"], vehicle.address)
    assert "epsilon" not in vehicle.upload_form(EDGE, 7, 3, blob, epsilon=None)


def test_profile_hash_is_a_salted_commitment_to_size_and_labels(vehicle: Vehicle) -> None:
    profile = {"labels": [3, 3, 3, 3, 2, 2, 2, 2, 2, 2], "samples": 24}
    assert vehicle.profile() == profile
    canonical = json.dumps(profile, sort_keys=True, separators=(",", ":")).encode()
    assert len(vehicle.salt) == 32 and vehicle.profile_hash() == hashlib.sha256(vehicle.salt + canonical).digest()
    assert vehicle.profile_hash() != hashlib.sha256(canonical).digest()  # not the unsalted hash


def test_remembered_addresses_answer_as_eth_utils_does() -> None:
    """The memoised checksum and validity answer exactly what eth_utils answers, refuse
    what it refuses every time, and never keep a text longer than an address."""
    from eth_utils import is_address, to_checksum_address

    from bmfl.protocol import signing

    address = Account.create().address
    bad_case = address[:2] + "".join(c.swapcase() if c.isalpha() else c for c in address[2:])
    for text in (address, address.lower(), address.upper().replace("0X", "0x"), bad_case, "0x1234", "vehicle", "0x" + "g" * 40):
        for _ in range(2):  # the second answer comes from the memo
            assert signing.valid_address(text) == is_address(text)
            if is_address(text.lower()):
                assert signing.checksum_address(text) == to_checksum_address(text)
            else:
                with pytest.raises(ValueError):
                    signing.checksum_address(text)
    signing._valid.cache_clear()
    assert not signing.valid_address(address + "0" * 100)
    assert signing._valid.cache_info().currsize == 0  # a long text is refused without being kept
    assert signing.valid_address(address) and signing._valid.cache_info().currsize == 1


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_signing_and_recovery_agree_with_eth_account_byte_for_byte() -> None:
    """``sign`` and ``recover`` run on libsecp256k1 directly; eth_account is the reference:
    the same signature bytes, and the same signer (or the same refusal) for v = 0/1, the
    high-s twin, v = 29, r = 0, s = n and a flipped bit."""
    for i in range(40):
        account = Account.from_key(hashlib.sha256(b"key %d" % i).digest())
        message = f"BMFL test {i}\n" + "é" * (i % 5)
        reference = bytes(account.sign_message(encode_defunct(text=message)).signature)
        signature = sign(account, message)
        assert bytes.fromhex(signature[2:]) == reference
        r, s, v = reference[:32], int.from_bytes(reference[32:64], "big"), reference[64]
        variants = [
            reference, reference[:64] + bytes([v - 27]), r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v]),
            reference[:64] + bytes([29]), bytes(32) + reference[32:], r + SECP256K1_N.to_bytes(32, "big") + bytes([v]),
            reference[:7] + bytes([reference[7] ^ 4]) + reference[8:],
        ]  # fmt: skip
        for variant in variants:
            try:
                expected = Account.recover_message(encode_defunct(text=message), signature=variant)
            except Exception:
                expected = None
            try:
                got = recover(message, "0x" + variant.hex())
            except SignatureError:
                got = None
            assert got == expected, (i, variant.hex())
        assert recover(message, signature) == account.address
