// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {BMFLRegistry} from "./BMFLRegistry.sol";

/**
 * @title BMFLTasks
 * @notice Federated-learning tasks: escrow, rounds, per-trainer records, proof of
 * testing accuracy by cross-evaluation, and the payouts of BMFL (docs/algorithms.md §6),
 * computed here from on-chain state and claimed by each payee (pull payments).
 *
 * @dev Gas layout. Per round and vehicle the contract stores two bits (selected,
 * recorded) in a per-round bitmap; per (task, edge, vehicle) it keeps the summed
 * contribution θ in a 64-bit lane, four vehicles per slot. Digests, self-reliability
 * and scores live in events (auditors read them from logs); everything the payout needs
 * is in storage. Fixed-point scales: accuracies and scores in parts per million
 * ({ACCURACY_SCALE}); θ and self-reliability are integers chosen by the edge software.
 *
 * Payout rule, the same as `bmfl/incentives.py` (integer wei, floor division, `K` =
 * rounds run, `A_l` = floor of edge l's mean per-round median accuracy over the rounds it
 * recorded, `C_{m,l}` = summed θ of vehicle m at edge l):
 *   ava = escrow - K * blockReward;  rho_l = ava * A_l / sum(A);
 *   pay_{m,l} = rho_l * C_{m,l} / sum_m C_{m,l};  the publisher gets everything left
 *   (edges without contributions, rounding dust).
 */
