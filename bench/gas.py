"""Gas of BMFL's contracts on a real Anvil, side by side with a naive contract that
stores one struct per update in its own transaction.

Prints gas per recorded update at 10, 50 and 100 updates per edge-round for
``recordRound`` (the edge's first round, which creates its storage slots, and a later
round), split into the transaction base (21,000), calldata (the 117-byte vehicle-signed
records) and execution, beside the naive baseline and the ratio; then the total gas of
the BMFL setting (50 vehicles, 5 edges of 10, many rounds) including createTask, every
round's startRound / recordRound / closeRecording / submitScores / finalizeRound,
finishTask, settlement of every payee, the sweep and every claim.

Usage: ``python bench/gas.py [--rounds 50] [--quick]``
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bmfl.protocol.signing import sign, update_message  # noqa: E402
from chain.anvil import AnvilNode  # noqa: E402
from chain.base import ContractClient  # noqa: E402
from chain.deploy import deploy  # noqa: E402
from chain.registry import RegistryClient  # noqa: E402
from chain.settlement import settle_task  # noqa: E402
from chain.tasks import TaskParams, TasksClient, TrainerRecord  # noqa: E402

N_EDGES = 5
BASE_TX = 21_000
CLAIM_WINDOW = 90 * 86_400


class Naive(ContractClient):
    """The baseline contract."""

    artifact = "NaiveRecords"


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def calldata_gas(data: bytes) -> int:
    """EIP-2028 calldata cost: 4 gas per zero byte, 16 per non-zero byte."""
    return sum(4 if b == 0 else 16 for b in data)


class Bench:
    """A deployed BMFL with 5 edges and ``n_vehicles`` registered vehicles (generated keys,
    impersonated on Anvil to register and claim)."""

    def __init__(self, w3: Web3, n_vehicles: int, seed: str) -> None:
        accounts = w3.eth.accounts
        self.w3 = w3
        self.chain_id = w3.eth.chain_id
        self.operator, self.cloud, self.publisher, self.anyone = accounts[:4]
        self.edges = accounts[4 : 4 + N_EDGES]
        self.keys = [Account.from_key(h(f"{seed}/vehicle{i}")) for i in range(n_vehicles)]
        dep = deploy(w3, self.operator, cloud=self.cloud)
        registry = RegistryClient(w3, dep.registry, self.operator)
        for e in self.edges:
            registry.add_edge(e)
        for i, key in enumerate(self.keys):
            w3.provider.make_request("anvil_impersonateAccount", [key.address])  # type: ignore[arg-type]
            w3.provider.make_request("anvil_setBalance", [key.address, hex(10**18)])  # type: ignore[arg-type]
            registry.as_sender(key.address).register_vehicle(1, 0, 600, h(f"profile{i}"))
        self.tasks = TasksClient(w3, dep.tasks)

    def create(self, rounds: int) -> tuple[int, int]:
        params = TaskParams(
            block_reward=10**15, category=1, max_rounds=rounds, round_duration=86_400, challenge_period=0,
            initial_model_digest=h("w0"), initial_model_cid="bafkreiw0", test_set_digest=h("test"),
        )  # fmt: skip
        task_id, receipt = self.tasks.as_sender(self.publisher).create_task(params, 10**18)
        return task_id, receipt.gas_used

    def records(self, task_id: int, r: int, edge: int, vehicles: list[int]) -> list[TrainerRecord]:
        """Realistic records: a full digest, Λ and θ in fixed point, the vehicle's signature."""
        out = []
        for v in vehicles:
            upload = h(f"{task_id}/{r}/{v}")
            signature = sign(self.keys[v], update_message(self.chain_id, task_id, r, self.edges[edge], upload))
            out.append(TrainerRecord(vehicle=v, update_digest=upload, reliability=873_512, theta=18_345_678_901,
                                     signature=bytes.fromhex(signature[2:])))  # fmt: skip
        return out

    def round(self, task_id: int, r: int, groups: list[list[int]]) -> dict[str, Any]:
        """One round with edge e recording ``groups[e]``; gas per kind of call, and the
        recordRound receipts' (gas, calldata gas)."""
        t = self.tasks
        gas: dict[str, Any] = {"start": t.as_sender(self.cloud).start_round(task_id, h(f"g{r}"), f"bafkreig{r}").gas_used}
        gas["record"], gas["record_txs"] = 0, []
        for e, vs in enumerate(groups):
            receipt = t.as_sender(self.edges[e]).record_round(
                task_id, r, h(f"p{e}/{r}"), f"bafkreip{e}", 6000, self.records(task_id, r, e, vs), f"bafkreim{e}"
            )
            data = bytes(self.w3.eth.get_transaction(receipt.tx_hash)["input"])  # type: ignore[arg-type]
            gas["record"] += receipt.gas_used
            gas["record_txs"].append((receipt.gas_used, calldata_gas(data)))
        gas["close"] = t.as_sender(self.cloud).close_recording(task_id).gas_used
        gas["scores"] = 0
        for e in range(len(groups)):
            scores = [900_000 - 1000 * ((e + j + r) % 5) for j in range(len(groups))]
            gas["scores"] += t.as_sender(self.edges[e]).submit_scores(task_id, scores).gas_used
        gas["finalize"] = t.as_sender(self.cloud).finalize_round(task_id, h(f"G{r}"), f"bafkreiG{r}", 910_000).gas_used
        return gas

    def mine_after(self, seconds: int) -> None:
        now = self.w3.eth.get_block("latest")["timestamp"]
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [now + seconds])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def split(txs: list[tuple[int, int]], n: int) -> tuple[float, float, float, float]:
    """Per update: (total, base, calldata, execution) averaged over the edges' calls."""
    total = sum(g for g, _ in txs) / len(txs)
    data = sum(c for _, c in txs) / len(txs)
    return total / n, BASE_TX / n, data / n, (total - BASE_TX - data) / n


