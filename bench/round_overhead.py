"""One BMFL round through the full stack vs the same round in-process.

Stack: ``launcher.stack.LocalStack`` (Anvil and the contracts, E edge servers and
the cloud as uvicorn processes on loopback, a shared local blob store) and the vehicle
fleet over HTTP (``vehicle_client.Fleet``), a one-round task published from the
publisher's key (``TaskDraft`` defaults: E = 2 local epochs, DP-SGD, the default edge
pipeline (``AggregationSpec``), FedAvg at the cloud, the full MNIST test set). Its time
is the cloud's own record of the round, from opening it at the edges to
``finalizeRound``; the time from publishing to the finished task is shown too.

In-process: the same computation without services, in this process: every vehicle
trains from w⁰ through ``fleet_uploads`` (the fleet's engine, as the simulator runs it),
every edge filters and aggregates its vehicles' uploads, every edge scores every
preliminary model (proof of testing accuracy), the cloud aggregates and every edge
evaluates w¹. The vehicles draw their batches and DP noise from a secure source that no
seed determines, so in-process training (the same work, from the same kind of source)
cannot give their uploads; the in-process edges therefore aggregate the uploads the stack's edges received
(named by the manifests their ``recordRound`` carries, fetched through the cloud's
gateway), which makes the same rounds of filtering do the same work, and both must end
with the same w¹ (max |difference| shown). Every vehicle's RDP curve is computed first,
untimed (``bench.workload.warm_privacy_cache``: a process computes it once per sampling
rate), so neither pays it. The stack is run first and then the in-process round, each
``--repeats`` times alternately (a fresh stack each time). Needs the Anvil binary (``npm ci``).

    python -m bench.round_overhead [--vehicles 50 --edges 5 --repeats 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import torch

from bench.common import Row, console, median, print_rows, progress, tree_cpu_seconds
from bench.workload import warm_privacy_cache
from bmfl.attacks import AttackContext
from bmfl.blobs.codec import decode_state
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.consensus import consensus_accuracies
from bmfl.data import load_dataset
from bmfl.filters import batched_accuracy_evaluator
from bmfl.models import create_model
from bmfl.params import flatten, load_vector
from bmfl.partition import make_partition
from bmfl.privacy import COUNT_NOISE, PrivacyEngine, SecureGenerator
from bmfl.protocol.schemas import TaskDraft, TaskSpec
from bmfl.rounds import (
    aggregate_cloud,
    aggregate_edge,
    cloud_rule,
    server_optimizer,
    task_edge_rule,
)
from bmfl.training import evaluate
from bmfl.training.fleet import fleet_uploads
from chain.anvil import dev_key, find_anvil
from launcher.publisher import Publisher
from launcher.stack import OPERATOR, PUBLISHER, LocalStack
from service_kit.chain_access import ChainAccess, connect
from vehicle_client.fleet import Fleet
from vehicle_client.settings import FleetSettings

SEED = 0


def stack_round(
    vehicles: int, edges: int, run_dir: Path
) -> tuple[float, float, float, torch.Tensor, dict[int, list[int]], Fleet]:
    """Seconds of the round (the cloud's own record: opening the round at the edges to
    ``finalizeRound``) and from publishing to the finished task, the CPU seconds of all
    the stack's processes (this one, Anvil, the edges, the cloud) from publishing to the
    finished task, w¹, each edge's vehicles and the fleet."""
    train, test = load_dataset("mnist")
    sizes = make_partition("dirichlet", train.y, vehicles, SEED, alpha=0.9).sizes  # the fleet's deal
    warm_privacy_cache(sizes, TaskDraft(reward_wei=1, block_reward_wei=0).training.local())
    with LocalStack(run_dir, edges=edges) as stack:
        fleet = Fleet(
            FleetSettings(
                cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
                funder_key=dev_key(OPERATOR), vehicles=vehicles, seed=SEED, torch_threads=torch.get_num_threads(),
            ),
            train_data=train, console=console,
        )  # fmt: skip
        fleet.setup()
        publisher = Publisher(connect(stack.rpc_url, stack.deployment_file, dev_key(PUBLISHER)), stack.cloud.url)
        draft = TaskDraft(rounds=1, reward_wei=10**18, block_reward_wei=10**16, seed=SEED)
        stop = threading.Event()
        cpu = tree_cpu_seconds()
        task_id = publisher.publish(draft, test)["task_id"]
        start = time.perf_counter()
        worker = threading.Thread(target=fleet.run, kwargs={"stop_event": stop, "task_ids": [task_id], "show_progress": False})
        worker.start()
        with httpx.Client(timeout=30) as http:
            while (view := http.get(f"{stack.cloud.url}/tasks/{task_id}").json())["status"] in ("ready", "running"):
                time.sleep(0.5)  # coarse: this poll loads the cloud and the chain too
        whole = time.perf_counter() - start
        cpu = tree_cpu_seconds() - cpu
        stop.set()
        worker.join(60)
        if view["status"] != "finished":
            raise RuntimeError(f"task {task_id} ended {view['status']}: {view.get('detail')}")
        record = httpx.get(f"{stack.cloud.url}/tasks/{task_id}/rounds/1").json()
        seconds = float(record["wall_time_s"])
        gateway = GatewayClient(stack.cloud.url)
        w1 = flatten(decode_state(gateway.fetch(record["global_cid"]), draft.model)[0])
        received = received_uploads(publisher.chain, gateway, task_id, draft)
        gateway.close()
        groups: dict[int, list[int]] = defaultdict(list)
        for v in fleet.vehicles:
            groups[fleet.edge_of(v).index].append(v.index)
        fleet.close()
    return seconds, whole, cpu, w1, dict(groups), received, fleet


