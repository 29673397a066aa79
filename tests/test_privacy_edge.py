"""Privacy that holds against the edge (docs/security.md, "Privacy"): a curious edge
with everything it sees cannot replay a vehicle's noise (the old seeded path it could);
DP rounds the accountant cannot state exactly are refused (fixed-size batches, δ ≥ 1/n);
a release without noise makes ε infinite or is refused; the sample count goes out
through the accountant and the profile commitment resists the brute force that broke
the unsalted hash; DP-FedAvg's user-level ε equals an independent ``dp_accounting``
computation."""

from __future__ import annotations

import hashlib
import itertools
import json
import math

import dp_accounting
import pytest
import torch
from eth_account import Account
from pydantic import ValidationError
from rich.console import Console

from bmfl.aggregation import get_aggregator
from bmfl.attacks import AttackContext
from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.privacy import (
    COUNT_NOISE, DEFAULT_BUDGET, BudgetExceeded, InsecureNoise, PrivacyAccountant, PrivacyEngine, PrivacyRefused,
    SecureGenerator,
)  # fmt: skip
from bmfl.privacy.noise import CHUNK, gaussian, keystream, poisson_mask
from bmfl.protocol.schemas import TrainingSpec
from bmfl.rounds.seeds import vehicle_seed
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.training.fleet import fleet_uploads
from bmfl.training.local import LocalTrainingConfig
from chain.anvil import dev_key
from service_fixtures import OPERATOR, service_chain  # noqa: F401
from vehicle_client.accounts import fleet_accounts, fund
from vehicle_client.vehicle import Vehicle
from vehicle_fixtures import CHAIN_ID, assignment, image_data

N, BATCH, LR, SIGMA, CLIP = 24, 32, 0.1, 1.0, 1.0  # q = 1: every round uses all 24 samples
ONE_STEP = {"epochs": 1, "batch_size": BATCH, "lr": LR, "noise_multiplier": SIGMA, "clip": CLIP, "max_steps": 1}


def global_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("bmfl_cnn").state_dict()


def upload_of(vehicle: Vehicle, round_: int = 1) -> torch.Tensor:
    from bmfl.blobs.codec import decode_state

    return flatten(decode_state(vehicle.train(assignment(round_, **ONE_STEP), global_state()).blob, "bmfl_cnn")[0])


def replay(generator: torch.Generator) -> torch.Tensor:
    """The edge's replay of the round with the vehicle's exact data and a guessed seed."""
    context = AttackContext(flatten(global_state()), generator, None, 1)
    return fleet_uploads(create_model("bmfl_cnn"), [image_data(N)], assignment(**ONE_STEP).training.local(), [context])[0]


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


# ------------------------------------------------------------------ secure noise


def test_a_curious_edge_cannot_replay_a_vehicles_noise() -> None:
    """The edge knows the task, the global model, every public seed and key and even the
    vehicle's data; two runs of the vehicle still differ by the noise's scale, and no
    replay comes closer than that."""
    account = Account.from_key(dev_key(6))
    first, second = upload_of(Vehicle(account, image_data(N), CHAIN_ID)), upload_of(Vehicle(account, image_data(N), CHAIN_ID))
    noise_scale = LR * SIGMA * CLIP * math.sqrt(2) / N  # one step: Δ = η (z₁ − z₂) / B, z ~ N(0, σ²C²)
    assert rms(first - second) == pytest.approx(noise_scale, rel=0.05)
    address = int(account.address, 16)
    guesses = [vehicle_seed(s, i) for s in range(3) for i in range(8)] + [0, 7, address % 2**63, int(dev_key(6), 16) % 2**63]
    closest = min(rms(replay(torch.Generator().manual_seed(g)) - first) for g in guesses)
    assert closest > 0.9 * noise_scale  # a wrong guess is as far as another run: two independent noises


def test_the_old_seeded_path_is_replayed_bit_for_bit() -> None:
    """The same edge against the simulator's labelled insecure option (the old scheme):
    the test above would fail there."""
    seed = vehicle_seed(0, 3)
    upload = replay(torch.Generator().manual_seed(seed))
    guesses = [vehicle_seed(s, i) for s in range(3) for i in range(8)]
    assert any(torch.equal(replay(torch.Generator().manual_seed(g)), upload) for g in guesses)


