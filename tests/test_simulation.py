import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from rich.console import Console

from bmfl.simulation import SimulationConfig, load_config, run_simulation
from bmfl.simulation.output import write_outputs
from bmfl.simulation.runner import assign_vehicles

SMALL = {
    "name": "small",
    "rounds": 2,
    "vehicles": 6,
    "edges": 2,
    "data": {"name": "mnist_5k"},
    "partition": {"kind": "iid", "options": {}},
    "training": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "aggregation": {"edge": {"name": "fedavg"}, "filters": []},
}


def _quiet():
    return Console(quiet=True)


def test_assignment_deals_every_vehicle_to_one_edge():
    edges = assign_vehicles(50, 5, seed=0)
    assert [len(e) for e in edges] == [10] * 5
    assert sorted(v for e in edges for v in e) == list(range(50))
    assert edges == assign_vehicles(50, 5, seed=0) and edges != assign_vehicles(50, 5, seed=1)


def test_double_aggregation_round_metrics_and_determinism():
    config = SimulationConfig.model_validate(SMALL)
    first = run_simulation(config, _quiet())
    again = run_simulation(config, _quiet())
    assert [r.accuracy for r in first.rounds] == [r.accuracy for r in again.rounds]
    last = first.final
    assert last.round == 2 and last.trainers == 6 and len(last.edge_accuracies) == 2
    assert last.leader is None  # two edges: no consensus (BMFLTasks.MIN_QUORUM is 3)
    three = run_simulation(SimulationConfig.model_validate({**SMALL, "edges": 3, "rounds": 1}), _quiet()).final
    assert three.leader == max(range(3), key=lambda i: three.edge_accuracies[i])
    d = 21_840
    blob = last.upstream_bytes_cloud // 2  # one encoded preliminary per edge: d floats and a header
    assert d * 4 < blob < d * 4 + 2048 and last.upstream_bytes_flat == 6 * blob
    assert last.epsilon_max >= last.epsilon_mean > 0
    assert set(first.epsilons) == set(range(6))
    assert last.accuracy > 0.3  # learns in two short rounds


def test_fraction_selects_part_of_each_edge_and_flat_fl_is_one_edge():
    config = SimulationConfig.model_validate({**SMALL, "rounds": 1, "edges": 1, "fraction": 0.5})
    result = run_simulation(config, _quiet())
    assert result.final.trainers == 3 and len(result.final.edge_accuracies) == 1
    assert 21_840 * 4 < result.final.upstream_bytes_cloud < 21_840 * 4 + 2048


def test_target_accuracy_stops_early():
    config = SimulationConfig.model_validate({**SMALL, "rounds": 5, "target_accuracy": 0.01})
    assert len(run_simulation(config, _quiet()).rounds) == 1


def test_outputs_are_written(tmp_path):
    config = SimulationConfig.model_validate({**SMALL, "rounds": 1, "training": {**SMALL["training"], "dp": False}})
    result = run_simulation(config, _quiet())
    paths = write_outputs(result, tmp_path)
    row = json.loads(paths["jsonl"].read_text().splitlines()[0])
    assert row["round"] == 1 and row["epsilon_max"] is None
    assert paths["csv"].read_text().startswith("round,accuracy,loss")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_files_toml_yaml_and_strictness(tmp_path):
    (tmp_path / "a.toml").write_text('rounds = 3\n[training]\ndp = false\n')
    (tmp_path / "b.yaml").write_text("rounds: 4\npartition:\n  kind: iid\n")
    assert load_config(tmp_path / "a.toml").rounds == 3
    assert load_config(tmp_path / "a.toml").training.dp is False
    assert load_config(tmp_path / "b.yaml").partition.kind == "iid"
    assert load_config(tmp_path / "b.yaml", {"rounds": 9}).rounds == 9
    (tmp_path / "c.toml").write_text("roundz = 3\n")
    with pytest.raises(ValidationError, match="roundz"):
        load_config(tmp_path / "c.toml")
    packaged = Path(__file__).parents[1] / "bmfl" / "configs" / "demo.toml"
    demo = load_config(packaged)
    assert (demo.vehicles, demo.edges, demo.model) == (50, 5, "bmfl_cnn")


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "launcher.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("simulate", "demo", "version"):
        assert command in out
