"""Config documentation, the example config, and what one `bmfl simulate` run writes."""

import csv
import io
import json
import re
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console

from bmfl.simulation import SimulationConfig, load_config
from bmfl.simulation.cli import _run

EXAMPLE = Path(__file__).parents[1] / "bmfl" / "configs" / "example.toml"


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, info in model.model_fields.items():
        yield prefix + name, info
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _fields(sub, prefix + name + ".")


def test_every_config_field_has_a_description_and_appears_in_the_example():
    text = EXAMPLE.read_text()
    keys = set(re.findall(r"^\s*#?\s*([a-z_][a-z_0-9]*)\s*=", text, flags=re.M))
    tables = set(re.findall(r"^\[+([a-z_.]+)\]+", text, flags=re.M))
    for path, info in _fields(SimulationConfig):
        leaf = path.split(".")[-1]
        sub = info.annotation
        is_table = isinstance(sub, type) and issubclass(sub, BaseModel)
        if not is_table:
            assert info.description, f"{path} has no description"
        in_tables = any(t.endswith(leaf) or t.startswith(path + ".") for t in tables)
        assert leaf in keys or path in tables or in_tables, f"{path} missing from example"


def test_example_config_is_valid_and_uses_mobility_attack_and_filter():
    config = load_config(EXAMPLE)
    assert config.assignment.kind == "mobility" and config.attack.name == "sign_flip"
    assert [f.name for f in config.aggregation.filters] == ["self_reliability"]


def test_simulate_writes_metrics_payouts_plot_and_a_summary_line(tmp_path):
    config = SimulationConfig.model_validate({
        "name": "out", "rounds": 2, "vehicles": 6, "edges": 3, "output_dir": str(tmp_path),
        "data": {"name": "mnist_5k", "edge_test_samples": 100}, "partition": {"kind": "iid", "options": {}},
        "training": {"epochs": 1, "lr": 0.3, "momentum": 0.5, "max_steps": 2},
        "aggregation": {"edge": {"name": "reweight"}, "filters": [{"name": "self_reliability", "options": {"tolerance": 1.0}}]},
        "attack": {"name": "same_value", "fraction": 0.5},
        "assignment": {"kind": "mobility", "road_length_m": 1000.0},
    })
    buffer = io.StringIO()
    _run(config, Console(file=buffer, width=200))
    out = buffer.getvalue()
    assert "attackers flagged 6/6" in out and "payouts to attackers 0.0 %" in out and "done" in out
    folder = tmp_path / "out"
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["attackers_flagged"] for r in rows] == [3, 3]
    with (folder / "metrics.csv").open() as fh:
        header = next(csv.reader(fh))
    for column in ("accuracy", "attack_success_rate", "attackers_flagged", "attackers_missed", "honest_flagged",
                   "epsilon_max", "upstream_bytes_cloud", "upstream_bytes_flat", "wall_time_s"):
        assert column in header
    payouts = json.loads((folder / "payouts.json").read_text())
    paid = sum(payouts["vehicle_payouts_wei"].values()) + sum(payouts["block_rewards_wei"].values())
    assert paid + payouts["dust_wei"] == payouts["escrow_wei"]
    assert all(payouts["vehicle_payouts_wei"].get(str(v), 0) == 0 for v in payouts["attackers"])
    assert (folder / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
