// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {BMFLRegistry} from "./BMFLRegistry.sol";

/**
 * @title BMFLTasks
 * @notice Federated-learning tasks: escrow, a round state machine, per-edge records of
 * vehicle-signed updates, proof of testing accuracy by cross-evaluation, and the payouts
 * of BMFL (docs/algorithms.md §6), each computed exactly when it is settled.
 *
 * @dev Round: the cloud starts it (Training); every edge records once, in one call, the
 * updates it received, each carrying the vehicle's own signature; recording closes when
 * every active edge has recorded (the cloud closes it) or at the deadline (anyone);
 * then each recorded edge scores every recorded edge's preliminary model (Scoring); the
 * cloud finalizes. An edge's consensus score is the upper median of the scores the
 * *other* edges gave it; with fewer than {MIN_QUORUM} scorers there is no consensus, no
 * leader and no block reward for the round. With n scorers, up to f < n/2 lying edges can
 * neither push an honest edge below the lowest honest score nor lift themselves above
 * the highest honest score of them.
 *
 * Records stay in calldata (data availability) and the contract builds their Merkle tree
 * itself, so its root, count and Σθ are exact. Per edge the contract keeps only a hash
 * chain of its round records ({RoundLog}); settlement and challenges present the log and
 * Merkle proofs of single records. A record whose vehicle did not sign the update for
 * this edge, or that does not hold the task's data category, can be voided by anyone
 * with a proof until settlement opens.
 *
 * Asynchronous tasks (docs/algorithms.md §15): a round is one global version t. A record
 * carries its staleness τ = t − b, b the version whose model the vehicle trained from and
 * signed ({updateMessage} names b, not t), so an edge that shortens τ breaks the signature
 * and the record can be voided; the contract refuses τ > the task's {Task-tauMax} and bases
 * before version 1. A synchronous task is the case τ_max = 0: every record has τ = 0 and is
 * byte for byte a synchronous record.
 *
 * Payout of the pair (edge ℓ, vehicle m), floored once: available · S_ℓ · C_{m,ℓ} /
 * (Σ_i S_i · C_ℓ), with available = escrow − block rewards paid, S_ℓ = Σ over rounds with a
 * quorum of ℓ's consensus score, C_{m,ℓ} = Σθ of m's valid records at ℓ, C_ℓ = Σ_m C_{m,ℓ}.
 * Everything unclaimed after {CLAIM_WINDOW} (shares of edges without contributions,
 * rounding dust, unclaimed payouts) returns to the publisher.
 */
