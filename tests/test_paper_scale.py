"""bench/paper_scale.py (issue 22, item 3): its grid and its report's known answers on
written records (the runs themselves take an hour: `bench/paper_scale.py run`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not installed

from bench import paper_scale as ps  # noqa: E402


def _write(runs: Path, job: tuple, accuracy: list[float], attackers: int = 0, flagged: int = 0) -> None:
    cfg = ps._config(*job)
    folder = runs / cfg.name
    folder.mkdir(parents=True)
    dumped = cfg.model_dump(mode="json")
    dumped["training"]["noise_multiplier"] = 1.25  # as the runner records it once derived from ε
    (folder / "config.json").write_text(json.dumps(dumped))
    rows = [{"accuracy": a, "epsilon_max": 8.0 * (i + 1) / len(accuracy), "honest_flagged": 0, "wall_time_s": 1.0,
             "attackers_selected": attackers, "attackers_flagged": flagged} for i, a in enumerate(accuracy)]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_the_grid_runs_each_setting_once_on_both_datasets():
    names = [ps._config(*job).name for job in ps.jobs()]
    assert len(names) == len(set(names)) == 2 * (6 * 3 + 2 * 3 * 3 + 2 * 3 * 1 + 2 * 2 * 3)  # private_long, private: 60 % only
    assert sum("fashion_mnist" in n for n in names) == len(names) // 2
    assert {ps._config(*j).data.name for j in ps.jobs()} == {"fashion_mnist", "mnist"}


def test_the_report_gives_each_attack_its_share_of_the_same_seeds_clean_run(tmp_path, monkeypatch):
    monkeypatch.setattr(ps, "ROUNDS", 6)
    monkeypatch.setattr(ps, "_sampling", lambda data: "sizes")
    clean, attacked = ("BMFL", "mnist", 0, None, 0.0), ("BMFL", "mnist", 0, "sign_flip", 0.6)
    _write(tmp_path, clean, [0.1, 0.8, 0.8, 0.8, 0.8, 0.8])
    _write(tmp_path, attacked, [0.1, 0.6, 0.6, 0.6, 0.6, 0.6], attackers=30, flagged=30)
    _write(tmp_path, ("FedAvg", "mnist", 0, None, 0.0), [0.1, 0.2, 0.3])  # unfinished: left out
    out, plot = tmp_path / "paper_scale.md", tmp_path / "paper_scale.png"
    ps.render(tmp_path, out, plot)
    text = out.read_text()
    row = next(line for line in text.splitlines() if "| sign_flip | 60% | BMFL |" in line)
    cells = [c.strip() for c in row.split("|")]
    assert cells[6] == "0.600" and cells[7] == "0.75" and cells[9] == "180 of 180"  # 0.6 / 0.8; 6 rounds × 30
    assert "| FedAvg |" not in text and plot.stat().st_size > 0
    assert "| MNIST-10k (8,000 train / 2,000 test) | BMFL | 1 | 0.8000 | 0.8000 | 8.00 | 1.250 | 0 |" in text
