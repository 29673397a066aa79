// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable2Step, Ownable} from "@openzeppelin/contracts/access/Ownable2Step.sol";

/**
 * @title BMFLRegistry
 * @notice Who takes part in BMFL: the operator (owner) manages MEC edges (consensus
 * nodes) and the cloud aggregator; vehicles register themselves with a data profile.
 * @dev Edges and vehicles get compact, permanent indices (never reused) so that the task
 * contract can pack per-vehicle and per-edge state into bitmaps and 64-bit lanes.
 */
contract BMFLRegistry is Ownable2Step {
    /// @notice Most edges a registry can ever hold (edge bitmaps are 64-bit).
    uint256 public constant MAX_EDGES = 64;

    /// @notice A vehicle's registration, packed in one storage slot.
    struct Vehicle {
        address account;
        uint32 categories; // bitmask of data categories the vehicle holds
        uint8 dataType;
        uint32 samples;
        bool active;
    }

    /// @notice A consensus edge.
    struct Edge {
        uint8 index;
        bool active;
        bool known;
    }

    /// @notice The cloud aggregator (starts and finalizes rounds).
    address public cloud;

    address[] private _edgeAccounts;
    mapping(address account => Edge) private _edges;
    uint64 private _activeEdgeMask;

    Vehicle[] private _vehicles;
    mapping(uint256 index => bytes32) private _profileHashes;
    mapping(address account => uint256) private _vehicleIndexPlusOne;
    mapping(uint256 word => uint256) private _activeVehicleWords;

    /// @notice Emitted when `edge` is added (or re-activated) with its permanent index.
    event EdgeAdded(address indexed edge, uint8 index);
    /// @notice Emitted when `edge` is removed.
    event EdgeRemoved(address indexed edge, uint8 index);
    /// @notice Emitted when the cloud role moves from `previousCloud` to `newCloud`.
    event CloudSet(address indexed previousCloud, address indexed newCloud);
    /// @notice Emitted when a vehicle registers (or re-registers) with its data profile.
    event VehicleRegistered(
        address indexed vehicle,
        uint32 indexed index,
        uint32 categories,
        uint8 dataType,
        uint32 samples,
        bytes32 profileHash
    );
    /// @notice Emitted when a vehicle deregisters itself.
    event VehicleDeregistered(address indexed vehicle, uint32 indexed index);

    /// @dev The zero address was given where an account is required.
    error ZeroAddress();
    /// @dev `edge` is already an active edge.
    error EdgeExists(address edge);
    /// @dev `account` is not an active edge.
    error NotEdge(address account);
    /// @dev The registry already holds MAX_EDGES edges.
    error TooManyEdges();
    /// @dev `vehicle` is already registered.
    error AlreadyRegistered(address vehicle);
    /// @dev `account` is not a registered vehicle.
    error NotRegistered(address account);
    /// @dev No vehicle has index `index`.
    error UnknownVehicle(uint32 index);
    /// @dev The vehicle with index `index` is not registered (never was, or deregistered).
    error VehicleNotRegistered(uint32 index);
    /// @dev A profile must declare at least one data category and one sample.
    error EmptyProfile();

    /// @param operator The initial owner, who manages edges and the cloud role.
    constructor(address operator) Ownable(operator) {}

    // ---------------------------------------------------------------- operator

    /**
     * @notice Adds `edge` as a consensus node, or re-activates a removed one with its
     * old index.
     */
    function addEdge(address edge) external onlyOwner {
        if (edge == address(0)) revert ZeroAddress();
        Edge storage e = _edges[edge];
        if (e.active) revert EdgeExists(edge);
        if (!e.known) {
            if (_edgeAccounts.length == MAX_EDGES) revert TooManyEdges();
            e.index = uint8(_edgeAccounts.length);
            e.known = true;
            _edgeAccounts.push(edge);
        }
        e.active = true;
        _activeEdgeMask |= uint64(1) << e.index;
        emit EdgeAdded(edge, e.index);
    }

    /// @notice Removes `edge`; its index stays reserved for it.
    function removeEdge(address edge) external onlyOwner {
        Edge storage e = _edges[edge];
        if (!e.active) revert NotEdge(edge);
        e.active = false;
        _activeEdgeMask &= ~(uint64(1) << e.index);
        emit EdgeRemoved(edge, e.index);
    }

    /// @notice Gives the cloud role to `newCloud`.
    function setCloud(address newCloud) external onlyOwner {
        if (newCloud == address(0)) revert ZeroAddress();
        emit CloudSet(cloud, newCloud);
        cloud = newCloud;
    }

    // ---------------------------------------------------------------- vehicles

    /**
     * @notice Registers the caller as a vehicle with its data profile. A vehicle that
     * deregistered earlier gets its old index back.
     * @param categories Bitmask of the data categories held.
     * @param dataType Data type code (application defined).
     * @param samples Number of local samples.
     * @param profileHash Hash of the full off-chain data profile.
     * @return index The vehicle's permanent index.
     */
    function registerVehicle(uint32 categories, uint8 dataType, uint32 samples, bytes32 profileHash)
        external
        returns (uint32 index)
    {
        if (categories == 0 || samples == 0) revert EmptyProfile();
        uint256 plusOne = _vehicleIndexPlusOne[msg.sender];
        if (plusOne == 0) {
            index = uint32(_vehicles.length);
            _vehicles.push();
            _vehicleIndexPlusOne[msg.sender] = uint256(index) + 1;
        } else {
            index = uint32(plusOne - 1);
            if (_vehicles[index].active) revert AlreadyRegistered(msg.sender);
        }
        _vehicles[index] = Vehicle(msg.sender, categories, dataType, samples, true);
        _profileHashes[index] = profileHash;
        _activeVehicleWords[index >> 8] |= 1 << (index & 0xff);
        emit VehicleRegistered(msg.sender, index, categories, dataType, samples, profileHash);
    }

    /// @notice Deregisters the caller; payouts already earned stay claimable.
    function deregisterVehicle() external {
        uint32 index = vehicleIndex(msg.sender);
        Vehicle storage v = _vehicles[index];
        if (!v.active) revert NotRegistered(msg.sender);
        v.active = false;
        _activeVehicleWords[index >> 8] &= ~(uint256(1) << (index & 0xff));
        emit VehicleDeregistered(msg.sender, index);
    }

    // ---------------------------------------------------------------- views

    /// @notice Number of edge indices ever assigned.
    function edgeCount() external view returns (uint256) {
        return _edgeAccounts.length;
    }

    /// @notice The account behind edge index `index`.
    function edgeAt(uint8 index) external view returns (address) {
        return _edgeAccounts[index];
    }

    /// @notice Bit i is set when edge index i is active.
    function activeEdgeMask() external view returns (uint64) {
        return _activeEdgeMask;
    }

    /// @notice Whether `account` is an active edge.
    function isEdge(address account) external view returns (bool) {
        return _edges[account].active;
    }

    /// @notice The index of active edge `account`; reverts with {NotEdge} otherwise.
    function edgeIndex(address account) public view returns (uint8) {
        Edge memory e = _edges[account];
        if (!e.active) revert NotEdge(account);
        return e.index;
    }

    /// @notice Number of vehicle indices ever assigned.
    function vehicleCount() external view returns (uint256) {
        return _vehicles.length;
    }

    /// @notice The index of vehicle `account` (registered now or before).
    function vehicleIndex(address account) public view returns (uint32) {
        uint256 plusOne = _vehicleIndexPlusOne[account];
        if (plusOne == 0) revert NotRegistered(account);
        return uint32(plusOne - 1);
    }

    /// @notice The account behind vehicle index `index`.
    function vehicleAt(uint32 index) external view returns (address) {
        if (index >= _vehicles.length) revert UnknownVehicle(index);
        return _vehicles[index].account;
    }

    /// @notice The registration of vehicle `index` and its profile hash.
    function vehicle(uint32 index) external view returns (Vehicle memory, bytes32 profileHash) {
        if (index >= _vehicles.length) revert UnknownVehicle(index);
        return (_vehicles[index], _profileHashes[index]);
    }

    /// @notice Whether vehicle `index` is registered now.
    function isActiveVehicle(uint32 index) public view returns (bool) {
        return (_activeVehicleWords[index >> 8] >> (index & 0xff)) & 1 == 1;
    }
}
