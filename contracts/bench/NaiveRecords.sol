// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/**
 * @title NaiveRecords
 * @notice Baseline for `bench/gas.py`: the common blockchain-FL layout that stores one
 * struct per model update, each in its own transaction. Not used by the platform.
 */
contract NaiveRecords {
    /// @notice One stored model update.
    struct Update {
        uint256 taskId;
        uint256 round;
        address vehicle;
        bytes32 updateDigest;
        int256 reliability;
        uint256 theta;
        bool malicious;
    }

    /// @notice Every update ever recorded.
    Update[] public updates;

    /// @notice An update was stored at `index`.
    event UpdateRecorded(uint256 indexed index, uint256 indexed taskId, address indexed vehicle);

    /// @notice Stores one update.
    function recordUpdate(
        uint256 taskId,
        uint256 round,
        address vehicle,
        bytes32 updateDigest,
        int256 reliability,
        uint256 theta,
        bool malicious
    ) external {
        updates.push(Update(taskId, round, vehicle, updateDigest, reliability, theta, malicious));
        emit UpdateRecorded(updates.length - 1, taskId, vehicle);
    }
}