def received_uploads(chain: ChainAccess, gateway: GatewayClient, task_id: int, draft: TaskDraft) -> dict[int, torch.Tensor]:
    """Vehicle index → the update its edge aggregated in round 1, as the edges' manifests
    (``recordRound``) name them, fetched and checked by CID."""
    out = {}
    for recorded in chain.tasks.recorded_rounds(task_id, chain.deployment.block_number, round=1):
        for u in json.loads(gateway.fetch(recorded.manifest_cid))["updates"]:
            out[int(u["vehicle"])] = flatten(decode_state(gateway.fetch(u["cid"]), draft.model)[0])
    return out


def in_process_round(
    fleet: Fleet, groups: dict[int, list[int]], received: dict[int, torch.Tensor], test, draft: TaskDraft
) -> torch.Tensor:
    """The stack's round computed in this process, its edges aggregating ``received``
    (in-process training is the same work, with secret randomness as the vehicles draw
    it, but not their draws); returns w¹."""
    spec = TaskSpec(task_id=1, **draft.model_dump())
    torch.manual_seed(draft.seed)
    w0 = flatten(create_model(draft.model).state_dict())
    model = create_model(draft.model)
    by_index = {v.index: v for v in fleet.vehicles}
    config = spec.training.local()
    order = [index for members in groups.values() for index in members]
    fleet_uploads(
        model, [by_index[v].data for v in order], config,
        [AttackContext(w0, SecureGenerator(), None, 1) for _ in order],
        None, [PrivacyEngine(draft.training.delta) for _ in order],
    )  # fmt: skip
    prelims, samples, evaluators = {}, {}, {}
    for edge, members in sorted(groups.items()):  # each edge has its own evaluator (and memo), as in the stack
        evaluators[edge] = batched_accuracy_evaluator(create_model(draft.model), test)
        rule = task_edge_rule(spec.aggregation, create_model(draft.model), test, evaluators[edge], spec.training,
                              COUNT_NOISE, refusals=lambda r: 0)  # round 1: none before it
        sizes = {v: by_index[v].registered_samples for v in members}
        outcome = aggregate_edge(rule, {v: received[v] for v in members}, sizes, w0, 1)
        prelims[edge], samples[edge] = outcome.preliminary, outcome.samples
    for edge in prelims:  # every edge scores every preliminary model
        consensus_accuracies(prelims, evaluators[edge])
    server = server_optimizer(spec.aggregation, spec.rounds)
    w1 = aggregate_cloud(cloud_rule(spec.aggregation), prelims, samples, w0, 1, server).model
    for _ in prelims:  # every edge evaluates w¹
        evaluate(load_vector(create_model(draft.model), w1), test)
    return w1


def run(vehicles: int = 50, edges: int = 5, repeats: int = 1) -> list[Row]:
    if find_anvil() is None:
        console.print("[yellow]round_overhead skipped[/]: no Anvil binary (npm ci)")
        return [Row("round_overhead", "round through the stack", float("nan"), "in-process", None, "s", note="skipped: no Anvil")]
    _, test = load_dataset("mnist")
    draft = TaskDraft(rounds=1, reward_wei=10**18, block_reward_wei=10**16, seed=SEED)
    stack_s, whole_s, stack_cpu, local_s, local_cpu, diffs = [], [], [], [], [], []
    with progress() as bar, tempfile.TemporaryDirectory(prefix="bmfl-bench-") as tmp:
        task = bar.add_task(f"round_overhead: stack / in-process, {vehicles} vehicles", total=2 * repeats)
        for r in range(repeats):
            seconds, whole, cpu, w1, groups, received, fleet = stack_round(vehicles, edges, Path(tmp) / f"stack-{r}")
            stack_s.append(seconds)
            whole_s.append(whole)
            stack_cpu.append(cpu)
            bar.advance(task)
            start, cpu = time.perf_counter(), time.process_time()
            local = in_process_round(fleet, groups, received, test, draft)
            local_s.append(time.perf_counter() - start)
            local_cpu.append(time.process_time() - cpu)
            diffs.append(float((local - w1).abs().max()))
            bar.advance(task)
    note = (f"{vehicles} vehicles, {edges} edges, E = {draft.training.epochs}, median of {repeats}, "
            f"{torch.get_num_threads()} torch thread(s) per process; publish → "
            f"finished {median(whole_s):.1f} s; max |w¹ stack − in-process| {max(diffs):.1e}; the stack's edges score "
            "uploads while vehicles still train, so it can use a second core (next row)")  # fmt: skip
    return [
        Row("round_overhead", "one round: full stack vs in-process", median(stack_s), "in-process", median(local_s), "s",
            "overhead", note=note),
        Row("round_overhead", "CPU time: full stack vs in-process", median(stack_cpu), "in-process", median(local_cpu),
            "s", "overhead", note="CPU seconds of every stack process (fleet, edges, cloud, Anvil) from publishing to "
                                  "the finished task, against the in-process round's: the services' own cost"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=50)
    parser.add_argument("--edges", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print_rows("round overhead of the services", run(args.vehicles, args.edges, args.repeats))


if __name__ == "__main__":
    main()