def test_the_vehicle_refuses_a_seeded_source() -> None:
    v = Vehicle(Account.from_key(dev_key(6)), image_data(N), CHAIN_ID)
    assert isinstance(v.generator, SecureGenerator)
    v.generator = torch.Generator().manual_seed(1)
    with pytest.raises(InsecureNoise):
        upload_of(v)
    assert v.privacy.steps == 0


def test_secure_draws_have_the_right_distribution_on_every_device() -> None:
    source = SecureGenerator()
    z = gaussian((200_000,), 2.0, source)
    assert z.dtype == torch.float32 and abs(float(z.mean())) < 0.02 and float(z.std()) == pytest.approx(2.0, rel=0.01)
    assert not torch.equal(gaussian((8,), 1.0, source), gaussian((8,), 1.0, source))
    picks = [len(poisson_mask(1000, 0.1, source)) for _ in range(200)]
    assert sum(picks) / len(picks) == pytest.approx(100, rel=0.05)  # Binomial(1000, 0.1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        model = create_model("bmfl_cnn").to(device)
        context = AttackContext(flatten(model.state_dict()).to(device), SecureGenerator(), None, 1)
        (up,) = fleet_uploads(model, [image_data(N)], LocalTrainingConfig(**ONE_STEP), [context], engines=[PrivacyEngine()])
        assert up.device.type == device and bool(torch.isfinite(up).all())


def test_the_secret_stream_is_aes_256_ctr() -> None:
    """NIST SP 800-38A, F.5.5 (CTR-AES256.Encrypt): the first two blocks' keystream is
    plaintext ⊕ ciphertext, read in one call or in pieces alike."""
    key = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    counter = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    plain = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    cipher = bytes.fromhex("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5")
    expected = bytes(p ^ c for p, c in zip(plain, cipher))
    assert keystream(key, counter)(32) == expected
    read = keystream(key, counter)
    assert read(5) + read(20) + read(7) == expected


def test_secure_normals_match_the_normal_distribution_across_passes() -> None:
    """Drawn in several passes of the stream (CHUNK each): Kolmogorov–Smirnov distance,
    tails and kurtosis of N(0, 1) (bounds at about 6 standard errors for 200,000 draws)."""
    n = 200_000
    assert n > 4 * CHUNK
    z = gaussian((n,), 1.0, SecureGenerator()).double()
    ks = (torch.special.ndtr(z.sort().values) - torch.arange(1, n + 1, dtype=torch.float64) / n).abs().max()
    assert float(ks) < 0.006
    assert float((z.abs() > 3).double().mean()) == pytest.approx(0.0027, abs=7e-4)
    assert float((z**4).mean()) == pytest.approx(3.0, abs=0.07)
    assert abs(float((z**3).mean())) < 0.04


def test_the_simulator_labels_its_reproducible_noise_and_can_run_secure() -> None:
    base = {
        "name": "secure", "rounds": 1, "vehicles": 3, "edges": 1, "data": {"name": "mnist_5k"},
        "partition": {"kind": "iid", "options": {}}, "aggregation": {"edge": {"name": "fedavg"}, "filters": []},
        "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_steps": 1},
    }  # fmt: skip
    assert SimulationConfig.model_validate(base).insecure_reproducible_noise  # default: reproducible research runs
    seeded = SimulationConfig.model_validate(base)
    assert torch.equal(run_simulation(seeded, Console(quiet=True)).final_vector, run_simulation(seeded, Console(quiet=True)).final_vector)
    secure = SimulationConfig.model_validate(base | {"insecure_reproducible_noise": False})
    assert not torch.equal(run_simulation(secure, Console(quiet=True)).final_vector, run_simulation(secure, Console(quiet=True)).final_vector)


# ------------------------------------------------------------------ exact accounting


