"""The publisher's command line without a running task: the canonical test-set bytes are
the same in every process, keys never come from argv, a typo in the spec (a field name,
a model, a filter) costs no escrow through ``bmfl task publish`` against a real Anvil
and a real cloud (balance, nonce and task count unchanged, nothing published), and the
cloud's OpenAPI documents the signature headers and the problem bodies; ``--preset``
fills what a spec file leaves out."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from bmfl.data import TensorData
from bmfl.privacy.calibrate import RTOL
from bmfl.protocol.testset import decode_test_set, encode_test_set
from bmfl.task import PAPER_TRAINING, PRESETS, TrainingSpec
from chain.anvil import dev_key
from launcher.account import KeyMissing, load_key
from launcher.cli import app as cli
from launcher.task_cli import load_spec
from service_kit.serve import ServerThread
from service_fixtures import PUBLISHER, ServiceChain
from service_fixtures import cloud, service_chain  # noqa: F401

ENCODE = (
    "import hashlib, torch\n"
    "from bmfl.data import TensorData\n"
    "from bmfl.protocol.testset import encode_test_set\n"
    "g = torch.Generator().manual_seed(7)\n"
    "data = TensorData(torch.rand(5, 1, 4, 4, generator=g), torch.tensor([0, 3, 1, 9, 2]), 10)\n"
    "print(hashlib.sha256(encode_test_set(data)).hexdigest())\n"
)


def test_the_test_set_encoding_is_the_same_in_every_process() -> None:
    digests = set()
    for hash_seed in ("0", "1", "12345"):
        env = os.environ | {"PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", ENCODE], capture_output=True, text=True, env=env, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    g = torch.Generator().manual_seed(7)
    here = encode_test_set(TensorData(torch.rand(5, 1, 4, 4, generator=g), torch.tensor([0, 3, 1, 9, 2]), 10))
    assert digests == {hashlib.sha256(here).hexdigest()}


def test_the_layout_is_the_documented_one() -> None:
    """docs/protocol.md, "Publishing without our code": sorted compact header padded to 8
    bytes, then y (8-byte items) before x (4-byte items)."""
    data = TensorData(torch.arange(8.0).reshape(2, 1, 2, 2), torch.tensor([0, 1]), 10)
    blob = encode_test_set(data)
    n = int.from_bytes(blob[:8], "little")
    header = blob[8 : 8 + n]
    assert n % 8 == 0 and header.rstrip(b" ") == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":")).encode()
    parsed = json.loads(header)
    assert parsed["__metadata__"] == {"kind": "bmfl-testset", "num_classes": "10"}
    assert parsed["y"]["data_offsets"] == [0, 16] and parsed["x"]["data_offsets"] == [16, 48]
    assert blob[8 + n :] == data.y.numpy().tobytes() + data.x.numpy().tobytes()


def test_encode_test_set_cli_from_a_plain_safetensors_file(tmp_path: Path) -> None:
    data = TensorData(torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5]), 10)
    save_file({"y": data.y, "x": data.x}, tmp_path / "plain.safetensors", metadata={"b": "1", "a": "2"})
    out = CliRunner().invoke(cli, ["task", "encode-test-set", str(tmp_path / "t.st"), "--from", str(tmp_path / "plain.safetensors"), "--num-classes", "10"])
    assert out.exit_code == 0, out.output
    written = (tmp_path / "t.st").read_bytes()
    assert written == encode_test_set(data)
    assert f"sha2-256 0x{hashlib.sha256(written).hexdigest()}" in out.output
    assert decode_test_set(written).num_classes == 10
    bad = CliRunner().invoke(cli, ["task", "encode-test-set", str(tmp_path / "u.st"), "--from", str(tmp_path / "plain.safetensors"), "--num-classes", "3"])
    assert bad.exit_code == 2 and "labels outside [0, 3)" in bad.output and not (tmp_path / "u.st").exists()


def test_a_preset_fills_the_fields_a_spec_file_leaves_out(tmp_path: Path) -> None:
    """``--preset``: the file's fields win; ``private`` derives σ from its target ε for
    the file's rounds and plan_samples, ``paper`` is the paper's training."""
    spec = tmp_path / "task.toml"
    spec.write_text("rounds = 8\n[training]\nplan_samples = 80\nlr = 0.05\n")
    private = load_spec(spec, None, "private").training
    assert private.lr == 0.05 and private.target_epsilon == PRESETS["private"]["training"]["target_epsilon"]
    assert (1 - RTOL) * private.target_epsilon <= private.epsilon(8, [80]) <= private.target_epsilon
    paper = load_spec(spec, None, "paper").training
    assert paper.model_dump(exclude={"lr", "plan_samples"}) == PAPER_TRAINING.model_dump(exclude={"lr", "plan_samples"})
    assert load_spec(spec, None).training.noise_multiplier == TrainingSpec().noise_multiplier  # no preset: the defaults
    with pytest.raises(ValueError, match="unknown preset"):
        load_spec(spec, None, "fast")


@pytest.mark.parametrize("preset, setting, schedule, steps", [
    ("private_long", "PRIVATE_LONG", "cosine", 1),  # the frontier's best at ε = 8 over 80 rounds
    ("private", "private", "constant", 3),  # the demo's preset, as docs/paper_scale.md runs it
])
def test_a_preset_is_the_frontier_setting_its_figures_come_from(
    tmp_path: Path, preset: str, setting: str, schedule: str, steps: int
) -> None:
    """A preset trains and aggregates as the ``bench/frontier.py`` setting its measured
    figures come from (docs/frontier.md, docs/paper_scale.md), and derives σ for the
    file's rounds."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed
    from bench import frontier

    measured = frontier.config(getattr(frontier, setting, setting), 8.0, 80, False)
    spec = tmp_path / "task.toml"
    spec.write_text("rounds = 80\n[training]\nplan_samples = 100\n")
    draft = load_spec(spec, None, preset)
    assert draft.model == measured.model
    assert (draft.aggregation.filters, draft.aggregation.edge, draft.aggregation.server) == (
        measured.aggregation.filters, measured.aggregation.edge, measured.aggregation.server)
    fields = {"epochs", "max_steps", "batch_size", "lr", "momentum", "max_sampling_rate", "clip", "delta", "dp", "target_epsilon"}
    assert draft.training.model_dump(include=fields) == measured.training.model_dump(include=fields)
    assert draft.aggregation.server.schedule == schedule and draft.training.max_steps == steps
    t = draft.training
    assert (1 - RTOL) * t.target_epsilon <= t.epsilon(80, [100]) <= t.target_epsilon


