"""The robustness matrix generator (issue 17): its summaries on known records, and the
quick matrix end to end on tiny data (the CI version)."""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest

from bmfl.reproduce import robustness as rm


def row(r, acc, trainers=10, attackers=2, honest_flagged=0, weight=0.0, asr=None):
    return {"round": r, "accuracy": acc, "trainers": trainers, "attackers_selected": attackers,
            "honest_flagged": honest_flagged, "attacker_weight": weight, "attack_success_rate": asr}


def test_summarise_known_answers():
    rec = {"rows": [row(1, 0.2, honest_flagged=2, weight=0.5), row(2, 0.4, weight=0.1, asr=0.3), row(3, 0.6, asr=0.5)]}
    s = rm.summarise(rec, settle=2)
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["asr"] == pytest.approx(0.4)
    assert s["honest_flagged"] == pytest.approx(2 / 24)
    assert s["attacker_weight"] == pytest.approx(0.2)


def test_cells_relative_to_the_same_pipelines_clean_run_per_seed():
    scale = dataclasses.replace(rm.QUICK, seeds=(0, 1), pipelines=("FedAvg",), attacks=("ALIE z=1.5",), settle=1,
                                partitions=rm.QUICK.partitions[:1])
    part = scale.partitions[0]
    records = {
        rm.key(part, rm.CLEAN, 0.0, "FedAvg", 0): {"rows": [row(1, 0.8)]},
        rm.key(part, rm.CLEAN, 0.0, "FedAvg", 1): {"rows": [row(1, 0.5)]},
        rm.key(part, "ALIE z=1.5", 0.2, "FedAvg", 0): {"rows": [row(1, 0.4)]},
        rm.key(part, "ALIE z=1.5", 0.2, "FedAvg", 1): {"rows": [row(1, 0.5)]},
    }
    cells = rm.cells(scale, records)
    assert cells[(part, "ALIE z=1.5", 0.2, "FedAvg")]["relative"] == pytest.approx([0.5, 1.0])
    assert rm._spread([0.5, 1.0], ".2f") == "0.75 ± 0.35"
    assert rm._spread([0.5, 1.0], ".2f", worst=True) == "0.75 ± 0.35 (≤ 1.00)" and rm._spread([0.5], ".2f", worst=True) == "0.50 ± 0.00"
    assert len(rm.matrix(scale)) == 4


def test_the_cache_keeps_the_reported_fields_a_column_each_and_reads_back_both_forms():
    rows = [{**dict.fromkeys(rm.ROW_FIELDS, 0.5), "round": r, "seconds": 9.0} for r in (1, 2)]
    record = {"fingerprint": "f", "rows": rows}
    stored = rm.slim(record)
    assert stored["rows"]["round"] == [1, 2] and "seconds" not in stored["rows"]
    kept = [{k: row[k] for k in rm.ROW_FIELDS} for row in rows]
    assert rm.unslim(json.loads(json.dumps(stored)))["rows"] == kept
    assert rm.unslim({"fingerprint": "f", "rows": kept})["rows"] == kept  # a cache written row by row


def test_quick_matrix_writes_the_report_and_plot(tmp_path):
    path = rm.main(["--quick", "--out", str(tmp_path), "--name", "robustness"])
    assert path == tmp_path / "robustness.md"
    text = path.read_text()
    for pipeline in rm.QUICK.pipelines:
        assert pipeline in text
    assert "| ALIE z=1.5 | 20% |" in text and "| white-box | 20% |" in text and "![accuracy per round](robustness.png)" in text
    assert "**Envelope+SMmaj+LO+NW** (the `private_leave_out` preset's pipeline)" in text
    assert "**Default** (the default pipeline)" in text and "noise_weighted; the cloud's ratchet, tolerance 0.05" in text
    assert (tmp_path / "robustness.png").stat().st_size > 10_000
    cached = gzip.open(tmp_path / "robustness.cache.jsonl.gz", "rt").read().splitlines()
    assert len(cached) == len(rm.matrix(rm.QUICK))  # every run's record, for --resume
    assert all(isinstance(json.loads(line)["rows"], dict) for line in cached)  # a column per field
    assert all(set(row) == set(rm.ROW_FIELDS) for line in cached for row in rm.unslim(json.loads(line))["rows"])
    again = rm.main(["--quick", "--out", str(tmp_path), "--name", "robustness", "--resume"])  # all reused: no simulation
    assert again.read_text().split("\n", 3)[3] == text.split("\n", 3)[3]

