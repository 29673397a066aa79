"""A malicious vehicle runs the honest pipeline with the core attack's hooks: its
upload is exactly what ``bmfl.attacks`` defines for that attack."""

from __future__ import annotations

import pytest
import torch
from eth_account import Account

from bmfl.attacks import AttackContext, get_attack, local_upload
from bmfl.blobs.codec import decode_state
from bmfl.models import create_model
from bmfl.params import flatten
from chain.anvil import dev_key
from vehicle_client.vehicle import Vehicle
from vehicle_fixtures import CHAIN_ID, assignment, image_data

SEED = 11


def global_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model("bmfl_cnn").state_dict()


@pytest.fixture(autouse=True)
def seeded_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare a vehicle's upload bit for bit with the core's, which needs
    the simulator's seeded (insecure) source: the vehicle's refusal of it is lifted for
    them only (test_privacy_edge.py checks the refusal)."""
    monkeypatch.setattr("vehicle_client.vehicle.require_secure", lambda source: None)


def vehicle(key: int, attack: str | None = None, **options: object) -> Vehicle:
    v = Vehicle(
        Account.from_key(dev_key(key)), image_data(), CHAIN_ID, attack=get_attack(attack, **options) if attack else None,
    )  # fmt: skip
    v.generator = torch.Generator().manual_seed(SEED)
    return v


def upload_vector(v: Vehicle, round_: int, state: dict[str, torch.Tensor]) -> torch.Tensor:
    decoded, meta = decode_state(v.train(assignment(round_), state).blob, "bmfl_cnn")
    assert (meta.task, meta.round, meta.producer, meta.model) == ("7", round_, v.address, "bmfl_cnn")
    return flatten(decoded)


def test_sign_flip_poisons_the_honest_update() -> None:
    w0 = global_state(0)
    honest = upload_vector(vehicle(7), 1, w0)
    poisoned = upload_vector(vehicle(8, "sign_flip"), 1, w0)
    context = AttackContext(flatten(w0), torch.Generator())
    assert torch.equal(poisoned, get_attack("sign_flip").poison_update(honest, context))


def test_label_flip_trains_on_flipped_labels_through_local_upload() -> None:
    w0 = global_state(0)
    poisoned = upload_vector(vehicle(8, "label_flip"), 1, w0)
    context = AttackContext(flatten(w0), torch.Generator().manual_seed(SEED), None, 1)
    expected = local_upload(create_model("bmfl_cnn"), image_data(), assignment().training.local(), context, get_attack("label_flip"))
    assert torch.equal(poisoned, expected)
    assert not torch.equal(poisoned, upload_vector(vehicle(7), 1, w0))


def test_tuning_scaling_starts_from_the_model_before_the_last_one() -> None:
    w0, w1 = global_state(0), global_state(1)
    attacker = vehicle(8, "tuning_scaling", gamma=3.0)
    upload_vector(attacker, 1, w0)
    poisoned = upload_vector(attacker, 2, w1)
    attack, gen = get_attack("tuning_scaling", gamma=3.0), torch.Generator().manual_seed(SEED)
    config = assignment().training.local()
    local_upload(create_model("bmfl_cnn"), image_data(), config, AttackContext(flatten(w0), gen, None, 1), attack)
    context = AttackContext(flatten(w1), gen, flatten(w0), 2)  # w^{r-1} = w1, w^{r-2} = w0
    assert torch.equal(poisoned, local_upload(create_model("bmfl_cnn"), image_data(), config, context, attack))
