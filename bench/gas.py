"""Gas of BMFL's contracts on a real Anvil, side by side with a naive contract that
stores one struct per update in its own transaction.

Prints gas per recorded update at 10, 50 and 100 updates per edge-round (the record
call alone, and with the edge's trainer-selection commit), the naive baseline and the
ratio; then the total gas of the BMFL setting (50 vehicles, 5 edges, 50 rounds)
including task creation, every round, finish and all claims.

Usage: ``python bench/gas.py [--rounds 50]``
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain.anvil import AnvilNode  # noqa: E402
from chain.base import ContractClient  # noqa: E402
from chain.deploy import deploy  # noqa: E402
from chain.registry import RegistryClient  # noqa: E402
from chain.tasks import TaskParams, TasksClient, TrainerRecord  # noqa: E402

N_EDGES = 5


class Naive(ContractClient):
    """The baseline contract."""

    artifact = "NaiveRecords"


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def record(v: int, r: int) -> TrainerRecord:
    """A realistic record: a full digest, reliability and θ in fixed point."""
    return TrainerRecord(vehicle=v, update_digest=h(f"{v}/{r}"), reliability=873_512, theta=18_345_678_901)


class Bench:
    """A deployed BMFL with edges and ``n_vehicles`` registered vehicles."""

    def __init__(self, w3: Web3, n_vehicles: int) -> None:
        accounts = w3.eth.accounts
        self.w3 = w3
        self.operator, self.cloud, self.publisher = accounts[:3]
        self.edges = accounts[3 : 3 + N_EDGES]
        self.vehicles = accounts[3 + N_EDGES : 3 + N_EDGES + n_vehicles]
        dep = deploy(w3, self.operator, cloud=self.cloud)
        registry = RegistryClient(w3, dep.registry, self.operator)
        for e in self.edges:
            registry.add_edge(e)
        for i, v in enumerate(self.vehicles):
            registry.as_sender(v).register_vehicle(1, 0, 600, h(f"profile{i}"))
        self.tasks = TasksClient(w3, dep.tasks)

    def create(self, rounds: int) -> tuple[int, int]:
        params = TaskParams(
            block_reward=10**15, category=1, max_rounds=rounds, round_duration=86_400,
            initial_model_digest=h("w0"), initial_model_cid="bafkreiw0", test_set_digest=h("test"),
        )  # fmt: skip
        task_id, receipt = self.tasks.as_sender(self.publisher).create_task(params, 10**18)
        return task_id, receipt.gas_used

    def round(self, task_id: int, r: int, groups: list[list[int]]) -> dict[str, int]:
        """One round with edge e training ``groups[e]``; gas per kind of call."""
        gas = {"start": 0, "commit": 0, "record": 0, "scores": 0, "finalize": 0}
        t = self.tasks
        gas["start"] = t.as_sender(self.cloud).start_round(task_id, h(f"g{r}"), f"bafkreig{r}").gas_used
        for e, vs in enumerate(groups):
            gas["commit"] += t.as_sender(self.edges[e]).commit_trainers(task_id, vs).gas_used
        for e, vs in enumerate(groups):
            recs = [record(v, r) for v in vs]
            gas["record"] += t.as_sender(self.edges[e]).record_round(task_id, h(f"p{e}/{r}"), f"bafkreip{e}", 6000, recs).gas_used
        for e in range(len(groups)):
            scores = [900_000 - 1000 * ((e + j + r) % 5) for j in range(len(groups))]
            gas["scores"] += t.as_sender(self.edges[e]).submit_scores(task_id, scores).gas_used
        gas["finalize"] = t.as_sender(self.cloud).finalize_round(task_id, h(f"G{r}"), f"bafkreiG{r}", 910_000).gas_used
        return gas


def per_update(w3: Web3, n: int) -> tuple[float, float, float, float]:
    """(record-only gas/update round 1, steady state, with commit steady state, naive gas/update) at ``n`` updates."""
    bench = Bench(w3, n)
    task_id, _ = bench.create(3)
    first = bench.round(task_id, 1, [list(range(n))])
    bench.round(task_id, 2, [list(range(n))])
    steady = bench.round(task_id, 3, [list(range(n))])
    naive, _ = Naive.deploy(w3, bench.operator)
    naive_gas = 0
    for v in range(n):
        rec = record(v, 1)
        fn = naive.contract.functions.recordUpdate(task_id, 1, bench.vehicles[v], rec.update_digest, rec.reliability, rec.theta, False)
        naive_gas += naive.send(fn).gas_used
    return first["record"] / n, steady["record"] / n, (steady["record"] + steady["commit"]) / n, naive_gas / n


def bmfl_setting(w3: Web3, rounds: int) -> dict[str, int]:
    """Total gas of the BMFL setting: 50 vehicles, 5 edges of 10, ``rounds`` rounds, finish, all claims."""
    bench = Bench(w3, 50)
    task_id, create = bench.create(rounds)
    totals = {"create": create, "start": 0, "commit": 0, "record": 0, "scores": 0, "finalize": 0}
    groups = [list(range(10 * e, 10 * e + 10)) for e in range(N_EDGES)]
    for r in range(1, rounds + 1):
        for k, g in bench.round(task_id, r, groups).items():
            totals[k] += g
    t = bench.tasks
    totals["finish"] = t.as_sender(bench.publisher).finish_task(task_id).gas_used
    claims = [t.as_sender(a).claim().gas_used for a in [*bench.vehicles, *bench.edges, bench.publisher] if t.owed(a)]
    totals["claims"] = sum(claims)
    totals["claim_max"] = max(claims)
    totals["claims_n"] = len(claims)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the BMFL setting")
    args = parser.parse_args()
    with AnvilNode(accounts=3 + N_EDGES + 100) as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        print("gas per recorded update (one edge-round; BMFL record call; naive: one tx per update)")
        print(f"{'updates':>8} {'BMFL r1':>9} {'BMFL':>8} {'+commit':>8} {'naive':>8} {'naive/BMFL':>11} {'naive/+commit':>14}")
        for n in (10, 50, 100):
            snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
            first, steady, with_commit, naive = per_update(w3, n)
            w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
            print(f"{n:>8} {first:>9.0f} {steady:>8.0f} {with_commit:>8.0f} {naive:>8.0f} {naive / steady:>10.1f}x {naive / with_commit:>13.1f}x")
        print("(r1: first round, fresh storage; BMFL and +commit: steady state, third round)")
        totals = bmfl_setting(w3, args.rounds)
        updates = 50 * args.rounds
        total = sum(v for k, v in totals.items() if k not in ("claim_max", "claims_n"))
        print(f"\nBMFL setting: 50 vehicles, {N_EDGES} edges, {args.rounds} rounds ({updates} updates)")
        for k in ("create", "start", "commit", "record", "scores", "finalize", "finish", "claims"):
            print(f"  {k:<9} {totals[k]:>12,}")
        print(f"  {'total':<9} {total:>12,}  ({total / updates:,.0f} gas per update, everything included)")
        print(f"  claims: {totals['claims_n']}, max {totals['claim_max']:,} gas each")


if __name__ == "__main__":
    main()