def test_fixed_size_dp_batches_are_refused() -> None:
    with pytest.raises(ValidationError, match="fixed_batches_with_dp"):
        TrainingSpec(sampling="fixed")
    assert TrainingSpec(sampling="fixed", dp=False).sampling == "fixed"  # no DP: nothing to account
    with pytest.raises(ValidationError, match="fixed_batches_with_dp"):
        SimulationConfig.model_validate({"training": {"sampling": "fixed"}})
    engine = PrivacyEngine()
    context = AttackContext(flatten(global_state()), SecureGenerator(), None, 1)
    with pytest.raises(PrivacyRefused) as refused:
        fleet_uploads(create_model("bmfl_cnn"), [image_data(N)], LocalTrainingConfig(sampling="fixed"), [context], engines=[engine])
    assert refused.value.reason == "fixed_batches_with_dp" and engine.steps == 0


def test_delta_of_one_over_n_or_more_is_refused() -> None:
    v = Vehicle(Account.from_key(dev_key(6)), image_data(N), CHAIN_ID)
    with pytest.raises(PrivacyRefused) as refused:
        v.train(assignment(1, **(ONE_STEP | {"delta": 1 / N})), global_state())
    assert refused.value.reason == "delta_too_large" and "n = 24" in str(refused.value) and v.privacy.steps == 0
    assert v.train(assignment(1, **(ONE_STEP | {"delta": 1 / (N + 1)})), global_state()).epsilon > 0
    engine = PrivacyEngine()  # the simulator's path refuses it too
    context = AttackContext(flatten(global_state()), torch.Generator().manual_seed(0), None, 1)
    with pytest.raises(PrivacyRefused):
        fleet_uploads(create_model("bmfl_cnn"), [image_data(N)], LocalTrainingConfig(delta=0.5), [context], engines=[engine])


def test_a_non_private_task_then_a_dp_task_reports_infinity_or_is_refused() -> None:
    account = Account.from_key(dev_key(6))
    default = Vehicle(account, image_data(N), CHAIN_ID)
    assert default.epsilon_budget == DEFAULT_BUDGET == 10.0
    with pytest.raises(BudgetExceeded):  # a finite budget refuses training without noise
        default.train(assignment(1, **(ONE_STEP | {"dp": False})), global_state())
    assert default.privacy.steps == 0 and not default.privacy.unbounded
    unlimited = Vehicle(account, image_data(N), CHAIN_ID, epsilon_budget=math.inf)
    assert unlimited.train(assignment(1, task_id=1, **(ONE_STEP | {"dp": False})), global_state()).epsilon is None
    later = unlimited.train(assignment(1, task_id=2, **ONE_STEP), global_state())  # the same engine across tasks
    assert later.epsilon is None and unlimited.epsilon() == math.inf and unlimited.privacy.steps == 1


# ------------------------------------------------------------------ no side channels


def non_iid(n_a: int, a: int, n_b: int, b: int) -> TensorData:
    """A complete non-IID vehicle: two classes only."""
    labels = torch.tensor([a] * n_a + [b] * n_b)
    return TensorData(torch.rand(len(labels), 1, 28, 28), labels, num_classes=10)


def brute_force(samples: int, commitment: bytes) -> list[int] | None:
    """The attack that broke the unsalted hash: every two-class histogram of ``samples``."""
    for a, b in itertools.combinations(range(10), 2):
        for k in range(1, samples):
            labels = [0] * 10
            labels[a], labels[b] = k, samples - k
            profile = json.dumps({"labels": labels, "samples": samples}, sort_keys=True, separators=(",", ":"))
            if hashlib.sha256(profile.encode()).digest() == commitment:
                return labels
    return None


