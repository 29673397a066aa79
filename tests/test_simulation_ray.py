"""The simulator's Ray backend (bmfl.simulation.ray_fleet) on one local Ray instance:
the same w^r, privacy spend and random streams as in-process for the same seed."""

import os
import subprocess
import sys

import pytest
from rich.console import Console

from bmfl.simulation import SimulationConfig, run_simulation

ray = pytest.importorskip("ray")

FLEET = {
    "name": "ray",
    "rounds": 2,
    "vehicles": 70,  # more than one task of 64 vehicles
    "edges": 7,
    "fraction": 0.9,  # some vehicles sit a round out: their state is made on first use
    "model": "cnn1d",
    "data": {"name": "flows_synthetic", "options": {"num_flows": 800}, "edge_test_samples": 50},
    "partition": {"kind": "iid", "options": {}},
    "training": {"epochs": 1, "batch_size": 8, "dp": True},
    "aggregation": {"edge": {"name": "fedavg"}, "filters": []},
    "attack": {"name": "label_flip", "fraction": 0.2},  # an attack's hooks run in the tasks too
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_gives_the_in_process_rounds(local_ray):
    config = SimulationConfig.model_validate(FLEET)
    here = run_simulation(config, Console(quiet=True), keep_models=True)
    there = run_simulation(config, Console(quiet=True), keep_models=True, ray_address="local")
    assert len(here.models) == len(there.models) == 2
    for w_here, w_there in zip(here.models, there.models):
        assert (w_here - w_there).abs().max().item() <= 1e-6
    assert here.selected == there.selected and len(here.selected[0]) == 7
    assert here.epsilons == there.epsilons and len(here.epsilons) > 0
    assert [r.uploads for r in here.rounds] == [r.uploads for r in there.rounds]
    assert ray.is_initialized()  # a Ray the caller started is left running


@pytest.mark.slow
def test_cli_says_how_to_install_ray_when_missing(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('vehicles = 2\nedges = 1\nrounds = 1\n')
    blocked = "import sys; sys.modules['ray'] = None; from launcher.cli import app; app()"
    out = subprocess.run(
        [sys.executable, "-c", blocked, "simulate", str(config), "--ray", "auto"], capture_output=True, text=True, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "pip install 'bmfl[ray]'" in " ".join((out.stdout + out.stderr).split())
