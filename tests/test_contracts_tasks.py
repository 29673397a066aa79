"""BMFLTasks on a real Anvil: every function's happy path, each revert by custom error
name, role checks, double claim, reentrancy on claim, cancel/refund after the deadline."""

from __future__ import annotations

from chain.audit import Auditor
from chain.base import ContractClient
from chain.tasks import Phase, Status, pack_records, unpack_records
from chain_fixtures import Chain, chain, chain_module, digest, reverts  # noqa: F401


class Attacker(ContractClient):
    artifact = "ClaimReentrancyAttacker"


def new_task(chain: Chain, escrow: int = 10**18, **overrides: object) -> int:
    task_id, _ = chain.tasks(chain.publisher).create_task(chain.params(**overrides), escrow)
    return task_id


def test_create_task_and_its_reverts(chain: Chain) -> None:
    tasks = chain.tasks(chain.publisher)
    task_id, receipt = tasks.create_task(chain.params(), 10**18)
    info = tasks.task(task_id)
    assert (info.status, info.phase, info.escrow, info.max_rounds) == (Status.ACTIVE, Phase.IDLE, 10**18, 2)
    assert info.test_set_digest == digest("test") and info.publisher == chain.publisher
    assert receipt.event("TaskCreated").initialModelCid == "bafy-w0"  # type: ignore[attr-defined]
    assert chain.w3.eth.get_balance(chain.deployment.tasks) == 10**18
    with reverts("InvalidTask"):
        tasks.create_task(chain.params(max_rounds=1, category=1).model_copy(update={"max_rounds": 0}), 10**18)
    with reverts("InsufficientEscrow"):
        tasks.create_task(chain.params(block_reward=10**18), 10**18)
    with reverts("InsufficientEscrow"):
        tasks.create_task(chain.params(block_reward=0), 0)
    with reverts("AccuracyOutOfRange"):
        tasks.create_task(chain.params().model_copy(update={"target_accuracy": 2_000_000}), 10**18)


def test_full_task_pays_everyone_exactly_the_escrow(chain: Chain) -> None:
    task_id = new_task(chain)
    tasks = chain.tasks()
    sel = {0: [0, 1, 2], 1: [3, 4]}
    thetas = {0: 5, 1: 3, 2: -1, 3: 7, 4: 1}
    chain.run_round(task_id, sel, thetas, {0: [800_000, 700_000], 1: [810_000, 690_000]})
    assert tasks.round_result(task_id, 1).leader == 0
    assert tasks.edge_tally(task_id, 0).accuracy_sum == 800_000  # lower median of (800k, 810k)
    chain.run_round(task_id, sel, thetas, {0: [600_000, 700_000], 1: [600_000, 690_000]})
    assert tasks.round_result(task_id, 2).leader == 1
    assert tasks.contribution(task_id, 0, 0) == 10 and tasks.contribution(task_id, 0, 2) == 0
    assert tasks.trainer_status(task_id, 2, 3) == (True, True)
    receipt = tasks.as_sender(chain.outsider).finish_task(task_id)
    fin = receipt.event("TaskFinished")
    assert tasks.task(task_id).status == Status.FINISHED
    payees = [chain.vehicles[v] for v in range(5)] + chain.edges[:2] + [chain.publisher]
    total = sum(tasks.owed(a) for a in payees)
    assert total == 10**18
    assert fin.available + 2 * 10**15 == 10**18  # type: ignore[attr-defined]
    assert tasks.owed(chain.vehicles[2]) == 0  # malicious
    assert tasks.owed(chain.edges[0]) == tasks.owed(chain.edges[1]) == 10**15
    for a in payees:
        if tasks.owed(a):
            tasks.as_sender(a).claim()
    assert chain.w3.eth.get_balance(chain.deployment.tasks) == 0
    with reverts("TaskNotActive"):
        tasks.as_sender(chain.outsider).finish_task(task_id)


def test_double_claim_reverts(chain: Chain) -> None:
    task_id = new_task(chain)
    chain.run_round(task_id, {0: [0]}, {0: 1}, {0: [500_000]})
    tasks = chain.tasks(chain.edges[0])
    before = chain.w3.eth.get_balance(chain.edges[0])
    receipt = tasks.claim()
    assert receipt.event("Claimed").amount == 10**15  # type: ignore[attr-defined]
    gas_price = chain.w3.eth.get_transaction_receipt(receipt.tx_hash)["effectiveGasPrice"]
    assert chain.w3.eth.get_balance(chain.edges[0]) == before + 10**15 - receipt.gas_used * gas_price
    with reverts("NothingToClaim"):
        tasks.claim()


