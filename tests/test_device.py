"""One device choice (``bmfl.device``): the simulator's vehicles train, its edges score and
the residual reweighting runs on it, with the same verdicts on a GPU as on the CPU. The
GPU comparisons run where torch sees a GPU and skip elsewhere."""

import pytest
import torch

from rich.console import Console

from bmfl.aggregation.reweight import ResidualReweighting
from bmfl.attacks import AttackContext
from bmfl.data import load_dataset
from bmfl.device import default_device, using
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.simulation import SimulationConfig, run_simulation
from bmfl.training import LocalTrainingConfig
from bmfl.training.fleet import fleet_uploads

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

ATTACKED = {
    "name": "device",
    "rounds": 3,
    "vehicles": 10,
    "edges": 2,
    "data": {"name": "mnist_5k", "edge_test_samples": 300},
    "partition": {"kind": "dirichlet", "options": {"alpha": 0.9}},
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.1, "dp": True, "clip": 1.0, "noise_multiplier": 1.0},
    "insecure_reproducible_noise": True,  # the same noise on both devices: seeded CPU generators
}


def test_using_sets_the_default_device_inside_its_block_only() -> None:
    outside = default_device()
    with using("cpu") as chosen:
        assert chosen == default_device() == torch.device("cpu")
    assert default_device() == outside


def test_simulate_refuses_a_device_it_cannot_use(tmp_path) -> None:
    from typer.testing import CliRunner

    from launcher.cli import app  # the services' dependencies: not needed by the GPU tests

    config = tmp_path / "c.toml"
    config.write_text('name = "x"\n')
    runner = CliRunner()
    bogus = runner.invoke(app, ["simulate", str(config), "--device", "tpu9"])
    assert bogus.exit_code == 2 and "--device" in bogus.output
    if not torch.cuda.is_available():
        missing = runner.invoke(app, ["simulate", str(config), "--device", "cuda"])
        assert missing.exit_code == 2 and "no GPU" in missing.output
        with pytest.raises(ValueError, match="no GPU"), using("cuda"):
            pass


def _updates(k: int, d: int, attackers: int) -> torch.Tensor:
    """K uploads near a common model, the first ``attackers`` of them pushed away."""
    g = torch.Generator().manual_seed(k * 7 + d)
    base = torch.randn(d, generator=g)
    updates = base + 0.05 * torch.randn(k, d, generator=g)
    updates[:attackers] -= 3.0 * (updates[:attackers] - base)
    return updates


@cuda
@pytest.mark.parametrize(("k", "theta"), [(10, "paper"), (10, "reference"), (57, "paper")])
def test_reweighting_on_the_gpu_gives_the_cpu_kernel_s_weights(k: int, theta: str) -> None:
    updates = _updates(k, 40_000, k // 5)
    rule = ResidualReweighting(theta=theta)
    with using("cpu"):
        on_cpu = rule.aggregate(updates, torch.ones(k), updates.mean(0))
    with using("cuda"):
        on_gpu = rule.aggregate(updates, torch.ones(k), updates.mean(0))
    assert on_gpu.aggregate.device.type == "cpu"
    torch.testing.assert_close(on_gpu.weights, on_cpu.weights, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(on_gpu.aggregate, on_cpu.aggregate, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(on_gpu.info["replaced_fraction"], on_cpu.info["replaced_fraction"], rtol=0, atol=1e-4)


def _run(config: dict, device: str):
    with using(device):
        return run_simulation(SimulationConfig.model_validate(config), Console(quiet=True), keep_models=True)


@cuda
@pytest.mark.parametrize(
    "attack", [{"name": "sign_flip", "fraction": 0.3}, {"name": "alie", "fraction": 0.3}, {"name": "backdoor", "fraction": 0.2}]
)
def test_a_round_on_the_gpu_gives_the_cpu_s_verdicts_and_model(attack: dict) -> None:
    config = {**ATTACKED, "attack": attack}
    on_cpu, on_gpu = _run(config, "cpu"), _run(config, "cuda")
    for cpu_round, gpu_round in zip(on_cpu.verdicts, on_gpu.verdicts, strict=True):
        assert cpu_round.keys() == gpu_round.keys()
        for edge, verdicts in cpu_round.items():
            for vehicle, verdict in verdicts.items():
                other = gpu_round[edge][vehicle]
                assert (other.flagged, other.reason) == (verdict.flagged, verdict.reason), (edge, vehicle)
                assert other.theta == pytest.approx(verdict.theta, rel=1e-4, abs=1e-6)
                if verdict.reliability is not None:
                    assert other.reliability == pytest.approx(verdict.reliability, rel=1e-4, abs=1e-4)
    for cpu_model, gpu_model in zip(on_cpu.models, on_gpu.models, strict=True):
        assert gpu_model.device.type == "cpu"
        torch.testing.assert_close(gpu_model, cpu_model, rtol=0, atol=1e-3)
    assert on_gpu.final.accuracy == pytest.approx(on_cpu.final.accuracy, abs=0.01)
    assert on_gpu.epsilons == on_cpu.epsilons


@cuda
def test_vehicles_train_on_the_gpu_and_upload_on_the_cpu() -> None:
    """The vehicle client's call: the model on the device, w^{r-1} decoded on the CPU."""
    train, _ = load_dataset("mnist_5k")
    datasets = [train.subset(list(range(100 * i, 100 * i + 100))) for i in range(3)]
    config = LocalTrainingConfig(epochs=1, batch_size=32, lr=0.1, dp=True, clip=1.0, noise_multiplier=1.0)
    reference = flatten(create_model("bmfl_cnn").state_dict())

    def uploads(device: str) -> list[torch.Tensor]:
        contexts = [AttackContext(reference, torch.Generator().manual_seed(i), None, 1) for i in range(3)]
        return fleet_uploads(create_model("bmfl_cnn", device), datasets, config, contexts)

    for on_cpu, on_gpu in zip(uploads("cpu"), uploads("cuda"), strict=True):
        assert on_gpu.device.type == "cpu" and not torch.equal(on_cpu, reference)
        torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=1e-4)