def per_update(w3: Web3, n: int) -> dict[str, Any]:
    """recordRound gas per update with ``n`` updates per edge-round (every edge records the
    same ``n`` vehicles, each signed for that edge): round 1 and round 3; and the naive baseline."""
    bench = Bench(w3, n, f"per{n}")
    task_id, _ = bench.create(3)
    groups = [list(range(n))] * N_EDGES
    first = bench.round(task_id, 1, groups)
    bench.round(task_id, 2, groups)
    later = bench.round(task_id, 3, groups)
    naive, _ = Naive.deploy(w3, bench.operator)
    naive_gas = 0
    for v, rec in enumerate(bench.records(task_id, 1, 0, list(range(n)))):
        fn = naive.contract.functions.recordUpdate(task_id, 1, bench.keys[v].address, rec.update_digest, rec.reliability, rec.theta, False)
        naive_gas += naive.send(fn).gas_used
    return {"first": split(first["record_txs"], n), "later": split(later["record_txs"], n), "naive": naive_gas / n}


def bmfl_setting(w3: Web3, rounds: int) -> dict[str, int]:
    """Total gas of the BMFL setting: 50 vehicles, 5 edges of 10, ``rounds`` rounds, finish,
    settlement of every payee, sweep, every claim."""
    bench = Bench(w3, 50, "setting")
    task_id, create = bench.create(rounds)
    totals = {"create": create, "start": 0, "record": 0, "close": 0, "scores": 0, "finalize": 0}
    for r in range(1, rounds + 1):  # vehicles move: each round the groups shift by r
        groups = [[(10 * e + i + r) % 50 for i in range(10)] for e in range(N_EDGES)]
        for k, g in bench.round(task_id, r, [sorted(g) for g in groups]).items():
            if k in totals:
                totals[k] += g
    t = bench.tasks.as_sender(bench.anyone)
    totals["finish"] = t.finish_task(task_id).gas_used
    bench.mine_after(1)
    settled = settle_task(t, task_id)
    totals["settle"] = sum(r.gas_used for r in settled)
    bench.mine_after(CLAIM_WINDOW + 1)
    totals["sweep"] = t.sweep(task_id).gas_used
    payees = [k.address for k in bench.keys] + list(bench.edges) + [bench.publisher]
    claims = [t.as_sender(a).claim().gas_used for a in payees if t.owed(a)]
    totals["claims"] = sum(claims)
    totals["_settle_txs"], totals["_settle_max"] = len(settled), max(r.gas_used for r in settled)
    totals["_claims_n"], totals["_claim_max"] = len(claims), max(claims)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the BMFL setting")
    parser.add_argument("--quick", action="store_true", help="10 updates per edge-round only, 5 rounds")
    args = parser.parse_args()
    sizes, rounds = ((10,), 5) if args.quick else ((10, 50, 100), args.rounds)
    with AnvilNode(accounts=4 + N_EDGES) as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        print("gas per recorded update, recordRound (one call per edge-round, 117-byte vehicle-signed records)")
        print(f"{'updates':>8} {'round':>6} {'total':>7} {'base':>6} {'calldata':>9} {'exec':>6} {'naive':>7} {'naive/BMFL':>11}")
        later: dict[int, float] = {}
        for n in sizes:
            snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
            m = per_update(w3, n)
            later[n] = m["later"][0] * n  # gas of one later-round call
            w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
            for label, (total, base, data, execution) in (("1st", m["first"]), ("later", m["later"])):
                print(f"{n:>8} {label:>6} {total:>7.0f} {base:>6.0f} {data:>9.0f} {execution:>6.0f} {m['naive']:>7.0f} {m['naive'] / total:>10.1f}x")
        print("(1st: the edge's first round creates its storage slots; later: round 3; base = 21,000 / updates;")
        print(" calldata = EIP-2028 cost of the call's input; exec = the rest: record tree, storage, event)")
        if 10 in later and 100 in later:
            marginal = (later[100] - later[10]) / 90
            fixed = later[10] - 10 * marginal
            print(f"later rounds: {fixed:,.0f} gas per call (21,000 base included) + {marginal:,.0f} per record")
        totals = bmfl_setting(w3, rounds)
        updates = 50 * rounds
        total = sum(v for k, v in totals.items() if not k.startswith("_"))
        print(f"\nBMFL setting: 50 vehicles, {N_EDGES} edges of 10, {rounds} rounds ({updates} recorded updates)")
        for k in ("create", "start", "record", "close", "scores", "finalize", "finish", "settle", "sweep", "claims"):
            print(f"  {k:<9} {totals[k]:>12,}  ({totals[k] / updates:>7,.0f} per update)")
        print(f"  {'total':<9} {total:>12,}  ({total / updates:>7,.0f} per update, everything included)")
        print(f"  settle: {totals['_settle_txs']} txs, max {totals['_settle_max']:,} gas; "
              f"claims: {totals['_claims_n']}, max {totals['_claim_max']:,} gas")  # fmt: skip


if __name__ == "__main__":
    main()