def test_round_roles_and_phases(chain: Chain) -> None:
    task_id = new_task(chain)
    cloud = chain.tasks(chain.cloud)
    edge0 = chain.tasks(chain.edges[0])
    with reverts("NotCloud"):
        chain.tasks(chain.edges[0]).start_round(task_id, digest("g"), "g")
    with reverts("UnknownTask"):
        cloud.start_round(99, digest("g"), "g")
    with reverts("WrongPhase"):
        edge0.commit_trainers(task_id, [0])
    ev = cloud.start_round(task_id, digest("g"), "bafy-g").event("RoundStarted")
    assert ev.round == 1 and ev.globalCid == "bafy-g"  # type: ignore[attr-defined]
    with reverts("WrongPhase"):
        cloud.start_round(task_id, digest("g"), "g")
    with reverts("NotEdge"):
        chain.tasks(chain.outsider).commit_trainers(task_id, [0])
    with reverts("EmptyList"):
        edge0.commit_trainers(task_id, [])
    with reverts("VehicleNotRegistered"):
        edge0.commit_trainers(task_id, [500])
    chain.registry(chain.vehicles[6]).deregister_vehicle()
    with reverts("VehicleNotRegistered"):
        edge0.commit_trainers(task_id, [6])
    sel = edge0.commit_trainers(task_id, [0, 1])
    assert sel.event("TrainersSelected").vehicles == [0, 1]  # type: ignore[attr-defined]
    with reverts("AlreadySelected"):
        chain.tasks(chain.edges[1]).commit_trainers(task_id, [1])
    with reverts("WrongPhase"):
        cloud.finalize_round(task_id, digest("g"), "g", 1)
    with reverts("EdgeNotRecorded"):
        edge0.submit_scores(task_id, [1])


def test_record_round_checks(chain: Chain) -> None:
    task_id = new_task(chain)
    chain.tasks(chain.cloud).start_round(task_id, digest("g"), "g")
    edge0 = chain.tasks(chain.edges[0])
    edge1 = chain.tasks(chain.edges[1])
    edge0.commit_trainers(task_id, [0, 1, 2])
    with reverts("NotEdge"):
        chain.tasks(chain.outsider).record_round(task_id, digest("p"), "p", 1, [chain.record(0, 1)])
    with reverts("EmptyList"):
        edge0.record_round(task_id, digest("p"), "p", 1, [])
    with reverts("NotSelected"):  # unselected
        edge0.record_round(task_id, digest("p"), "p", 1, [chain.record(0, 1), chain.record(3, 1)])
    with reverts("NotSelected"):  # unregistered: never selectable
        edge0.record_round(task_id, digest("p"), "p", 1, [chain.record(400, 1)])
    bad = chain.record(1, 0, malicious=True).model_copy(update={"theta": 4})
    with reverts("MaliciousWithWeight"):
        edge0.record_round(task_id, digest("p"), "p", 1, [bad])
    # handover: edge 1 records a vehicle edge 0 selected
    r = edge1.record_round(task_id, digest("p1"), "p1", 7, [chain.record(2, 9)])
    assert unpack_records(r.event("RoundRecorded").records) == [chain.record(2, 9)]  # type: ignore[attr-defined]
    with reverts("EdgeAlreadyRecorded"):
        edge1.record_round(task_id, digest("p1"), "p1", 7, [chain.record(0, 9)])
    with reverts("AlreadyRecorded"):
        edge0.record_round(task_id, digest("p"), "p", 1, [chain.record(0, 1), chain.record(2, 1)])
    edge0.record_round(task_id, digest("p"), "p", 1, [chain.record(0, 1), chain.record(1, 0, malicious=True)])
    assert chain.tasks().contribution(task_id, 1, 2) == 9
    assert chain.tasks().edge_contribution(task_id, 0) == 1


def test_packed_records_must_be_whole(chain: Chain) -> None:
    task_id = new_task(chain)
    chain.tasks(chain.cloud).start_round(task_id, digest("g"), "g")
    edge0 = chain.tasks(chain.edges[0])
    edge0.commit_trainers(task_id, [0])
    fn = edge0.contract.functions.recordRound(task_id, digest("p"), "p", 1, pack_records([chain.record(0, 1)])[:-1])
    with reverts("RecordsLength"):
        edge0.send(fn)