def test_keys_come_from_a_file_or_the_environment_never_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = dev_key(PUBLISHER)
    (tmp_path / "k").write_text(key.removeprefix("0x") + "\n")
    assert load_key(tmp_path / "k") == key
    monkeypatch.setenv("BMFL_KEY", key)
    assert load_key(None) == key
    monkeypatch.setenv("BMFL_KEY", "0x1234")
    with pytest.raises(KeyMissing, match="64 digits"):
        load_key(None)
    monkeypatch.delenv("BMFL_KEY")
    with pytest.raises(KeyMissing, match="--key-file"):
        load_key(None)
    for command in (["task", "publish"], ["task", "cancel"], ["task", "refund"], ["tasks", "refund"], ["claim"]):
        text = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200).output
        assert "--key-file" in text and "private-key" not in text and "--key " not in text, command


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"rounds": 2, "modle": "bmfl_cnn"}, "invalid_spec"),  # a field name
        ({"rounds": 2, "model": "bmfl_cnnn"}, "unknown_model"),
        ({"rounds": 2, "aggregation": {"filters": [{"name": "self_reliabilty"}]}}, "invalid_spec"),
        ({"rounds": 2, "reward_wei": 10, "block_reward_wei": 10}, "invalid_spec"),  # escrow < rounds × block reward
        ({"rounds": 1, "reward_wei": 2**97, "block_reward_wei": 2**96}, "invalid_spec"),  # over createTask's uint96
        # σ stated over the default preset's target ε = 8 (σ = 1 would spend more): say which, not escrow
        ({"rounds": 2, "training": {"noise_multiplier": 1.0}}, "sigma_disagrees_with_target_epsilon"),
    ],
)
def test_a_typo_costs_no_escrow(service_chain: ServiceChain, cloud: ServerThread, tmp_path: Path, spec: dict, reason: str) -> None:  # noqa: F811
    chain = service_chain.access(dev_key(PUBLISHER))
    w3, address = chain.w3, chain.address
    (tmp_path / "task.json").write_text(json.dumps(spec))
    (tmp_path / "test.st").write_bytes(encode_test_set(TensorData(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), 10)))
    before = (w3.eth.get_balance(address), w3.eth.get_transaction_count(address), chain.tasks.task_count())
    args = ["task", "publish", str(tmp_path / "task.json"), "--test-set", str(tmp_path / "test.st"), "--cloud-url", cloud.url,
            "--rpc-url", service_chain.rpc_url, "--deployment", str(service_chain.deployment_file)]  # fmt: skip
    out = CliRunner(env={"BMFL_KEY": dev_key(PUBLISHER)}).invoke(cli, args)
    assert out.exit_code == 2, out.output
    assert reason in out.output and "nothing was escrowed" in out.output
    assert (w3.eth.get_balance(address), w3.eth.get_transaction_count(address), chain.tasks.task_count()) == before
    assert httpx.get(cloud.url + "/tasks").json() == []


