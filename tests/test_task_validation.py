"""Validate before escrow, and a way back (docs/operations.md, "Refunds").

One core check (``bmfl.rounds.validate``) refuses typos before any transaction: in the
publisher's client (nonce, balance and task count unchanged on Anvil) and in the cloud's
dry run ``POST /tasks/validate`` (a real uvicorn server). An orphaned task (escrowed,
never published) is listed by ``bmfl task refund``, and once Anvil's clock passes its
deadline, refunded by ``--yes``: the publisher's balance rises by the escrow minus the
gas of its two transactions, to the wei."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from eth_account import Account
from typer.testing import CliRunner

from bmfl.blobs.codec import BlobMeta, encode_state
from bmfl.data import TensorData
from bmfl.models import create_model
from bmfl.protocol.testset import encode_test_set
from bmfl.rounds.validate import TaskInvalid, validate_task
from bmfl.task import AggregationSpec, RuleSpec, TaskDraft, with_preset
from chain.anvil import dev_key
from chain.tasks import Status
from launcher.cli import app as cli
from launcher.publisher import Publisher
from service_kit.serve import ServerThread
from service_fixtures import MODEL, PUBLISHER, ServiceChain, TaskData, create_task
from service_fixtures import cloud, service_chain  # noqa: F401

CLASSES = TensorData(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), 10)
REGRESSION = TensorData(torch.zeros(4, 1, 28, 28), torch.zeros(4, 1), None)


def initial(model: str = MODEL) -> bytes:
    torch.manual_seed(0)
    return encode_state(create_model(model).state_dict(), BlobMeta("0", 0, "publisher", model))


def typo_filter() -> AggregationSpec:
    return AggregationSpec(filters=[RuleSpec(name="self_reliabilty")])


def reasons(problems: list[Any]) -> list[str]:
    return [p.reason for p in problems]


def test_the_core_check_names_every_problem() -> None:
    good = TaskDraft()
    assert validate_task(good, CLASSES, initial()) == []
    assert reasons(validate_task(TaskDraft(model="bmfl_cnnn"), CLASSES, None)) == ["unknown_model"]
    assert reasons(validate_task(TaskDraft(aggregation=typo_filter()), CLASSES)) == ["invalid_spec"]
    assert reasons(validate_task(TaskDraft(model="bmfl_cnnn", aggregation=typo_filter()), CLASSES)) == ["unknown_model", "invalid_spec"]
    # the default's leave-out testing needs per-example losses: a test set without classes cannot supply them
    needs_losses = validate_task(good, REGRESSION)
    assert reasons(needs_losses) == ["invalid_spec"] and "test_loss" in needs_losses[0].detail
    assert validate_task(TaskDraft(aggregation=AggregationSpec(filters=[])), REGRESSION) == []
    assert reasons(validate_task(good, CLASSES, initial("mlp"))) == ["initial_model_model"]
    assert reasons(validate_task(good, b"\0" * 64)) == ["invalid_test_set"]
    broke = good.model_copy(update={"reward_wei": 10, "block_reward_wei": 10})  # past the model validator
    assert reasons(validate_task(broke, CLASSES)) == ["escrow_too_small"]


def test_the_leave_out_preset_needs_a_classification_test_set() -> None:
    """``private_leave_out`` tests contributions on the publisher's test set: a task with
    classes validates, one without cannot supply the per-example losses."""
    draft = TaskDraft.model_validate(with_preset("private_leave_out", {"training": {"plan_samples": 100}}))
    assert [f.name for f in draft.aggregation.filters] == ["dp_envelope", "signal_median", "leave_out"]
    assert validate_task(draft, CLASSES) == []
    refused = validate_task(draft, REGRESSION)
    assert reasons(refused) == ["invalid_spec"] and "test_loss" in refused[0].detail


def test_the_credit_preset_validates_and_a_reversed_credit_is_refused_with_its_reason() -> None:
    """``private_credit`` (leave-out testing that weighs kept uploads by measured help,
    docs/algorithms.md §8.11) builds; a ``credit`` whose full-weight score is not above
    its no-weight score cannot, nor one whose full-weight score is beyond the test's z or
    not finite, and the cloud would answer ``invalid_spec`` naming it."""
    fields = with_preset("private_credit", {"training": {"plan_samples": 100}})
    assert validate_task(TaskDraft.model_validate(fields), CLASSES) == []
    fields["aggregation"]["filters"][-1]["options"]["credit"] = [2, -1]
    refused = validate_task(TaskDraft.model_validate(fields), CLASSES)
    assert reasons(refused) == ["invalid_spec"] and "credit is [y0, y1] with y0 < y1" in refused[0].detail
    # a publisher's credit that no upload can reach would weigh every upload 0 and hand the
    # vehicles' share back to the publisher (unclaimed shares return to it): refused too
    for unreachable in ([1000.0, 2000.0], [float("-inf"), 2.0], [0.0, float("nan")]):
        fields["aggregation"]["filters"][-1]["options"]["credit"] = unreachable
        refused = validate_task(TaskDraft.model_validate(fields), CLASSES)
        assert reasons(refused) == ["invalid_spec"] and "y1 <= z = 3.0, both finite" in refused[0].detail, unreachable


def test_the_publishers_client_refuses_typos_before_any_transaction(service_chain: ServiceChain) -> None:
    chain = service_chain.access(dev_key(PUBLISHER))
    publisher = Publisher(chain, "http://127.0.0.1:9")  # never reached
    w3, address = chain.w3, chain.address
    before = (w3.eth.get_transaction_count(address), w3.eth.get_balance(address), chain.tasks.task_count())
    for draft, reason in [
        (TaskDraft(model="bmfl_cnnn"), "unknown_model"),
        (TaskDraft(aggregation=typo_filter()), "invalid_spec"),
        (TaskDraft(), "invalid_spec"),  # with a test set that has no classes
    ]:
        test_set = REGRESSION if draft == TaskDraft() else CLASSES
        with pytest.raises(TaskInvalid) as refused:
            publisher.publish(draft, test_set)
        assert reasons(refused.value.problems) == [reason]
    assert (w3.eth.get_transaction_count(address), w3.eth.get_balance(address), chain.tasks.task_count()) == before


def dry_run(url: str, draft: dict, model: bytes | None = None, test_set: bytes | None = None) -> httpx.Response:
    files: dict[str, Any] = {"spec": (None, json.dumps(draft))}
    if model is not None:
        files["initial_model"] = ("m", model)
    if test_set is not None:
        files["test_set"] = ("t", test_set)
    return httpx.post(url + "/tasks/validate", files=files, timeout=60)


def test_the_clouds_dry_run(cloud: ServerThread, tmp_path: Path) -> None:
    test_set, model = encode_test_set(CLASSES), initial()
    ok = dry_run(cloud.url, {"rounds": 3}, model, test_set)
    assert ok.status_code == 200, ok.text
    assert ok.json()["draft"] == json.loads(TaskDraft(rounds=3).model_dump_json())  # defaults filled in
    typos = {"model": "bmfl_cnnn", "aggregation": {"filters": [{"name": "self_reliabilty"}]}}
    refused = dry_run(cloud.url, typos, model, test_set)
    assert (refused.status_code, refused.json()["reason"]) == (422, "invalid_task")
    assert [p["reason"] for p in refused.json()["problems"]] == ["unknown_model", "invalid_spec"]
    assert dry_run(cloud.url, {"owner": "me"}).json()["problems"][0]["reason"] == "invalid_spec"
    # a target ε: σ is derived into the draft; a σ that disagrees with it is refused with the reason
    planned = dry_run(cloud.url, {"rounds": 3, "training": {"target_epsilon": 8.0, "plan_samples": 160}}, model, test_set)
    assert planned.status_code == 200 and planned.json()["draft"]["training"]["noise_multiplier"] > 1.0, planned.text
    both = {"training": {"target_epsilon": 8.0, "plan_samples": 160, "noise_multiplier": 1.0}}
    problem = dry_run(cloud.url, both, model, test_set).json()["problems"][0]
    assert problem["reason"] == "invalid_spec" and "sigma_disagrees_with_target_epsilon" in problem["detail"], problem
    too_big = dry_run(cloud.url, {}, bytes(5 << 20))
    assert (too_big.status_code, too_big.json()["reason"]) == (413, "too_large")
    stray = httpx.post(cloud.url + "/tasks/validate", files={"spec": (None, "{}"), "extra": ("x", b"1")})
    assert (stray.status_code, stray.json()["reason"]) == (422, "unknown_part")


def gas_paid(w3: Any, address: str, first_block: int) -> int:
    """Wei ``address`` paid for gas in the blocks from ``first_block`` on."""
    total = 0
    for number in range(first_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == address:
                receipt = w3.eth.get_transaction_receipt(tx["hash"])
                total += receipt["gasUsed"] * receipt["effectiveGasPrice"]
    return total


def test_an_orphaned_task_is_listed_then_refunded(service_chain: ServiceChain, cloud: ServerThread) -> None:
    test_set = encode_test_set(CLASSES)
    task = create_task(service_chain, TaskData(None, test_set, initial(), "bafy-initial"))  # type: ignore[arg-type]
    chain = service_chain.access(dev_key(PUBLISHER))
    w3, address = chain.w3, chain.address
    args = ["task", "refund", "--cloud-url", cloud.url,
            "--rpc-url", service_chain.rpc_url, "--deployment", str(service_chain.deployment_file)]  # fmt: skip
    runner = CliRunner(env={"BMFL_KEY": dev_key(PUBLISHER)})  # a key never goes on the command line
    listed = runner.invoke(cli, args)
    assert listed.exit_code == 0, listed.output
    assert f"task {task.task_id}: orphaned, refundable after" in listed.output
    assert "nothing is refundable yet" in runner.invoke(cli, [*args, "--yes"]).output  # not stalled yet
    assert chain.tasks.task(task.task_id).status == Status.ACTIVE
    service_chain.w3.provider.make_request("evm_increaseTime", [2 * task.round_duration_s + 1])  # type: ignore[arg-type]  # stalled
    service_chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    balance, first_block = w3.eth.get_balance(address), w3.eth.block_number + 1
    refunded = runner.invoke(cli, ["tasks", *args[1:], "--yes"])  # the old name still works
    assert refunded.exit_code == 0, refunded.output
    assert f"task {task.task_id}: orphaned and stalled, refundable now, refund 1.000000 ETH ({task.reward_wei} wei)" in refunded.output
    assert f"claimed 1.000000 ETH ({task.reward_wei} wei)" in refunded.output
    gas = gas_paid(w3, address, first_block)
    assert gas > 0 and w3.eth.get_balance(address) == balance + task.reward_wei - gas
    assert chain.tasks.task(task.task_id).status == Status.CANCELLED and chain.tasks.owed(address) == 0
    assert "no orphaned or stalled tasks" in runner.invoke(cli, args).output
    assert Account.from_key(dev_key(PUBLISHER)).address == address