def test_a_profile_sets_every_runs_training_and_the_envelope_attackers_knowledge():
    from bmfl.reproduce.grid import BMFL_TRAINING
    from bmfl.simulation import SimulationConfig
    from bmfl.task import TrainingSpec

    scale = dataclasses.replace(rm.QUICK, attacks=("envelope-aware", "sign flip"), pipelines=("Envelope+DPSR+BMFL",), profile="cnn")
    cnn = {r.key: r.config for r in rm.matrix(scale)}
    private = {r.key: r.config for r in rm.matrix(dataclasses.replace(scale, profile="private"))}
    assert cnn.keys() == private.keys()
    for key, cfg in private.items():
        assert cfg["model"] == "scatter_linear" and cfg["aggregation"]["server"]["name"] == "fedavgm"
        assert cfg["aggregation"]["filters"] == [{"name": "dp_envelope", "options": {}},
                                                 {"name": "dp_self_reliability", "options": {}}]
        assert "server" not in cnn[key]["aggregation"] and cnn[key]["training"] == BMFL_TRAINING
        SimulationConfig.model_validate(cfg)
    aware = [c["attack"]["options"]["training"] for c in private.values() if c.get("attack", {}).get("name") == "envelope_aware"]
    assert aware and all(t == rm.PROFILES["private"].training for t in aware)  # what the vehicles train with
    assert TrainingSpec.model_validate(aware[0]).local().max_sampling_rate == 0.25


def test_the_pipeline_aware_attacker_is_told_each_runs_edge_pipeline():
    pipelines = ("Envelope+SMflag+DPSR+NW", "Envelope+SMflag+DPSR+MM")
    scale = dataclasses.replace(rm.QUICK, attacks=("pipeline-aware",), pipelines=pipelines, profile="private")
    told = {r.key.split("/")[3]: r.config["attack"]["options"] for r in rm.matrix(scale) if "attack" in r.config}
    assert told.keys() == set(pipelines)
    for pipeline, options in told.items():
        assert options["aggregation"] == rm.pipelines(scale.edge_test_samples)[pipeline]
        assert options["training"] == rm.PROFILES["private"].training
    assert told["Envelope+SMflag+DPSR+MM"]["aggregation"]["edge"] == {"name": "mixed_median"}


def test_the_edges_can_hold_the_whole_test_set(tmp_path):
    path = rm.main(["--quick", "--out", str(tmp_path), "--name", "full", "--test-samples", "full", "--attacks", "ALIE z=1.5",
                    "--pipelines", "FedAvg"])  # fmt: skip
    assert "edge test set the whole test set" in path.read_text()
    (record,) = [json.loads(line) for line in gzip.open(tmp_path / "full.cache.jsonl.gz", "rt").read().splitlines()][:1]
    assert json.loads(record["fingerprint"])["data"]["edge_test_samples"] is None


@pytest.mark.parametrize(("preset", "label"), [("private_leave_out", "Envelope+SMmaj+LO+NW"),
                                               ("private", "Envelope+SMmaj+LO(0.2×2.5)+NW+R(0.05)+St"),
                                               ("private_credit", "Envelope+SMmaj+LO(0.2×2.5)+Cr+NW+R(0.05)+St"),
                                               (None, "Envelope+SMmaj+LO(0.2×2.5)+NW+R(0.05)+St"),
                                               ("paper", "BMFL(τ=25)")])
def test_the_presets_are_the_measured_pipelines(preset, label):
    """The presets' edges, and a new task's default ones (``None``), run exactly the
    matrix's pipelines of docs/robustness.md."""
    from bmfl.task import PRESETS, AggregationSpec, TaskDraft

    spec = TaskDraft().aggregation if preset is None else AggregationSpec.model_validate(PRESETS[preset]["aggregation"])
    measured = AggregationSpec.model_validate(rm.pipelines(300)[label])
    assert (measured.filters, measured.edge, measured.ratchet, measured.standing) == (
        spec.filters, spec.edge, spec.ratchet, spec.standing)  # fmt: skip


def test_the_median_aware_attacker_models_each_runs_centre():
    """Against a signal median measured from the majority mean the attacker searches with
    that centre; against the geometric median its options (and the cached runs'
    fingerprints) are as before."""
    pipelines = ("Envelope+SMflag+DPSR+NW", "Envelope+SMmaj+DPSR+NW")
    scale = dataclasses.replace(rm.QUICK, attacks=("median-aware",), pipelines=pipelines, profile="private")
    told = {r.key.split("/")[3]: r.config["attack"]["options"] for r in rm.matrix(scale) if "attack" in r.config}
    assert "centre" not in told["Envelope+SMflag+DPSR+NW"]
    assert told["Envelope+SMmaj+DPSR+NW"]["centre"] == "majority_mean"


def test_the_ideal_filter_row_drops_exactly_the_attackers(tmp_path):
    """The reference row: every pipeline runs with the edges dropping exactly the
    attackers' uploads, and the report says it is no attack."""
    scale = dataclasses.replace(rm.QUICK, attacks=(rm.IDEAL, "sign flip"), pipelines=("FedAvg",), partitions=("Dirichlet(0.9)",))
    attacks = {r.key.split("/")[1]: r.config["attack"] for r in rm.matrix(scale) if "attack" in r.config}
    assert attacks[rm.IDEAL] == {"name": "sign_flip", "fraction": 0.2, "options": {}, "ideal_filter": True}
    assert "ideal_filter" not in attacks["sign flip"]
    records = {run.key: {"rows": [row(1, 0.5)]} for run in rm.matrix(scale)}
    text = rm.write_report(scale, records, tmp_path, 0.0, "cmd", "ideal").read_text()
    assert f"- **{rm.IDEAL}**: no attack; the edges drop exactly the attackers' uploads" in text