def test_the_clouds_dry_run_refuses_before_escrow_too(service_chain: ServiceChain, cloud: ServerThread, tmp_path: Path) -> None:  # noqa: F811
    """A task the local check passes but the cloud refuses (a test set over the cloud's
    4 MiB limit) is refused by the dry run, before createTask."""
    chain = service_chain.access(dev_key(PUBLISHER))
    w3, address = chain.w3, chain.address
    (tmp_path / "task.toml").write_text("rounds = 2\n[training]\nepochs = 1\n")
    big = TensorData(torch.zeros(1400, 1, 28, 28), torch.zeros(1400, dtype=torch.int64), 10)
    (tmp_path / "test.st").write_bytes(encode_test_set(big))
    before = (w3.eth.get_balance(address), w3.eth.get_transaction_count(address), chain.tasks.task_count())
    args = ["task", "publish", str(tmp_path / "task.toml"), "--test-set", str(tmp_path / "test.st"), "--cloud-url", cloud.url,
            "--rpc-url", service_chain.rpc_url, "--deployment", str(service_chain.deployment_file)]  # fmt: skip
    out = CliRunner(env={"BMFL_KEY": dev_key(PUBLISHER)}).invoke(cli, args)
    assert out.exit_code == 1 and "413" in out.output and "nothing was escrowed" in out.output, out.output
    assert (w3.eth.get_balance(address), w3.eth.get_transaction_count(address), chain.tasks.task_count()) == before


def test_an_escrow_over_the_balance_is_refused_by_the_chain(service_chain: ServiceChain, cloud: ServerThread, tmp_path: Path) -> None:  # noqa: F811
    chain = service_chain.access(dev_key(PUBLISHER))
    w3, address = chain.w3, chain.address
    (tmp_path / "task.json").write_text(json.dumps({"rounds": 1}))
    (tmp_path / "test.st").write_bytes(encode_test_set(TensorData(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), 10)))
    before = (w3.eth.get_balance(address), w3.eth.get_transaction_count(address), chain.tasks.task_count())
    args = ["task", "publish", str(tmp_path / "task.json"), "--test-set", str(tmp_path / "test.st"), "--reward-wei", str(10**30),
            "--cloud-url", cloud.url, "--rpc-url", service_chain.rpc_url, "--deployment", str(service_chain.deployment_file)]  # fmt: skip
    out = CliRunner(env={"BMFL_KEY": dev_key(PUBLISHER)}).invoke(cli, args)
    assert out.exit_code == 1 and "the chain refused createTask" in out.output and "nothing was escrowed" in out.output, out.output
    assert (w3.eth.get_balance(address), w3.eth.get_transaction_count(address), chain.tasks.task_count()) == before


