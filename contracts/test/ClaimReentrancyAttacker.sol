// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {BMFLTasks} from "../src/BMFLTasks.sol";

/**
 * @title ClaimReentrancyAttacker
 * @notice Test helper: a publisher contract whose `receive` tries to re-enter
 * {BMFLTasks-claim} to be paid twice.
 */
contract ClaimReentrancyAttacker {
    /// @notice The attacked contract.
    BMFLTasks public immutable tasks;
    /// @notice Whether the nested claim succeeded (it must not).
    bool public reentered;
    /// @notice Revert data of the nested claim.
    bytes public nestedError;
    /// @notice Number of payments received.
    uint256 public payments;

    constructor(BMFLTasks tasks_) {
        tasks = tasks_;
    }

    /// @notice Publishes a task funded by `msg.value`.
    function publish(BMFLTasks.TaskParams calldata p) external payable returns (uint256) {
        return tasks.createTask{value: msg.value}(p);
    }

    /// @notice Claims what this contract is owed.
    function attack() external {
        tasks.claim();
    }

    receive() external payable {
        ++payments;
        if (payments == 1) {
            try tasks.claim() {
                reentered = true;
            } catch (bytes memory err) {
                nestedError = err;
            }
        }
    }
}
