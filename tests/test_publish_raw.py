"""A publisher without our code: this test follows docs/protocol.md ("Publishing without
our code", "Signed requests") with httpx, curl and eth_account (and eth_abi / eth_utils,
which eth_account is built on) only — nothing from bmfl, chain, launcher or the
services is imported. The stack is started as a user would, ``bmfl up`` in a
subprocess; the doc's own signing script and curl command are run as written."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from tooling import requires_anvil

pytestmark = [requires_anvil, pytest.mark.skipif(shutil.which("curl") is None, reason="missing tool: curl")]

DOC = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
PUBLISHER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"  # Anvil dev key 2, as in the doc
OTHER_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # Anvil dev key 3
BOUNDARY = "bmfl"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    run_dir = tmp_path_factory.mktemp("raw") / "stack"
    root = Path(__file__).parents[1]
    up = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "up", "--run-dir", str(run_dir), "--free-ports", "--edges", "1", "--vehicles", "0"],
        cwd=root, env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((run_dir / "stack.json").read_text())
        urls = {s["name"]: s["url"] for s in state["services"]}
        yield {"cloud": urls["cloud"], "rpc": state["rpc_url"], "deployment": json.loads(Path(state["deployment_file"]).read_text())}
    finally:
        subprocess.run([sys.executable, "-m", "launcher.cli", "down", "--run-dir", str(run_dir)], cwd=root, timeout=120)


def rpc(url: str, method: str, *params: object) -> object:
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=30).json()
    assert "error" not in reply, reply
    return reply["result"]


def canonical_test_set(n: int = 40) -> bytes:
    """The doc's canonical layout, by hand: header sorted and compact, padded to 8; y, then x."""
    x = struct.pack(f"<{n * 784}f", *[((i * 37) % 255) / 255 for i in range(n * 784)])
    y = struct.pack(f"<{n}q", *[i % 10 for i in range(n)])
    header = {
        "__metadata__": {"kind": "bmfl-testset", "num_classes": "10"},
        "x": {"data_offsets": [len(y), len(y) + len(x)], "dtype": "F32", "shape": [n, 1, 28, 28]},
        "y": {"data_offsets": [0, len(y)], "dtype": "I64", "shape": [n]},
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + y + x


def multipart(parts: list[tuple[str, bytes, bool]]) -> bytes:
    """The doc's multipart body: each part between --bmfl boundaries, CRLF line ends."""
    out = b""
    for name, data, is_file in parts:
        if is_file:
            head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.safetensors"\r\nContent-Type: application/octet-stream\r\n\r\n'
        else:
            head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        out += head.encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def doc_block(after: str, language: str) -> str:
    """The first ```language block after the text ``after`` in docs/protocol.md."""
    rest = DOC[DOC.index(after) :]
    return re.search(rf"```{language}\n(.*?)```", rest, re.S).group(1)  # type: ignore[union-attr]


def test_the_worked_example_signs_as_the_doc_says() -> None:
    body = b'--bmfl\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{}\r\n--bmfl--\r\n'
    assert len(body) == 69 and "the 69-byte body" in DOC
    digest = hashlib.sha256(body).hexdigest()
    assert f"body sha2-256  {digest}" in DOC
    text = f"BMFL request v1\nchain 31337\nPOST /tasks\nbody {digest}\ntime 1764633600000"
    signed = Account.sign_message(encode_defunct(text=text), PUBLISHER_KEY)
    assert f"signature      0x{signed.signature.hex().removeprefix('0x')}" in DOC
    assert Account.from_key(PUBLISHER_KEY).address in DOC


def test_publish_with_http_and_raw_signing_only(stack: dict, tmp_path: Path) -> None:
    cloud, node, tasks_address = stack["cloud"], stack["rpc"], stack["deployment"]["tasks"]
    publisher = Account.from_key(PUBLISHER_KEY)
    test_set = canonical_test_set()
    model = httpx.get(f"{cloud}/models/bmfl_cnn/initial", params={"seed": 0}, timeout=60)
    assert model.status_code == 200 and model.headers["content-type"] == "application/octet-stream"
    draft = {"rounds": 1, "reward_wei": 10**17, "block_reward_wei": 10**15, "training": {"epochs": 1}}
    files = {"spec": (None, json.dumps(draft)), "initial_model": ("m", model.content), "test_set": ("t", test_set)}

    # a typo is refused by the dry run, nothing on chain
    nonce = rpc(node, "eth_getTransactionCount", publisher.address, "latest")
    typo = httpx.post(f"{cloud}/tasks/validate", files=files | {"spec": (None, json.dumps(draft | {"model": "bmfl_cnnn"}))}, timeout=60)
    assert typo.status_code == 422 and [p["reason"] for p in typo.json()["problems"]] == ["unknown_model"]
    checked = httpx.post(f"{cloud}/tasks/validate", files=files, timeout=60)
    assert checked.status_code == 200, checked.text
    create = checked.json()["create_task"]
    assert checked.json()["test_set_digest"] == "0x" + hashlib.sha256(test_set).hexdigest()
    assert create["params"]["initialModelDigest"] == "0x" + hashlib.sha256(model.content).hexdigest()

    # createTask, as step 4 of the doc
    signature = "createTask((uint96,uint32,uint16,uint32,uint32,uint32,bytes32,string,bytes32,uint8))"
    selector = keccak(text=signature)[:4]
    assert f"`0x{selector.hex()}`" in DOC and "createTask((uint96 blockReward" in DOC
    p = create["params"]
    args = (p["blockReward"], p["category"], p["maxRounds"], p["targetAccuracy"], p["roundDuration"], p["challengePeriod"],
            bytes.fromhex(p["initialModelDigest"][2:]), p["initialModelCid"], bytes.fromhex(p["testSetDigest"][2:]),
            p["tauMax"])  # fmt: skip
    data = selector + encode(["(uint96,uint32,uint16,uint32,uint32,uint32,bytes32,string,bytes32,uint8)"], [args])
    tx = {
        "to": tasks_address, "value": create["value_wei"], "data": data, "gas": 3_000_000, "nonce": int(nonce, 16),
        "gasPrice": int(rpc(node, "eth_gasPrice"), 16), "chainId": int(rpc(node, "eth_chainId"), 16),
    }  # fmt: skip
    raw = Account.sign_transaction(tx, PUBLISHER_KEY).raw_transaction
    tx_hash = rpc(node, "eth_sendRawTransaction", "0x" + raw.hex().removeprefix("0x"))
    receipt = rpc(node, "eth_getTransactionReceipt", tx_hash)
    assert receipt["status"] == "0x1"
    created = next(log for log in receipt["logs"] if log["address"].lower() == tasks_address.lower())
    task_id = int(created["topics"][1], 16)

    # POST /tasks, signed with the doc's script and sent with the doc's curl command
    spec = json.dumps(draft | {"task_id": task_id}).encode()
    body = multipart([("spec", spec, False), ("initial_model", model.content, True), ("test_set", test_set, True)])
    (tmp_path / "body.bin").write_bytes(body)
    (tmp_path / "sign.py").write_text(doc_block("A script that signs a body file", "python"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    script = doc_block("A script that signs a body file", "bash").replace("http://127.0.0.1:8000", cloud)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}

    def run(key: str, body_file: str = "body.bin") -> dict:
        text = script.replace("body.bin", body_file)
        out = subprocess.run(["bash", "-ec", text], cwd=tmp_path, env=env | {"BMFL_KEY": key}, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    (tmp_path / "other.bin").write_bytes(body.replace(b'"rounds": 1', b'"rounds": 2'))
    assert run(OTHER_KEY)["reason"] == "not_publisher"  # a valid signature by another account
    tampered = run(PUBLISHER_KEY, "other.bin")  # signed, but the body the cloud checks is this one
    assert tampered["reason"] == "chain_mismatch"  # the doc's script signs what is sent; the chain catches the change
    view = run(PUBLISHER_KEY)
    assert view["task_id"] == task_id and view["spec"]["rounds"] == 1, view
    unsigned = httpx.post(f"{cloud}/tasks", content=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert (unsigned.status_code, unsigned.json()["reason"]) == (401, "unsigned")

    shown = httpx.get(f"{cloud}/tasks/{task_id}", timeout=30).json()
    assert shown["chain"]["publisher"] == publisher.address
    assert shown["ledger"]["escrow_wei"] == create["value_wei"] == 10**17
    assert shown["ledger"]["transactions"] >= 1 and shown["ledger"]["gas_wei"] > 0
    assert shown["times"]["escrowed_at"] is not None