def test_openapi_documents_signatures_and_problem_reasons(cloud: ServerThread) -> None:
    schema = httpx.get(cloud.url + "/openapi.json").json()
    publish = schema["paths"]["/tasks"]["post"]
    headers = {p["name"]: p for p in publish["parameters"] if p["in"] == "header"}
    assert set(headers) == {"X-BMFL-Signature", "X-BMFL-Time"} and all(h["required"] for h in headers.values())
    assert "BMFL request v1" in headers["X-BMFL-Signature"]["description"]
    responses = publish["responses"]
    for status, reasons in {"401": ["unsigned", "bad_signature"], "403": ["not_publisher"], "409": ["duplicate_task", "chain_mismatch"],
                            "413": ["too_large"], "422": ["invalid_spec", "unknown_model"], "503": ["chain_unavailable"]}.items():  # fmt: skip
        assert all(f"`{r}`" in responses[status]["description"] for r in reasons), status
        assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
    test_set = schema["paths"]["/tasks/{task_id}/test-set"]["put"]
    assert {p["name"] for p in test_set["parameters"]} >= {"X-BMFL-Signature", "X-BMFL-Time"}
    assert "`invalid_task`" in schema["paths"]["/tasks/validate"]["post"]["responses"]["422"]["description"]
    assert "X-BMFL-Signature" not in json.dumps(schema["paths"]["/tasks/validate"])  # unsigned
    view = schema["components"]["schemas"]["RoundSummary"]["properties"]
    assert "upper median" in view["consensus_scores"]["description"]


def test_cancel_a_stalled_task_then_claim_the_refund(service_chain: ServiceChain, cloud: ServerThread) -> None:  # noqa: F811
    """An escrowed task the cloud never ran: ``bmfl task cancel`` refuses until it stalled,
    then cancels it; ``bmfl claim`` withdraws the refund (balance + escrow − gas, to the wei)."""
    from bmfl.blobs.codec import BlobMeta, encode_state
    from bmfl.models import create_model
    from service_fixtures import TaskData, create_task

    model = encode_state(create_model("bmfl_cnn").state_dict(), BlobMeta("0", 0, "publisher", "bmfl_cnn"))
    test_set = encode_test_set(TensorData(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), 10))
    task = create_task(service_chain, TaskData(None, test_set, model, "bafy-initial"))  # type: ignore[arg-type]
    where = ["--rpc-url", service_chain.rpc_url, "--deployment", str(service_chain.deployment_file)]
    runner = CliRunner(env={"BMFL_KEY": dev_key(PUBLISHER)})
    early = runner.invoke(cli, ["task", "cancel", str(task.task_id), *where])
    assert early.exit_code == 2 and "has not stalled" in early.output
    listed = json.loads(runner.invoke(cli, ["task", "refund", "--json", "--cloud-url", cloud.url, *where]).output)
    assert [(t["task_id"], t["orphaned"], t["refundable"]) for t in listed["tasks"]] == [(task.task_id, True, False)]
    service_chain.w3.provider.make_request("evm_increaseTime", [2 * task.round_duration_s + 1])  # type: ignore[arg-type]
    service_chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    cancelled = runner.invoke(cli, ["task", "cancel", str(task.task_id), *where])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"cancelled: 1.000000 ETH ({task.reward_wei} wei) credited" in cancelled.output
    claimed = runner.invoke(cli, ["claim", "--json", *where])
    assert claimed.exit_code == 0, claimed.output
    out = json.loads(claimed.output)
    assert out["claimed_wei"] == out["owed_wei"] == task.reward_wei
    assert out["balance_after_wei"] == out["balance_before_wei"] + task.reward_wei - out["gas_wei"] and out["gas_wei"] > 0
    assert "nothing to claim" in runner.invoke(cli, ["claim", *where]).output