contract BMFLTasks is ReentrancyGuardTransient {
    /// @notice Fixed-point scale of accuracies and scores (1e6 = 100 %).
    uint32 public constant ACCURACY_SCALE = 1_000_000;
    /// @notice Fewest scoring edges for a consensus (a leader and scores that count).
    uint256 public constant MIN_QUORUM = 3;
    /// @notice How long payees can settle after settlement opens; then the publisher sweeps.
    uint256 public constant CLAIM_WINDOW = 90 days;
    /// @notice Bytes of one record in {recordRound}: vehicle index (uint32), update digest
    /// (bytes32, sha2-256 of the blob), self-reliability Λ (int64, 1e6 fixed point), weight θ
    /// (uint64, 1e6 fixed point; 0 when flagged), flags (uint8, bit 0 = flagged, bits 1–7 =
    /// staleness τ of an asynchronous report, 0 in a synchronous task), and the
    /// vehicle's EIP-2098 compact signature (r, yParity‖s) of its update message; big-endian.
    uint256 public constant RECORD_BYTES = 117;
    /// @notice Largest τ_max a task may set (τ fits the 7 high bits of a record's flags).
    uint8 public constant MAX_STALENESS = 127;
    /// @notice Leader index of a round without consensus.
    uint8 public constant NO_LEADER = type(uint8).max;

    /// @notice Lifecycle of a task.
    enum Status {
        None,
        Active,
        Finished,
        Cancelled
    }

    /// @notice Phase of the current round.
    enum Phase {
        Idle, // no round started yet
        Training, // edges record
        Scoring, // recording closed; recorded edges cross-evaluate
        Finalized // the cloud recorded the global model
    }

    /// @notice Why a record was voided.
    enum Fault {
        BadSignature, // the vehicle did not sign this update for this edge and round
        UnknownVehicle, // no vehicle has the index
        WrongCategory, // the vehicle does not hold the task's data category
        Replayed // an earlier record of the edge holds the vehicle's upload from the same base version
    }

    /// @notice A task; the first slot holds everything round calls touch.
    struct Task {
        Status status;
        Phase phase;
        uint16 round;
        uint16 maxRounds;
        uint64 deadline;
        uint64 recordedEdges;
        uint64 scoredEdges;
        uint8 tauMax;
        address publisher;
        uint32 category;
        uint32 roundDuration;
        uint32 targetAccuracy;
        uint96 escrow;
        uint96 blockReward;
        uint32 lastAccuracy;
        uint32 challengePeriod;
        uint96 rewardsPaid;
        uint96 payoutsPaid;
        uint64 settleAfter;
        uint64 scoreTotal;
        bool swept;
        bytes32 testSetDigest;
        bytes32 initialModelDigest;
    }

    /// @notice Parameters of {createTask}.
    struct TaskParams {
        uint96 blockReward;
        uint32 category;
        uint16 maxRounds;
        uint32 targetAccuracy; // 0: run all maxRounds
        uint32 roundDuration; // seconds each step may take; a step idle for twice this is stalled
        uint32 challengePeriod; // seconds after the finish during which records can be voided
        bytes32 initialModelDigest;
        string initialModelCid;
        bytes32 testSetDigest;
        uint8 tauMax; // τ_max: largest staleness a record may carry; 0 = synchronous rounds
    }

    /// @notice What an edge accumulated over a task.
    struct EdgeBook {
        uint64 scoreSum; // S_ℓ: its consensus scores summed over the rounds with a quorum
        uint64 thetaTotal; // C_ℓ: Σθ of its valid records
        uint32 roundsRecorded;
        uint32 roundsLed;
    }

    /// @notice One entry of an edge's record log (its {recordRound} calls, in order).
    struct RoundLog {
        uint16 round;
        bytes32 root;
        uint32 count;
        uint64 thetaTotal;
    }

    /// @notice A record and its Merkle proof in the tree of log entry `logIndex`.
    struct RecordProof {
        uint16 logIndex;
        uint32 position;
        bytes record;
        bytes32[] proof;
    }

    /// @notice The records a payee presents to {settle}.
    struct PayeeClaim {
        uint32 vehicle;
        RecordProof[] records;
    }

    /// @notice A finalized round.
    struct RoundResult {
        bytes32 globalDigest;
        uint32 accuracy;
        uint8 leader;
    }

    /// @notice The registry of edges, vehicles and the cloud.
    BMFLRegistry public immutable registry;

    /// @notice Number of tasks created; task ids start at 1.
    uint256 public taskCount;

    /// @notice Wei each account can claim.
    mapping(address account => uint256) public owed;

    mapping(uint256 taskId => Task) private _tasks;
    mapping(uint256 taskId => mapping(uint256 round => RoundResult)) private _rounds;
    mapping(uint256 taskId => mapping(uint256 edge => EdgeBook)) private _books;
    mapping(uint256 taskId => mapping(uint256 edge => bytes32)) private _logHashes;
    // task => evaluator edge => word => eight 32-bit scores of the current round
    mapping(uint256 taskId => mapping(uint256 evaluator => mapping(uint256 word => uint256))) private _scores;
    // task => keccak(edge, logIndex, vehicle) => voided
    mapping(uint256 taskId => mapping(bytes32 key => bool)) private _voided;
    // task => (edge << 32 | vehicle) => Σθ already settled
    mapping(uint256 taskId => mapping(uint256 payee => uint64)) private _settledTheta;
    // task => (edge << 48 | vehicle << 16 | logIndex >> 8) => bitmap of settled log entries
    mapping(uint256 taskId => mapping(uint256 key => uint256)) private _settledEntries;

    /// @notice A publisher created a task and escrowed `escrow` wei.
    event TaskCreated(
        uint256 indexed taskId,
        address indexed publisher,
        uint256 escrow,
        uint256 blockReward,
        uint32 category,
        uint16 maxRounds,
        uint32 targetAccuracy,
        uint32 roundDuration,
        uint32 challengePeriod,
        bytes32 initialModelDigest,
        string initialModelCid,
        bytes32 testSetDigest,
        uint8 tauMax
    );
    /// @notice The cloud started `round` from the global model `globalDigest`.
    event RoundStarted(uint256 indexed taskId, uint16 indexed round, bytes32 globalDigest, string globalCid, uint64 deadline);
    /// @notice An edge recorded its round; the records are in the call's calldata,
    /// `recordsRoot` is the Merkle root the contract built of them, and `manifestCid` names
    /// the edge's published manifest of the round (each update's CID and its verdict).
    event RoundRecorded(
        uint256 indexed taskId,
        uint16 indexed round,
        uint8 indexed edge,
        bytes32 preliminaryDigest,
        string preliminaryCid,
        uint64 samples,
        bytes32 recordsRoot,
        uint32 count,
        uint64 thetaTotal,
        string manifestCid
    );
    /// @notice Recording closed; `absentEdges` were active and did not record.
    event RecordingClosed(uint256 indexed taskId, uint16 indexed round, uint64 recordedEdges, uint64 absentEdges);
    /// @notice An edge submitted its test-set scores of every edge's preliminary model.
    event ScoresSubmitted(uint256 indexed taskId, uint16 indexed round, uint8 indexed evaluator, uint32[] scores);
    /// @notice Consensus scores decided the round's leader, credited `blockReward`.
    event LeaderElected(uint256 indexed taskId, uint16 indexed round, uint8 indexed leader, uint256 blockReward, uint32[] medians);
    /// @notice Fewer than {MIN_QUORUM} edges scored: no leader, no consensus scores.
    event NoQuorum(uint256 indexed taskId, uint16 indexed round, uint256 scorers);
    /// @notice The cloud finalized the round with the global model and its accuracy.
    event RoundFinalized(uint256 indexed taskId, uint16 indexed round, bytes32 globalDigest, string globalCid, uint32 accuracy);
    /// @notice The task finished; settlement opens at `settleAfter`.
    event TaskFinished(uint256 indexed taskId, uint16 rounds, uint256 available, uint64 scoreTotal, uint64 settleAfter);
    /// @notice A record was voided: its θ no longer counts.
    event RecordVoided(uint256 indexed taskId, uint8 indexed edge, uint16 indexed round, uint32 vehicle, Fault fault);
    /// @notice A payee was credited `amount` wei for its records at `edge`.
    event PayoutCredited(uint256 indexed taskId, address indexed payee, uint8 indexed edge, uint32 vehicle, uint256 amount);
    /// @notice What was not settled went back to the publisher.
    event TaskSwept(uint256 indexed taskId, uint256 returned);
    /// @notice A stalled task was cancelled and `refund` wei returned to the publisher.
    event TaskCancelled(uint256 indexed taskId, uint256 refund);
    /// @notice `account` claimed `amount` wei.
    event Claimed(address indexed account, uint256 amount);

    /// @dev The caller is not the registry's cloud.
    error NotCloud(address account);
    /// @dev No task with this id.
    error UnknownTask(uint256 taskId);
    /// @dev The task is not active.
    error TaskNotActive(uint256 taskId);
    /// @dev The call does not fit the current round phase.
    error WrongPhase(Phase expected, Phase actual);
    /// @dev The call names another round than the current one.
    error WrongRound(uint16 expected, uint16 given);
    /// @dev Invalid task parameters.
    error InvalidTask();
    /// @dev The escrow does not cover `maxRounds` block rewards.
    error InsufficientEscrow(uint256 required, uint256 sent);
    /// @dev All rounds have run or the target accuracy was reached.
    error TaskComplete(uint256 taskId);
    /// @dev The task can finish only after its last round or once the target is reached.
    error TaskNotComplete(uint256 taskId);
    /// @dev The deadline of the current step has passed.
    error DeadlinePassed(uint64 deadline);
    /// @dev The task is stalled (idle for twice its round duration); it can only be cancelled.
    error TaskStalled(uint64 deadline);
    /// @dev The task is not stalled yet.
    error NotStalled(uint64 deadline);
    /// @dev Recording can close before the deadline only once every active edge recorded.
    error EdgesMissing(uint64 missing);
    /// @dev The cloud may finalize before the deadline only once every recorded edge scored.
    error ScoresMissing(uint64 missing);
    /// @dev No edge recorded the round.
    error NothingRecorded();
    /// @dev Edge `edge` already recorded this round.
    error EdgeAlreadyRecorded(uint8 edge);
    /// @dev Edge `edge` did not record this round.
    error EdgeNotRecorded(uint8 edge);
    /// @dev Edge `edge` already scored this round.
    error AlreadyScored(uint8 edge);
    /// @dev Scores must cover every edge index that recorded (`required` entries).
    error ScoresLength(uint256 required, uint256 given);
    /// @dev A score or accuracy exceeds {ACCURACY_SCALE}.
    error AccuracyOutOfRange(uint32 value);
    /// @dev The packed records are not a whole number of {RECORD_BYTES}.
    error RecordsLength(uint256 length);
    /// @dev Records must be sorted by strictly increasing vehicle index.
    error RecordsUnsorted(uint32 vehicle);
    /// @dev A record is staler than the task's τ_max (asynchronous rounds; 0 in a synchronous task).
    error StaleRecord(uint32 vehicle, uint8 staleness, uint8 tauMax);
    /// @dev A record's base version t − τ is before version 1 (no model of that version exists).
    error BaseBeforeStart(uint32 vehicle, uint8 staleness, uint16 round);
    /// @dev A flagged record must carry θ = 0.
    error FlaggedWithWeight(uint32 vehicle);
    /// @dev The record log given does not hash to the edge's.
    error LogMismatch(uint8 edge);
    /// @dev A Merkle proof does not prove the record at its position.
    error BadProof(uint16 logIndex, uint32 position);
    /// @dev The record belongs to another vehicle than the claim.
    error WrongVehicle(uint32 expected, uint32 given);
    /// @dev Log entries of one claim must be strictly increasing.
    error EntriesUnsorted(uint16 logIndex);
    /// @dev The challenged record is valid.
    error RecordValid(uint32 vehicle);
    /// @dev The record was voided already.
    error AlreadyVoided(uint32 vehicle);
    /// @dev Challenges are over: settlement has opened.
    error ChallengesClosed(uint64 settleAfter);
    /// @dev Settlement has not opened yet, or the task was swept.
    error SettlementClosed(uint256 taskId);
    /// @dev The claim window has not ended yet.
    error ClaimWindowOpen(uint256 endsAt);
    /// @dev The payout would exceed what is available (a broken invariant).
    error Overpaid(uint256 taskId);
    /// @dev The caller has nothing to claim.
    error NothingToClaim(address account);

    /// @param registry_ The registry of edges, vehicles and the cloud.
    constructor(BMFLRegistry registry_) {
        registry = registry_;
    }

    // ---------------------------------------------------------------- publisher

    /**
     * @notice Creates a task and escrows `msg.value` wei as ρ_total.
     * @return taskId The new task's id.
     */
    function createTask(TaskParams calldata p) external payable returns (uint256 taskId) {
        if (p.maxRounds == 0 || p.roundDuration == 0 || p.category == 0 || p.tauMax > MAX_STALENESS) {
            revert InvalidTask();
        }
        if (p.targetAccuracy > ACCURACY_SCALE) revert AccuracyOutOfRange(p.targetAccuracy);
        uint256 required = uint256(p.maxRounds) * p.blockReward;
        if (msg.value < required || msg.value == 0) revert InsufficientEscrow(required, msg.value);
        if (msg.value > type(uint96).max) revert InvalidTask();
        taskId = ++taskCount;
        Task storage t = _tasks[taskId];
        t.publisher = msg.sender;
        t.category = p.category;
        t.maxRounds = p.maxRounds;
        t.status = Status.Active;
        t.escrow = uint96(msg.value);
        t.blockReward = p.blockReward;
        t.deadline = uint64(block.timestamp) + p.roundDuration;
        t.roundDuration = p.roundDuration;
        t.challengePeriod = p.challengePeriod;
        t.targetAccuracy = p.targetAccuracy;
        t.testSetDigest = p.testSetDigest;
        t.initialModelDigest = p.initialModelDigest;
        t.tauMax = p.tauMax;
        emit TaskCreated(
            taskId,
            msg.sender,
            msg.value,
            p.blockReward,
            p.category,
            p.maxRounds,
            p.targetAccuracy,
            p.roundDuration,
            p.challengePeriod,
            p.initialModelDigest,
            p.initialModelCid,
            p.testSetDigest,
            p.tauMax
        );
    }

    /**
     * @notice Cancels a stalled task (no step for twice its round duration past the
     * current deadline); the escrow not paid out as block rewards becomes claimable by
     * the publisher. Anyone may call.
     */
    function cancelTask(uint256 taskId) external {
        Task storage t = _activeTask(taskId);
        if (block.timestamp <= _stallTime(t)) revert NotStalled(t.deadline);
        if (_stopReached(t)) revert TaskComplete(taskId);
        uint256 refund = t.escrow - t.rewardsPaid;
        t.status = Status.Cancelled;
        owed[t.publisher] += refund;
        emit TaskCancelled(taskId, refund);
    }

    // ---------------------------------------------------------------- cloud

    /// @notice Starts the next round from the global model `globalDigest` / `globalCid`.
    function startRound(uint256 taskId, bytes32 globalDigest, string calldata globalCid) external {
        _onlyCloud();
        Task storage t = _activeTask(taskId);
        _notStalled(t);
        if (t.phase != Phase.Idle && t.phase != Phase.Finalized) revert WrongPhase(Phase.Finalized, t.phase);
        if (_stopReached(t)) revert TaskComplete(taskId);
        uint16 round = t.round + 1;
        uint64 deadline = uint64(block.timestamp) + t.roundDuration;
        t.round = round;
        t.phase = Phase.Training;
        t.recordedEdges = 0;
        t.scoredEdges = 0;
        t.deadline = deadline;
        emit RoundStarted(taskId, round, globalDigest, globalCid, deadline);
    }

    /**
     * @notice Closes recording and opens scoring. Before the deadline only the cloud may,
     * and only once every active edge has recorded; after it anyone may.
     */
    function closeRecording(uint256 taskId) external {
        Task storage t = _activeTask(taskId);
        _notStalled(t);
        if (t.phase != Phase.Training) revert WrongPhase(Phase.Training, t.phase);
        uint64 recorded = t.recordedEdges;
        uint64 absent = registry.activeEdgeMask() & ~recorded;
        if (block.timestamp <= t.deadline) {
            _onlyCloud();
            if (absent != 0) revert EdgesMissing(absent);
        }
        if (recorded == 0) revert NothingRecorded();
        t.phase = Phase.Scoring;
        t.deadline = uint64(block.timestamp) + t.roundDuration;
        emit RecordingClosed(taskId, t.round, recorded, absent);
    }

    /**
     * @notice Finalizes the round: with at least {MIN_QUORUM} scorers, adds each recorded
     * edge's consensus score (upper median of the other edges' scores) to its sum, elects
     * the highest (ties: lowest index) and credits it the block reward; records the global
     * model. Before the deadline only once every recorded edge scored.
     * @param accuracy Test accuracy of the global model, in {ACCURACY_SCALE} units.
     */
    function finalizeRound(uint256 taskId, bytes32 globalDigest, string calldata globalCid, uint32 accuracy)
        external
    {
        _onlyCloud();
        Task storage t = _activeTask(taskId);
        _notStalled(t);
        if (t.phase != Phase.Scoring) revert WrongPhase(Phase.Scoring, t.phase);
        if (accuracy > ACCURACY_SCALE) revert AccuracyOutOfRange(accuracy);
        uint64 recorded = t.recordedEdges;
        uint64 scored = t.scoredEdges;
        if (block.timestamp <= t.deadline && scored != recorded) revert ScoresMissing(recorded & ~scored);
        uint16 round = t.round;
        uint8 leader = NO_LEADER;
        uint256 scorers = _popCount(scored);
        if (scorers >= MIN_QUORUM) {
            uint32[] memory medians = _medians(taskId, recorded, scored);
            leader = _credit(taskId, recorded, medians);
            t.rewardsPaid += t.blockReward;
            owed[registry.edgeAt(leader)] += t.blockReward;
            emit LeaderElected(taskId, round, leader, t.blockReward, medians);
        } else {
            emit NoQuorum(taskId, round, scorers);
        }
        t.phase = Phase.Finalized;
        t.lastAccuracy = accuracy;
        t.deadline = uint64(block.timestamp) + t.roundDuration;
        _rounds[taskId][round] = RoundResult(globalDigest, accuracy, leader);
        emit RoundFinalized(taskId, round, globalDigest, globalCid, accuracy);
    }

    /**
     * @notice Ends a task that ran its rounds (or reached its target): fixes Σ_ℓ S_ℓ and
     * opens settlement after the challenge period. O(edges) gas. Anyone may call.
     */
    function finishTask(uint256 taskId) external {
        Task storage t = _activeTask(taskId);
        if (t.round == 0 || !_stopReached(t)) revert TaskNotComplete(taskId);
        uint256 edges = registry.edgeCount();
        uint64 total;
        for (uint256 e; e < edges; ++e) {
            total += _books[taskId][e].scoreSum;
        }
        uint64 settleAfter = uint64(block.timestamp) + t.challengePeriod;
        t.status = Status.Finished;
        t.scoreTotal = total;
        t.settleAfter = settleAfter;
        uint256 available = t.escrow - t.rewardsPaid;
        emit TaskFinished(taskId, t.round, available, total, settleAfter);
        if (total == 0) _sweep(taskId, t); // no consensus in any round: nothing to split
    }

    // ---------------------------------------------------------------- edges

    /**
     * @notice Records the caller edge's round: its preliminary model and every update it
     * received, each with the vehicle's signature (packed as at {RECORD_BYTES}, sorted by
     * vehicle index). An edge without updates records an empty round so that recording
     * can close early. Each record's staleness τ is at most the task's τ_max and below `round`.
     */
    function recordRound(
        uint256 taskId,
        uint16 round,
        bytes32 preliminaryDigest,
        string calldata preliminaryCid,
        uint64 samples,
        bytes calldata records,
        string calldata manifestCid
    ) external {
        Task storage t = _activeTask(taskId);
        if (block.timestamp > t.deadline) revert DeadlinePassed(t.deadline);
        if (t.phase != Phase.Training) revert WrongPhase(Phase.Training, t.phase);
        if (round != t.round) revert WrongRound(t.round, round);
        if (records.length % RECORD_BYTES != 0) revert RecordsLength(records.length);
        uint8 edge = registry.edgeIndex(msg.sender);
        uint64 edgeBit = uint64(1) << edge;
        uint64 recorded = t.recordedEdges;
        if (recorded & edgeBit != 0) revert EdgeAlreadyRecorded(edge);
        t.recordedEdges = recorded | edgeBit;
        (bytes32 root, uint32 count, uint64 thetaTotal) = _recordTree(records, round, t.tauMax);
        EdgeBook storage book = _books[taskId][edge];
        book.thetaTotal += thetaTotal;
        book.roundsRecorded += 1;
        _logHashes[taskId][edge] = _chain(_logHashes[taskId][edge], RoundLog(round, root, count, thetaTotal));
        emit RoundRecorded(
            taskId, round, edge, preliminaryDigest, preliminaryCid, samples, root, count, thetaTotal, manifestCid
        );
    }

    /**
     * @notice Submits the caller edge's test-set scores of every edge's preliminary
     * model (index = edge index, {ACCURACY_SCALE} units; its own entry is ignored).
     */
    function submitScores(uint256 taskId, uint32[] calldata scores) external {
        Task storage t = _activeTask(taskId);
        if (block.timestamp > t.deadline) revert DeadlinePassed(t.deadline);
        if (t.phase != Phase.Scoring) revert WrongPhase(Phase.Scoring, t.phase);
        uint8 edge = registry.edgeIndex(msg.sender);
        uint64 recorded = t.recordedEdges;
        uint64 bit = uint64(1) << edge;
        if (recorded & bit == 0) revert EdgeNotRecorded(edge);
        if (t.scoredEdges & bit != 0) revert AlreadyScored(edge);
        uint256 required = _bitLength(recorded);
        if (scores.length != required) revert ScoresLength(required, scores.length);
        mapping(uint256 => uint256) storage slots = _scores[taskId][edge];
        uint256 word;
        for (uint256 i; i < scores.length; ++i) {
            uint32 s = scores[i];
            if (s > ACCURACY_SCALE) revert AccuracyOutOfRange(s);
            word |= uint256(s) << ((i & 7) << 5);
            if (i & 7 == 7 || i + 1 == scores.length) {
                slots[i >> 3] = word;
                word = 0;
            }
        }
        t.scoredEdges |= bit;
        emit ScoresSubmitted(taskId, t.round, edge, scores);
    }

    // ---------------------------------------------------------------- challenges

    /**
     * @notice Voids a record that its vehicle did not sign for this task, round and edge,
     * or whose vehicle does not hold the task's category. Anyone may call, while the task
     * runs and until settlement opens.
     * @param log The edge's whole record log (from its {RoundRecorded} events and calls).
     */
    function challengeRecord(uint256 taskId, uint8 edge, RoundLog[] calldata log, RecordProof calldata p) external {
        uint32 category = _challengeable(taskId, edge, log);
        RoundLog calldata entry = log[p.logIndex];
        _checkRecord(entry, p);
        (bool faulty, Fault fault) = _fault(taskId, category, entry.round, edge, p.record);
        if (!faulty) revert RecordValid(uint32(bytes4(p.record[0:4])));
        _void(taskId, edge, entry.round, p, fault);
    }

    /**
     * @notice Voids `later`, a record of `edge` that repeats `earlier`, a record in an earlier
     * entry of its log from the same vehicle and base version: a signed upload counts once
     * (in an asynchronous task the signature allows τ_max + 1 rounds). Anyone may call, as
     * {challengeRecord}.
     */
    function challengeReplay(
        uint256 taskId,
        uint8 edge,
        RoundLog[] calldata log,
        RecordProof calldata earlier,
        RecordProof calldata later
    ) external {
        _challengeable(taskId, edge, log);
        RoundLog calldata first = log[earlier.logIndex];
        RoundLog calldata second = log[later.logIndex];
        _checkRecord(first, earlier);
        _checkRecord(second, later);
        uint32 vehicle = uint32(bytes4(later.record[0:4]));
        bool replay = earlier.logIndex < later.logIndex && uint32(bytes4(earlier.record[0:4])) == vehicle
            && _base(first.round, earlier.record) == _base(second.round, later.record);
        if (!replay) revert RecordValid(vehicle);
        _void(taskId, edge, second.round, later, Fault.Replayed);
    }

    // ---------------------------------------------------------------- payees

    /**
     * @notice Credits payees of `edge` their payouts from their valid records, each
     * proven against the edge's log. A payee may be settled again with records not
     * settled yet; the total it receives is floored once. Anyone may call.
     */
    function settle(uint256 taskId, uint8 edge, RoundLog[] calldata log, PayeeClaim[] calldata claims) external {
        Task storage t = _tasks[taskId];
        if (t.status != Status.Finished || t.swept || block.timestamp <= t.settleAfter) revert SettlementClosed(taskId);
        _checkLog(taskId, edge, log);
        EdgeBook memory book = _books[taskId][edge];
        uint256 available = t.escrow - t.rewardsPaid;
        uint256 paid;
        for (uint256 i; i < claims.length; ++i) {
            paid += _settlePayee(taskId, edge, log, claims[i], available, book);
        }
        uint256 payoutsPaid = t.payoutsPaid + paid;
        if (payoutsPaid > available) revert Overpaid(taskId);
        t.payoutsPaid = uint96(payoutsPaid);
    }

    /// @notice Returns to the publisher everything not settled once the claim window ended.
    function sweep(uint256 taskId) external {
        Task storage t = _tasks[taskId];
        if (t.status != Status.Finished || t.swept) revert SettlementClosed(taskId);
        uint256 endsAt = uint256(t.settleAfter) + CLAIM_WINDOW;
        if (block.timestamp <= endsAt) revert ClaimWindowOpen(endsAt);
        _sweep(taskId, t);
    }

    /// @notice Sends the caller everything it is owed (block rewards, payouts, refunds).
    function claim() external nonReentrant {
        uint256 amount = owed[msg.sender];
        if (amount == 0) revert NothingToClaim(msg.sender);
        owed[msg.sender] = 0;
        emit Claimed(msg.sender, amount);
        Address.sendValue(payable(msg.sender), amount);
    }

    // ---------------------------------------------------------------- views

    /// @notice The task `taskId`.
    function task(uint256 taskId) external view returns (Task memory) {
        return _tasks[taskId];
    }

    /// @notice The result of finalized round `round` of task `taskId`.
    function roundResult(uint256 taskId, uint16 round) external view returns (RoundResult memory) {
        return _rounds[taskId][round];
    }

    /// @notice What edge `edge` accumulated in task `taskId`.
    function edgeBook(uint256 taskId, uint8 edge) external view returns (EdgeBook memory) {
        return _books[taskId][edge];
    }

    /// @notice The hash chain of edge `edge`'s record log in task `taskId`.
    function logHash(uint256 taskId, uint8 edge) external view returns (bytes32) {
        return _logHashes[taskId][edge];
    }

    /// @notice Whether the record of `vehicle` in entry `logIndex` of `edge`'s log was voided.
    function voided(uint256 taskId, uint8 edge, uint16 logIndex, uint32 vehicle) external view returns (bool) {
        return _voided[taskId][keccak256(abi.encode(edge, logIndex, vehicle))];
    }

    /// @notice Σθ of `vehicle`'s records at `edge` settled so far.
    function settledTheta(uint256 taskId, uint8 edge, uint32 vehicle) external view returns (uint64) {
        return _settledTheta[taskId][(uint256(edge) << 32) | vehicle];
    }

    /// @notice The payout, in wei, of `theta` summed θ at `edge` (floored once).
    function payoutFor(uint256 taskId, uint8 edge, uint64 theta) external view returns (uint256) {
        Task storage t = _tasks[taskId];
        return _payout(t.escrow - t.rewardsPaid, t.scoreTotal, _books[taskId][edge], theta);
    }

    /// @notice The message a vehicle signs to upload `digest` to `edge` in `round` (in an
    /// asynchronous task: the version it trained from).
    function updateMessage(uint256 taskId, uint16 round, address edge, bytes32 digest)
        public
        view
        returns (string memory)
    {
        return string.concat(
            "BMFL update v1\nchain ",
            Strings.toString(block.chainid),
            "\ntask ",
            Strings.toString(taskId),
            "\nround ",
            Strings.toString(round),
            "\nedge ",
            Strings.toChecksumHexString(edge),
            "\ndigest ",
            Strings.toHexString(uint256(digest), 32)
        );
    }

    // ---------------------------------------------------------------- internals

    /// @dev Validates the records and builds their Merkle tree: leaf = keccak(0x00 ‖ record),
    /// node = keccak(0x01 ‖ left ‖ right), padded with zero leaves to a power of two; refuses
    /// a staleness above `tauMax` or reaching before version 1 of `round`.
    function _recordTree(bytes calldata records, uint16 round, uint8 tauMax)
        private
        pure
        returns (bytes32 root, uint32 count, uint64 thetaTotal)
    {
        uint256 n = records.length / RECORD_BYTES;
        if (n == 0) return (bytes32(0), 0, 0);
        uint256 size = 1;
        while (size < n) size <<= 1;
        bytes32[] memory level = new bytes32[](size);
        uint256 previous;
        for (uint256 i; i < n; ++i) {
            bytes calldata rec = records[i * RECORD_BYTES:(i + 1) * RECORD_BYTES];
            uint32 v = uint32(bytes4(rec[0:4]));
            if (i != 0 && v <= previous) revert RecordsUnsorted(v);
            previous = v;
            uint64 theta = uint64(bytes8(rec[44:52]));
            uint8 flags = uint8(rec[52]);
            if (flags & 1 == 1 && theta != 0) revert FlaggedWithWeight(v);
            uint8 tau = flags >> 1;
            if (tau > tauMax) revert StaleRecord(v, tau, tauMax);
            if (tau >= round) revert BaseBeforeStart(v, tau, round);
            thetaTotal += theta;
            level[i] = keccak256(abi.encodePacked(bytes1(0x00), rec));
        }
        for (; size > 1; size >>= 1) {
            for (uint256 i; i < size / 2; ++i) {
                level[i] = keccak256(abi.encodePacked(bytes1(0x01), level[2 * i], level[2 * i + 1]));
            }
        }
        return (level[0], uint32(n), thetaTotal);
    }

    function _chain(bytes32 previous, RoundLog memory entry) private pure returns (bytes32) {
        return keccak256(abi.encode(previous, entry.round, entry.root, entry.count, entry.thetaTotal));
    }

    function _checkLog(uint256 taskId, uint8 edge, RoundLog[] calldata log) private view {
        bytes32 h;
        for (uint256 i; i < log.length; ++i) {
            h = _chain(h, log[i]);
        }
        if (log.length == 0 || h != _logHashes[taskId][edge]) revert LogMismatch(edge);
    }

    function _checkRecord(RoundLog calldata entry, RecordProof calldata p) private pure {
        if (p.record.length != RECORD_BYTES || p.position >= entry.count) revert BadProof(p.logIndex, p.position);
        uint256 depth;
        while ((uint256(1) << depth) < entry.count) ++depth;
        if (p.proof.length != depth) revert BadProof(p.logIndex, p.position);
        bytes32 node = keccak256(abi.encodePacked(bytes1(0x00), p.record));
        for (uint256 i; i < depth; ++i) {
            node = (p.position >> i) & 1 == 0
                ? keccak256(abi.encodePacked(bytes1(0x01), node, p.proof[i]))
                : keccak256(abi.encodePacked(bytes1(0x01), p.proof[i], node));
        }
        if (node != entry.root) revert BadProof(p.logIndex, p.position);
    }

    /// @dev Checks that records of `taskId` can be challenged now and that `log` is `edge`'s;
    /// returns the task's category.
    function _challengeable(uint256 taskId, uint8 edge, RoundLog[] calldata log) private view returns (uint32) {
        Task storage t = _tasks[taskId];
        if (t.status == Status.None) revert UnknownTask(taskId);
        bool open = t.status == Status.Active || (t.status == Status.Finished && block.timestamp <= t.settleAfter);
        if (!open) revert ChallengesClosed(t.settleAfter);
        _checkLog(taskId, edge, log);
        return t.category;
    }

    /// @dev Voids the proven record `p` (recorded in `round`): its θ leaves the edge's C_ℓ.
    function _void(uint256 taskId, uint8 edge, uint16 round, RecordProof calldata p, Fault fault) private {
        uint32 vehicle = uint32(bytes4(p.record[0:4]));
        bytes32 key = keccak256(abi.encode(edge, p.logIndex, vehicle));
        if (_voided[taskId][key]) revert AlreadyVoided(vehicle);
        _voided[taskId][key] = true;
        _books[taskId][edge].thetaTotal -= uint64(bytes8(p.record[44:52]));
        emit RecordVoided(taskId, edge, round, vehicle, fault);
    }

    /// @dev The base version of `record` recorded in `round`: round − τ.
    function _base(uint16 round, bytes calldata record) private pure returns (uint16) {
        return round - (uint8(record[52]) >> 1);
    }

    /// @dev Whether `record`, recorded by `edge` in `round`, is faulty, and why; the vehicle
    /// signed its base version round − τ.
    function _fault(uint256 taskId, uint32 category, uint16 round, uint8 edge, bytes calldata record)
        private
        view
        returns (bool, Fault)
    {
        uint32 vehicle = uint32(bytes4(record[0:4]));
        if (vehicle >= registry.vehicleCount()) return (true, Fault.UnknownVehicle);
        (BMFLRegistry.Vehicle memory v,) = registry.vehicle(vehicle);
        string memory message = updateMessage(taskId, _base(round, record), registry.edgeAt(edge), bytes32(record[4:36]));
        bytes32 hash = MessageHashUtils.toEthSignedMessageHash(bytes(message));
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(hash, bytes32(record[53:85]), bytes32(record[85:117]));
        if (err != ECDSA.RecoverError.NoError || signer != v.account) return (true, Fault.BadSignature);
        if (v.categories & category == 0) return (true, Fault.WrongCategory);
        return (false, Fault.BadSignature);
    }

    function _settlePayee(
        uint256 taskId,
        uint8 edge,
        RoundLog[] calldata log,
        PayeeClaim calldata c,
        uint256 available,
        EdgeBook memory book
    ) private returns (uint256 amount) {
        uint256 payee = (uint256(edge) << 32) | c.vehicle;
        uint64 before = _settledTheta[taskId][payee];
        uint64 theta = before;
        uint256 lastIndex;
        for (uint256 j; j < c.records.length; ++j) {
            RecordProof calldata p = c.records[j];
            if (j != 0 && p.logIndex <= lastIndex) revert EntriesUnsorted(p.logIndex);
            lastIndex = p.logIndex;
            uint32 vehicle = uint32(bytes4(p.record[0:4]));
            if (vehicle != c.vehicle) revert WrongVehicle(c.vehicle, vehicle);
            _checkRecord(log[p.logIndex], p);
            uint256 key = (payee << 16) | (p.logIndex >> 8);
            uint256 bit = uint256(1) << (p.logIndex & 0xff);
            uint256 word = _settledEntries[taskId][key];
            if (word & bit != 0 || _voided[taskId][keccak256(abi.encode(edge, p.logIndex, vehicle))]) continue;
            _settledEntries[taskId][key] = word | bit;
            theta += uint64(bytes8(p.record[44:52]));
        }
        if (theta == before) return 0;
        _settledTheta[taskId][payee] = theta;
        uint256 scoreTotal = _tasks[taskId].scoreTotal;
        amount = _payout(available, scoreTotal, book, theta) - _payout(available, scoreTotal, book, before);
        address account = registry.vehicleAt(c.vehicle);
        owed[account] += amount;
        emit PayoutCredited(taskId, account, edge, c.vehicle, amount);
    }

    /// @dev available · S_ℓ · θ / (Σ S · C_ℓ), floored (Eq. 28–29 in one division).
    function _payout(uint256 available, uint256 scoreTotal, EdgeBook memory book, uint64 theta)
        private
        pure
        returns (uint256)
    {
        if (theta == 0 || scoreTotal == 0 || book.thetaTotal == 0) return 0;
        return Math.mulDiv(available, uint256(book.scoreSum) * theta, scoreTotal * book.thetaTotal);
    }

    function _sweep(uint256 taskId, Task storage t) private {
        uint256 returned = t.escrow - t.rewardsPaid - t.payoutsPaid;
        t.swept = true;
        owed[t.publisher] += returned;
        emit TaskSwept(taskId, returned);
    }

    /// @dev Adds each recorded edge's consensus score to its sum; returns the leader.
    function _credit(uint256 taskId, uint64 recorded, uint32[] memory medians) private returns (uint8 leader) {
        uint32 best;
        bool any;
        for (uint256 e; e < medians.length; ++e) {
            if ((recorded >> e) & 1 == 0) continue;
            _books[taskId][e].scoreSum += medians[e];
            if (!any || medians[e] > best) {
                (leader, best, any) = (uint8(e), medians[e], true);
            }
        }
        _books[taskId][leader].roundsLed += 1;
    }

    /// @dev Per recorded edge, the upper median of the scores the other scorers gave it.
    function _medians(uint256 taskId, uint64 recorded, uint64 scored) private view returns (uint32[] memory medians) {
        uint256 n = _bitLength(recorded);
        medians = new uint32[](n);
        uint32[] memory column = new uint32[](_popCount(scored));
        for (uint256 e; e < n; ++e) {
            if ((recorded >> e) & 1 == 0) continue;
            uint256 k;
            for (uint256 ev; ev < 64; ++ev) {
                if ((scored >> ev) & 1 == 0 || ev == e) continue;
                uint32 s = uint32(_scores[taskId][ev][e >> 3] >> ((e & 7) << 5));
                uint256 j = k; // insertion into the sorted prefix
                while (j > 0 && column[j - 1] > s) {
                    column[j] = column[j - 1];
                    --j;
                }
                column[j] = s;
                ++k;
            }
            medians[e] = column[k / 2];
        }
    }

    function _onlyCloud() private view {
        if (msg.sender != registry.cloud()) revert NotCloud(msg.sender);
    }

    function _activeTask(uint256 taskId) private view returns (Task storage t) {
        t = _tasks[taskId];
        if (t.status != Status.Active) {
            if (t.status == Status.None) revert UnknownTask(taskId);
            revert TaskNotActive(taskId);
        }
    }

    function _stallTime(Task storage t) private view returns (uint256) {
        return uint256(t.deadline) + t.roundDuration;
    }

    function _notStalled(Task storage t) private view {
        if (block.timestamp > _stallTime(t)) revert TaskStalled(t.deadline);
    }

    function _stopReached(Task storage t) private view returns (bool) {
        if (t.phase != Phase.Finalized) return false;
        return t.round == t.maxRounds || (t.targetAccuracy != 0 && t.lastAccuracy >= t.targetAccuracy);
    }

    function _bitLength(uint64 x) private pure returns (uint256 n) {
        while (x != 0) {
            x >>= 1;
            ++n;
        }
    }

    function _popCount(uint64 x) private pure returns (uint256 n) {
        while (x != 0) {
            x &= x - 1;
            ++n;
        }
    }
}