contract BMFLTasks is ReentrancyGuardTransient {
    /// @notice Fixed-point scale of accuracies and scores (1e6 = 100 %).
    uint32 public constant ACCURACY_SCALE = 1_000_000;

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
        Training, // trainers committed and rounds recorded
        Scoring, // cross-evaluation; recording is closed
        Finalized // cloud recorded the global model
    }

    /// @notice A task, packed in five slots; the first holds all that round calls touch.
    struct Task {
        Status status;
        Phase phase;
        uint16 round;
        uint16 maxRounds;
        uint64 deadline;
        uint64 recordedEdges;
        uint64 scoredEdges;
        address publisher;
        uint32 category;
        uint32 roundDuration;
        uint32 targetAccuracy;
        uint96 escrow;
        uint96 blockReward;
        uint32 lastAccuracy;
        bytes32 testSetDigest;
        bytes32 initialModelDigest;
    }

    /// @notice Parameters of {createTask}.
    struct TaskParams {
        uint96 blockReward;
        uint32 category;
        uint16 maxRounds;
        uint32 targetAccuracy; // 0: run all maxRounds
        uint32 roundDuration; // seconds each step may take before the task counts as stalled
        bytes32 initialModelDigest;
        string initialModelCid;
        bytes32 testSetDigest;
    }

    /// @notice Bytes of one packed trainer record in {recordRound}: vehicle index (uint32),
    /// update digest (bytes32, sha2-256 of the blob), self-reliability (int64, fixed point
    /// chosen by the edge software), aggregate weight θ (uint64; 0 when malicious) and a
    /// malicious flag (uint8, 0 or 1), big-endian, back to back.
    uint256 public constant RECORD_BYTES = 53;

    /// @notice What an edge accumulated over a task.
    struct EdgeTally {
        uint64 accuracySum; // sum of its per-round consensus (median) accuracy
        uint32 roundsLed;
        uint32 roundsRecorded;
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
    // task => round => vehicle >> 7 => 2 bits per vehicle: bit 0 selected, bit 1 recorded
    mapping(uint256 taskId => mapping(uint256 round => mapping(uint256 word => uint256))) private _trainers;
    // task => (edge << 32 | vehicle >> 2) => four 64-bit contribution lanes
    mapping(uint256 taskId => mapping(uint256 key => uint256)) private _contrib;
    mapping(uint256 taskId => mapping(uint256 edge => uint32[])) private _contribWords;
    mapping(uint256 taskId => mapping(uint256 edge => EdgeTally)) private _tallies;
    // task => evaluator edge => word => eight 32-bit scores of the current round
    mapping(uint256 taskId => mapping(uint256 evaluator => mapping(uint256 word => uint256))) private _scores;

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
        bytes32 initialModelDigest,
        string initialModelCid,
        bytes32 testSetDigest
    );
    /// @notice The cloud started `round` from the global model `globalDigest`.
    event RoundStarted(uint256 indexed taskId, uint16 indexed round, bytes32 globalDigest, string globalCid, uint64 deadline);
    /// @notice An edge committed trainers for the round (the shared trainer table).
    event TrainersSelected(uint256 indexed taskId, uint16 indexed round, uint8 indexed edge, uint32[] vehicles);
    /// @notice An edge recorded its round: preliminary model and every trainer's record
    /// (packed as in {recordRound}).
    event RoundRecorded(
        uint256 indexed taskId,
        uint16 indexed round,
        uint8 indexed edge,
        bytes32 preliminaryDigest,
        string preliminaryCid,
        uint64 samples,
        bytes records
    );
    /// @notice An edge submitted its test-set scores of every edge's preliminary model.
    event ScoresSubmitted(uint256 indexed taskId, uint16 indexed round, uint8 indexed evaluator, uint32[] scores);
    /// @notice Median scores decided the round's leader, credited `blockReward`.
    event LeaderElected(uint256 indexed taskId, uint16 indexed round, uint8 indexed leader, uint256 blockReward, uint32[] medians);
    /// @notice The cloud finalized the round with the global model and its accuracy.
    event RoundFinalized(uint256 indexed taskId, uint16 indexed round, bytes32 globalDigest, string globalCid, uint32 accuracy);
    /// @notice A payee was credited `amount` wei for the contributions at `edge`.
    event PayoutCredited(uint256 indexed taskId, address indexed payee, uint8 indexed edge, uint256 amount);
    /// @notice The task finished; `available` was split, `returned` went back to the publisher.
    event TaskFinished(uint256 indexed taskId, uint16 rounds, uint256 available, uint256 paid, uint256 returned);
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
    /// @dev Invalid task parameters.
    error InvalidTask();
    /// @dev The escrow does not cover `maxRounds` block rewards.
    error InsufficientEscrow(uint256 required, uint256 sent);
    /// @dev All rounds have run or the target accuracy was reached.
    error TaskComplete(uint256 taskId);
    /// @dev The task can finish only after its last round or once the target is reached.
    error TaskNotComplete(uint256 taskId);
    /// @dev The deadline of the current step has passed; the task can only be cancelled.
    error DeadlinePassed(uint64 deadline);
    /// @dev The task is not stalled: its deadline has not passed.
    error NotStalled(uint64 deadline);
    /// @dev An empty list was given.
    error EmptyList();
    /// @dev Vehicle `vehicle` is already selected in this round.
    error AlreadySelected(uint32 vehicle);
    /// @dev Vehicle `vehicle` was not selected in this round.
    error NotSelected(uint32 vehicle);
    /// @dev Vehicle `vehicle` was already recorded in this round.
    error AlreadyRecorded(uint32 vehicle);
    /// @dev The packed records are not a whole number of {RECORD_BYTES}.
    error RecordsLength(uint256 length);
    /// @dev A malicious record must carry θ = 0.
    error MaliciousWithWeight(uint32 vehicle);
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
        if (p.maxRounds == 0 || p.roundDuration == 0 || p.category == 0) revert InvalidTask();
        if (p.targetAccuracy > ACCURACY_SCALE) revert AccuracyOutOfRange(p.targetAccuracy);
        uint256 required = uint256(p.maxRounds) * p.blockReward;
        if (msg.value < required || msg.value == 0) revert InsufficientEscrow(required, msg.value);
        if (msg.value > type(uint96).max) revert InvalidTask();
        taskId = ++taskCount;
        uint64 deadline = uint64(block.timestamp) + p.roundDuration;
        Task storage t = _tasks[taskId];
        t.publisher = msg.sender;
        t.category = p.category;
        t.maxRounds = p.maxRounds;
        t.status = Status.Active;
        t.escrow = uint96(msg.value);
        t.blockReward = p.blockReward;
        t.deadline = deadline;
        t.roundDuration = p.roundDuration;
        t.targetAccuracy = p.targetAccuracy;
        t.testSetDigest = p.testSetDigest;
        t.initialModelDigest = p.initialModelDigest;
        emit TaskCreated(
            taskId,
            msg.sender,
            msg.value,
            p.blockReward,
            p.category,
            p.maxRounds,
            p.targetAccuracy,
            p.roundDuration,
            p.initialModelDigest,
            p.initialModelCid,
            p.testSetDigest
        );
    }

    /**
     * @notice Cancels a task whose current step missed its deadline; the escrow not yet
     * paid out as block rewards becomes claimable by the publisher. Anyone may call.
     */
    function cancelTask(uint256 taskId) external {
        Task storage t = _activeTask(taskId);
        if (block.timestamp <= t.deadline) revert NotStalled(t.deadline);
        if (_stopReached(t)) revert TaskComplete(taskId);
        uint256 refund = t.escrow - uint256(_roundsRun(t)) * t.blockReward;
        t.status = Status.Cancelled;
        owed[t.publisher] += refund;
        emit TaskCancelled(taskId, refund);
    }

    // ---------------------------------------------------------------- cloud

    /// @notice Starts the next round from the global model `globalDigest` / `globalCid`.
    function startRound(uint256 taskId, bytes32 globalDigest, string calldata globalCid) external {
        _onlyCloud();
        Task storage t = _activeTask(taskId);
        _beforeDeadline(t);
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
     * @notice Finalizes the round: elects the leader by median cross-evaluation score
     * (ties: lowest edge index), credits it the block reward, adds every recorded
     * edge's median to its accuracy sum and records the global model.
     * @param accuracy Test accuracy of the global model, in {ACCURACY_SCALE} units.
     */
    function finalizeRound(uint256 taskId, bytes32 globalDigest, string calldata globalCid, uint32 accuracy)
        external
    {
        _onlyCloud();
        Task storage t = _activeTask(taskId);
        _beforeDeadline(t);
        if (t.phase != Phase.Scoring) revert WrongPhase(Phase.Scoring, t.phase);
        if (accuracy > ACCURACY_SCALE) revert AccuracyOutOfRange(accuracy);
        uint16 round = t.round;
        uint64 recorded = t.recordedEdges;
        uint32[] memory medians = _medians(taskId, recorded, t.scoredEdges);
        uint8 leader;
        uint32 best;
        bool any;
        for (uint256 e; e < medians.length; ++e) {
            if ((recorded >> e) & 1 == 0) continue;
            EdgeTally storage tally = _tallies[taskId][e];
            tally.accuracySum += medians[e];
            tally.roundsRecorded += 1;
            if (!any || medians[e] > best) {
                (leader, best, any) = (uint8(e), medians[e], true);
            }
        }
        _tallies[taskId][leader].roundsLed += 1;
        uint256 reward = t.blockReward;
        t.phase = Phase.Finalized;
        t.lastAccuracy = accuracy;
        t.deadline = uint64(block.timestamp) + t.roundDuration;
        _rounds[taskId][round] = RoundResult(globalDigest, accuracy, leader);
        owed[registry.edgeAt(leader)] += reward;
        emit LeaderElected(taskId, round, leader, reward, medians);
        emit RoundFinalized(taskId, round, globalDigest, globalCid, accuracy);
    }

    /**
     * @notice Computes every payout once the task has run its rounds (or reached its
     * target accuracy) and credits it to the payees. Anyone may call.
     */
    function finishTask(uint256 taskId) external {
        Task storage t = _activeTask(taskId);
        if (t.round == 0 || t.phase != Phase.Finalized || !_stopReached(t)) revert TaskNotComplete(taskId);
        t.status = Status.Finished;
        uint16 rounds = t.round;
        uint256 available = t.escrow - uint256(rounds) * t.blockReward;
        uint256 edges = registry.edgeCount();
        uint256[] memory meanAccuracy = new uint256[](edges);
        uint256 totalAccuracy;
        for (uint256 e; e < edges; ++e) {
            EdgeTally storage tally = _tallies[taskId][e];
            if (tally.roundsRecorded == 0) continue;
            meanAccuracy[e] = tally.accuracySum / tally.roundsRecorded;
            totalAccuracy += meanAccuracy[e];
        }
        uint256 paid;
        if (totalAccuracy != 0) {
            for (uint256 e; e < edges; ++e) {
                if (meanAccuracy[e] == 0) continue;
                uint256 contributionTotal = edgeContribution(taskId, uint8(e));
                if (contributionTotal == 0) continue;
                uint256 share = available * meanAccuracy[e] / totalAccuracy;
                paid += _payEdge(taskId, e, share, contributionTotal);
            }
        }
        uint256 returned = available - paid;
        owed[t.publisher] += returned;
        emit TaskFinished(taskId, rounds, available, paid, returned);
    }

    // ---------------------------------------------------------------- edges

    /**
     * @notice Commits the caller edge's selected trainers for the current round. Any
     * edge may later record a selected vehicle (handover).
     * @param vehicles Registry indices of registered vehicles.
     */
    function commitTrainers(uint256 taskId, uint32[] calldata vehicles) external {
        Task storage t = _activeTask(taskId);
        _beforeDeadline(t);
        if (t.phase != Phase.Training) revert WrongPhase(Phase.Training, t.phase);
        if (vehicles.length == 0) revert EmptyList();
        uint8 edge = registry.checkSelection(msg.sender, vehicles);
        uint16 round = t.round;
        mapping(uint256 => uint256) storage table = _trainers[taskId][round];
        uint256 wordIndex = vehicles[0] >> 7;
        uint256 word = table[wordIndex];
        for (uint256 i; i < vehicles.length; ++i) {
            uint32 v = vehicles[i];
            if (v >> 7 != wordIndex) {
                table[wordIndex] = word;
                wordIndex = v >> 7;
                word = table[wordIndex];
            }
            uint256 bit = uint256(1) << ((v & 0x7f) << 1);
            if (word & bit != 0) revert AlreadySelected(v);
            word |= bit;
        }
        table[wordIndex] = word;
        emit TrainersSelected(taskId, round, edge, vehicles);
    }

    /**
     * @notice Records the caller edge's round in one call: its preliminary model and,
     * per trainer, the update digest, self-reliability and weight θ (or malicious).
     * Every trainer must have been selected this round, by any edge, and not yet recorded.
     * @param records Trainer records packed as described at {RECORD_BYTES}; sorted by
     * vehicle index they share storage slots and cost least.
     */
    function recordRound(
        uint256 taskId,
        bytes32 preliminaryDigest,
        string calldata preliminaryCid,
        uint64 samples,
        bytes calldata records
    ) external {
        Task storage t = _activeTask(taskId);
        _beforeDeadline(t);
        if (t.phase != Phase.Training) revert WrongPhase(Phase.Training, t.phase);
        if (records.length == 0) revert EmptyList();
        if (records.length % RECORD_BYTES != 0) revert RecordsLength(records.length);
        uint8 edge = registry.edgeIndex(msg.sender);
        uint64 edgeBit = uint64(1) << edge;
        uint64 recorded = t.recordedEdges;
        if (recorded & edgeBit != 0) revert EdgeAlreadyRecorded(edge);
        t.recordedEdges = recorded | edgeBit;
        uint16 round = t.round;
        _applyRecords(taskId, round, edge, records);
        emit RoundRecorded(taskId, round, edge, preliminaryDigest, preliminaryCid, samples, records);
    }

    /**
     * @notice Submits the caller edge's test-set scores of every edge's preliminary
     * model (index = edge index, {ACCURACY_SCALE} units). Closes recording.
     */
    function submitScores(uint256 taskId, uint32[] calldata scores) external {
        Task storage t = _activeTask(taskId);
        _beforeDeadline(t);
        if (t.phase != Phase.Training && t.phase != Phase.Scoring) revert WrongPhase(Phase.Scoring, t.phase);
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
        t.phase = Phase.Scoring;
        emit ScoresSubmitted(taskId, t.round, edge, scores);
    }

    // ---------------------------------------------------------------- payees

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
    function edgeTally(uint256 taskId, uint8 edge) external view returns (EdgeTally memory) {
        return _tallies[taskId][edge];
    }

    /// @notice Σ_m C_{m,edge}: summed θ of all vehicles at edge `edge` in task `taskId`.
    function edgeContribution(uint256 taskId, uint8 edge) public view returns (uint256 total) {
        uint32[] storage words = _contribWords[taskId][edge];
        mapping(uint256 => uint256) storage contrib = _contrib[taskId];
        uint256 edgeKey = uint256(edge) << 32;
        for (uint256 w; w < words.length; ++w) {
            uint256 word = contrib[edgeKey | words[w]];
            for (uint256 lane; lane < 256; lane += 64) {
                total += uint64(word >> lane);
            }
        }
    }

    /// @notice Summed θ of vehicle `vehicle` at edge `edge` in task `taskId`.
    function contribution(uint256 taskId, uint8 edge, uint32 vehicle) external view returns (uint64) {
        return uint64(_contrib[taskId][(uint256(edge) << 32) | (vehicle >> 2)] >> ((vehicle & 3) << 6));
    }

    /// @notice Whether `vehicle` was selected / recorded in round `round` of task `taskId`.
    function trainerStatus(uint256 taskId, uint16 round, uint32 vehicle)
        external
        view
        returns (bool selected, bool recorded)
    {
        uint256 bits = _trainers[taskId][round][vehicle >> 7] >> ((vehicle & 0x7f) << 1);
        return (bits & 1 == 1, bits & 2 == 2);
    }

    // ---------------------------------------------------------------- internals

    function _applyRecords(uint256 taskId, uint16 round, uint8 edge, bytes calldata records) private {
        mapping(uint256 => uint256) storage table = _trainers[taskId][round];
        mapping(uint256 => uint256) storage contrib = _contrib[taskId];
        uint256 edgeKey = uint256(edge) << 32;
        uint256 first = _vehicleAt(records, 0);
        uint256 tableIndex = first >> 7;
        uint256 tableWord = table[tableIndex];
        uint256 accKey = edgeKey | (first >> 2);
        uint256 accWord = contrib[accKey];
        bool accLoadedEmpty = accWord == 0;
        for (uint256 off; off < records.length; off += RECORD_BYTES) {
            (uint32 v, uint64 theta, bool malicious) = _decode(records, off);
            if (v >> 7 != tableIndex) {
                table[tableIndex] = tableWord;
                tableIndex = v >> 7;
                tableWord = table[tableIndex];
            }
            uint256 shift = (v & 0x7f) << 1;
            uint256 bits = tableWord >> shift;
            if (bits & 1 == 0) revert NotSelected(v);
            if (bits & 2 != 0) revert AlreadyRecorded(v);
            tableWord |= uint256(2) << shift;
            if (malicious) {
                if (theta != 0) revert MaliciousWithWeight(v);
                continue;
            }
            if (theta == 0) continue;
            uint256 key = edgeKey | (v >> 2);
            if (key != accKey) {
                _storeContrib(taskId, edge, accKey, accWord, accLoadedEmpty);
                accKey = key;
                accWord = contrib[key];
                accLoadedEmpty = accWord == 0;
            }
            uint256 lane = (v & 3) << 6;
            uint64 sum = uint64(accWord >> lane) + theta; // checked: reverts on overflow
            accWord = (accWord & ~(uint256(type(uint64).max) << lane)) | (uint256(sum) << lane);
        }
        table[tableIndex] = tableWord;
        _storeContrib(taskId, edge, accKey, accWord, accLoadedEmpty);
    }

    function _vehicleAt(bytes calldata records, uint256 off) private pure returns (uint32 v) {
        assembly ("memory-safe") {
            v := shr(224, calldataload(add(records.offset, off)))
        }
    }

    /// @dev Vehicle, θ and flag of the record at `off` (the digest and reliability are only logged).
    function _decode(bytes calldata records, uint256 off) private pure returns (uint32 v, uint64 theta, bool malicious) {
        assembly ("memory-safe") {
            let p := add(records.offset, off)
            v := shr(224, calldataload(p))
            let tail := calldataload(add(p, 36)) // reliability(8) theta(8) flag(1)
            theta := and(shr(128, tail), 0xffffffffffffffff)
            malicious := iszero(iszero(and(shr(120, tail), 0xff)))
        }
    }

    function _storeContrib(uint256 taskId, uint8 edge, uint256 key, uint256 word, bool wasEmpty) private {
        if (word == 0) return;
        if (wasEmpty) _contribWords[taskId][edge].push(uint32(key));
        _contrib[taskId][key] = word;
    }

    function _payEdge(uint256 taskId, uint256 edge, uint256 share, uint256 totalContribution)
        private
        returns (uint256 paid)
    {
        uint32[] storage words = _contribWords[taskId][edge];
        mapping(uint256 => uint256) storage contrib = _contrib[taskId];
        uint256 edgeKey = edge << 32;
        for (uint256 w; w < words.length; ++w) {
            uint256 low = words[w];
            uint256 word = contrib[edgeKey | low];
            for (uint256 lane; lane < 4; ++lane) {
                uint256 c = uint64(word >> (lane << 6));
                if (c == 0) continue;
                uint256 amount = share * c / totalContribution;
                if (amount == 0) continue;
                address payee = registry.vehicleAt(uint32((low << 2) | lane));
                owed[payee] += amount;
                paid += amount;
                emit PayoutCredited(taskId, payee, uint8(edge), amount);
            }
        }
    }

    function _medians(uint256 taskId, uint64 recorded, uint64 scored) private view returns (uint32[] memory medians) {
        uint256 n = _bitLength(recorded);
        medians = new uint32[](n);
        uint256 evaluators = _popCount(scored);
        uint32[] memory column = new uint32[](evaluators);
        for (uint256 e; e < n; ++e) {
            if ((recorded >> e) & 1 == 0) continue;
            uint256 k;
            for (uint256 ev; ev < 64 && k < evaluators; ++ev) {
                if ((scored >> ev) & 1 == 0) continue;
                uint32 s = uint32(_scores[taskId][ev][e >> 3] >> ((e & 7) << 5));
                // insertion into the sorted prefix
                uint256 j = k;
                while (j > 0 && column[j - 1] > s) {
                    column[j] = column[j - 1];
                    --j;
                }
                column[j] = s;
                ++k;
            }
            medians[e] = column[(evaluators - 1) / 2]; // lower median
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

    function _beforeDeadline(Task storage t) private view {
        if (block.timestamp > t.deadline) revert DeadlinePassed(t.deadline);
    }

    function _roundsRun(Task storage t) private view returns (uint16) {
        return t.phase == Phase.Finalized || t.round == 0 ? t.round : t.round - 1;
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