def test_scores_and_finalize(chain: Chain) -> None:
    task_id = new_task(chain, target_accuracy=850_000, max_rounds=3)
    cloud = chain.tasks(chain.cloud)
    cloud.start_round(task_id, digest("g"), "g")
    edges = [chain.tasks(e) for e in chain.edges[:3]]
    for i, e in enumerate(edges):
        e.commit_trainers(task_id, [i])
        e.record_round(task_id, digest("p"), "p", 1, [chain.record(i, 1)])
    with reverts("ScoresLength"):
        edges[0].submit_scores(task_id, [1, 2])
    with reverts("AccuracyOutOfRange"):
        edges[0].submit_scores(task_id, [1, 2, 1_000_001])
    # a lying minority (edge 2 inflates itself) cannot pick the leader
    edges[0].submit_scores(task_id, [700_000, 800_000, 600_000])
    with reverts("AlreadyScored"):
        edges[0].submit_scores(task_id, [1, 1, 1])
    with reverts("WrongPhase"):  # recording closed once scoring started
        chain.tasks(chain.edges[3]).record_round(task_id, digest("p"), "p", 1, [chain.record(3, 1)])
    edges[1].submit_scores(task_id, [710_000, 790_000, 610_000])
    edges[2].submit_scores(task_id, [0, 0, 1_000_000])
    with reverts("NotCloud"):
        edges[0].finalize_round(task_id, digest("g"), "g", 1)
    with reverts("AccuracyOutOfRange"):
        cloud.finalize_round(task_id, digest("g"), "g", 1_000_001)
    with reverts("TaskNotComplete"):
        cloud.finish_task(task_id)
    r = cloud.finalize_round(task_id, digest("g1"), "g1", 860_000)
    assert r.event("LeaderElected").medians == [700_000, 790_000, 610_000]  # type: ignore[attr-defined]
    assert r.event("LeaderElected").leader == 1  # type: ignore[attr-defined]
    assert chain.tasks().round_result(task_id, 1).global_digest == digest("g1")
    with reverts("TaskComplete"):  # target accuracy reached
        cloud.start_round(task_id, digest("g"), "g")
    cloud.finish_task(task_id)
    assert chain.tasks().task(task_id).status == Status.FINISHED


def test_cancel_after_deadline_refunds_unspent_escrow(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=3)
    chain.run_round(task_id, {0: [0]}, {0: 1}, {0: [500_000]})
    cloud = chain.tasks(chain.cloud)
    cloud.start_round(task_id, digest("g"), "g")
    with reverts("NotStalled"):
        chain.tasks(chain.outsider).cancel_task(task_id)
    chain.mine_after(601)
    with reverts("DeadlinePassed"):
        chain.tasks(chain.edges[0]).commit_trainers(task_id, [0])
    r = chain.tasks(chain.outsider).cancel_task(task_id)
    assert r.event("TaskCancelled").refund == 10**18 - 10**15  # type: ignore[attr-defined]
    tasks = chain.tasks()
    assert tasks.task(task_id).status == Status.CANCELLED
    assert tasks.owed(chain.publisher) == 10**18 - 10**15
    with reverts("TaskNotActive"):
        cloud.start_round(task_id, digest("g"), "g")
    with reverts("TaskNotActive"):
        tasks.as_sender(chain.outsider).cancel_task(task_id)
    tasks.as_sender(chain.publisher).claim()
    tasks.as_sender(chain.edges[0]).claim()
    assert chain.w3.eth.get_balance(chain.deployment.tasks) == 0


def test_completed_task_cannot_be_cancelled(chain: Chain) -> None:
    task_id = new_task(chain, max_rounds=1)
    chain.run_round(task_id, {0: [0]}, {0: 1}, {0: [500_000]})
    chain.mine_after(601)
    with reverts("TaskComplete"):
        chain.tasks(chain.outsider).cancel_task(task_id)
    chain.tasks(chain.outsider).finish_task(task_id)


def test_reentrant_claim_is_blocked(chain: Chain) -> None:
    attacker, _ = Attacker.deploy(chain.w3, chain.outsider, chain.deployment.tasks)
    params = chain.params(max_rounds=1)
    attacker.send(attacker.contract.functions.publish(params.as_tuple()), value=10**18)
    task_id = chain.tasks().task_count()
    chain.mine_after(601)
    chain.tasks(chain.outsider).cancel_task(task_id)
    assert chain.tasks().owed(attacker.address) == 10**18
    attacker.send(attacker.contract.functions.attack())
    fn = attacker.contract.functions
    assert attacker.call(fn.payments()) == 1
    assert attacker.call(fn.reentered()) is False
    nested = attacker.call(fn.nestedError())
    assert nested[:4] == chain.w3.keccak(text="ReentrancyGuardReentrantCall()")[:4]
    assert chain.w3.eth.get_balance(attacker.address) == 10**18
    assert chain.w3.eth.get_balance(chain.deployment.tasks) == 0


def test_auditor_recomputes_payouts_from_logs(chain: Chain) -> None:
    task_id = new_task(chain)
    sel = {0: [0, 1, 2], 1: [3, 4]}
    thetas = {0: 5, 1: 3, 2: -1, 3: 7, 4: 1}
    chain.run_round(task_id, sel, thetas, {0: [800_000, 700_000], 1: [810_000, 690_000]})
    chain.run_round(task_id, {0: [0, 4], 1: [3]}, thetas, {0: [600_000, 700_000], 1: [600_000, 690_000]})
    chain.tasks(chain.outsider).finish_task(task_id)
    auditor = Auditor(chain.w3, chain.deployment)
    assert auditor.contributions(task_id) == {0: {0: 10, 1: 3, 2: 0, 4: 1}, 1: {3: 14, 4: 1}}
    audit = auditor.audit_payouts(task_id)
    assert audit.agrees and len(audit.credited) == 4  # vehicle 2 was malicious