def test_nothing_on_chain_lets_a_brute_force_recover_the_label_histogram(service_chain) -> None:  # noqa: F811
    data = non_iid(30, 2, 18, 7)
    truth = data.label_histogram().tolist()
    old, new = fleet_accounts(seed=77, count=2)
    assert fund(service_chain.w3, Account.from_key(dev_key(OPERATOR)), [old.address, new.address], 10**17) == 2
    # the old scheme: the count in clear and an unsalted hash (registered by hand)
    unsalted = hashlib.sha256(json.dumps({"labels": truth, "samples": 48}, sort_keys=True, separators=(",", ":")).encode()).digest()
    old_index, _ = service_chain.access("0x" + bytes(old.key).hex()).registry.register_vehicle(1, 0, 48, unsalted)
    # the vehicle client now: a noisy count through its accountant and a salted commitment
    vehicle = Vehicle(new, data, service_chain.chain_id)
    new_index = vehicle.register(service_chain.access("0x" + bytes(new.key).hex()))
    registry = service_chain.access(dev_key(OPERATOR)).registry
    seen_old, seen_new = registry.vehicle(old_index), registry.vehicle(new_index)
    assert brute_force(seen_old.samples, seen_old.profile_hash) == truth  # the test can fail: the old scheme falls
    assert brute_force(48, seen_new.profile_hash) is None  # even given the true count
    assert seen_new.samples == vehicle.registered_samples and vehicle.privacy.steps == 1
    alone = PrivacyAccountant(1e-5)
    alone.step(1.0, COUNT_NOISE)
    assert vehicle.epsilon() == pytest.approx(alone.epsilon())  # the count's ε is in the vehicle's accountant


def test_the_noisy_count_is_centred_with_the_stated_noise() -> None:
    counts = [PrivacyEngine().release_count(500, SecureGenerator()) for _ in range(400)]
    mean = sum(counts) / len(counts)
    std = math.sqrt(sum((c - mean) ** 2 for c in counts) / (len(counts) - 1))
    assert abs(mean - 500) < 4 * COUNT_NOISE / math.sqrt(len(counts)) and std == pytest.approx(COUNT_NOISE, rel=0.15)


# ------------------------------------------------------------------ user-level DP (DP-FedAvg at the edge)


def reference_epsilon(sigma: float, rounds: int, delta: float, q: float = 1.0) -> float:
    """Independent: dp_accounting's own RDP accountant over ``rounds`` sampled Gaussians."""
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), rounds)
    return dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta)


def test_dp_fedavg_clips_each_update_adds_noise_and_reports_epsilon() -> None:
    rule = get_aggregator("dp_fedavg", clip=0.5, noise_multiplier=2.0, delta=1e-5)
    reference = torch.zeros(50_000)
    updates = torch.stack([torch.full((50_000,), v) for v in (1.0, -1.0, 3.0, 0.001)])
    result = rule(updates, torch.tensor([10.0, 20.0, 30.0, 40.0]), reference, round_index=3)
    clipped = [0.5 / math.sqrt(50_000) * s for s in (1, -1, 1)] + [0.001]  # three clipped to norm C, one kept
    noise = result.aggregate - sum(clipped) / 4
    assert float(noise.std()) == pytest.approx(2.0 * 0.5 / 4, rel=0.02)  # σC / K
    assert result.weights.tolist() == [0.25] * 4 and result.info["clipped"] == 3
    assert result.info["user_level_epsilon"] == pytest.approx(reference_epsilon(2.0, 3, 1e-5), rel=1e-6)
    sampled = get_aggregator("dp_fedavg", noise_multiplier=1.0, sampling_rate=0.1)(updates, None, reference, round_index=20)
    assert sampled.info["user_level_epsilon"] == pytest.approx(reference_epsilon(1.0, 20, 1e-5, 0.1), rel=1e-6)


def test_dp_fedavg_runs_in_the_simulator_with_its_epsilon() -> None:
    config = SimulationConfig.model_validate({
        "name": "user_level", "rounds": 3, "vehicles": 6, "edges": 2, "data": {"name": "mnist_5k"},
        "partition": {"kind": "iid", "options": {}}, "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "max_steps": 1},
        "aggregation": {"edge": {"name": "dp_fedavg", "options": {"clip": 0.5, "noise_multiplier": 1.5}}, "filters": []},
    })  # fmt: skip
    result = run_simulation(config, Console(quiet=True))
    assert [m.user_epsilon for m in result.rounds] == pytest.approx([reference_epsilon(1.5, r, 1e-5) for r in (1, 2, 3)], rel=1e-6)
    assert result.rounds[-1].epsilon_max is not None  # sample-level ε at the vehicles, alongside
