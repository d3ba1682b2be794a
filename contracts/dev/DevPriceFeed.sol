// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AggregatorV3Interface} from "../interfaces/AggregatorV3Interface.sol";

/**
 * @title DevPriceFeed
 * @notice DEVELOPMENT AND TEST ONLY. A Chainlink-compatible price feed whose answer anyone can set.
 *
 * @dev Implements {AggregatorV3Interface} and emits the `AnswerUpdated` and `NewRound` events of Chainlink's
 * `AggregatorInterface`, like the real aggregators, so that oracle code can be exercised on a local chain.
 * It keeps every round's data. There is deliberately NO access control (like Chainlink's own
 * `MockV3Aggregator`): tests and demos drive it from any account. Never deploy it where its answer matters;
 * `scripts/deploy.py` deploys it on local networks only.
 */
contract DevPriceFeed is AggregatorV3Interface {
    /// @dev Chainlink's `AggregatorInterface` event: a round's answer was set.
    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);

    /// @dev Chainlink's `AggregatorInterface` event: a round started.
    event NewRound(uint256 indexed roundId, address indexed startedBy, uint256 startedAt);

    /// @param roundId A round that has no data (never written).
    error DevPriceFeedNoData(uint80 roundId);

    /// @param roundId Rounds start at 1; round 0 cannot be written.
    error DevPriceFeedInvalidRound(uint80 roundId);

    struct Round {
        int256 answer;
        uint256 startedAt;
        uint256 updatedAt;
        bool written;
    }

    /// @inheritdoc AggregatorV3Interface
    uint256 public constant version = 4;

    uint8 private immutable _decimals;
    string private _description;
    uint80 private _latestRound;
    mapping(uint80 roundId => Round round) private _rounds;

    /**
     * @dev Sets decimals and description, and writes round 1 with `initialAnswer` at the current block time.
     *
     * Emits a {NewRound} and an {AnswerUpdated} event.
     */
    constructor(uint8 decimals_, string memory description_, int256 initialAnswer) {
        _decimals = decimals_;
        _description = description_;
        updateAnswer(initialAnswer);
    }

    /**
     * @dev Opens the next round with `answer`, started and updated now. Anyone may call it.
     *
     * Emits a {NewRound} event, then an {AnswerUpdated} event.
     */
    function updateAnswer(int256 answer) public {
        uint80 roundId = _latestRound + 1;
        _write(roundId, answer, block.timestamp, block.timestamp);
    }

    /**
     * @dev Writes round `roundId` with explicit times (for tests: stale answers, gaps, incomplete rounds with
     * `timestamp == 0`, rewritten rounds). The latest round becomes `roundId` when it is higher than the current
     * one, so history stays ordered. Anyone may call it.
     *
     * Requirements:
     *
     * - `roundId` is not 0.
     *
     * Emits a {NewRound} event, then an {AnswerUpdated} event.
     */
    function updateRoundData(uint80 roundId, int256 answer, uint256 timestamp, uint256 startedAt) external {
        if (roundId == 0) revert DevPriceFeedInvalidRound(roundId);
        _write(roundId, answer, timestamp, startedAt);
    }

    /// @inheritdoc AggregatorV3Interface
    function decimals() external view returns (uint8) {
        return _decimals;
    }

    /// @inheritdoc AggregatorV3Interface
    function description() external view returns (string memory) {
        return _description;
    }

    /**
     * @inheritdoc AggregatorV3Interface
     * @dev Reverts with {DevPriceFeedNoData} for a round never written.
     */
    function getRoundData(uint80 roundId_)
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        return _read(roundId_);
    }

    /// @inheritdoc AggregatorV3Interface
    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        return _read(_latestRound);
    }

    /// @dev The latest round id (Chainlink's `latestRound`).
    function latestRound() external view returns (uint256) {
        return _latestRound;
    }

    /// @dev The latest answer (Chainlink's `latestAnswer`).
    function latestAnswer() external view returns (int256) {
        return _rounds[_latestRound].answer;
    }

    /// @dev When the latest answer was set (Chainlink's `latestTimestamp`).
    function latestTimestamp() external view returns (uint256) {
        return _rounds[_latestRound].updatedAt;
    }

    function _write(uint80 roundId, int256 answer, uint256 updatedAt, uint256 startedAt) private {
        _rounds[roundId] = Round(answer, startedAt, updatedAt, true);
        if (roundId > _latestRound) _latestRound = roundId;
        emit NewRound(roundId, msg.sender, startedAt);
        emit AnswerUpdated(answer, roundId, updatedAt);
    }

    function _read(uint80 roundId)
        private
        view
        returns (uint80, int256 answer, uint256 startedAt, uint256 updatedAt, uint80)
    {
        Round storage round = _rounds[roundId];
        if (!round.written) revert DevPriceFeedNoData(roundId);
        return (roundId, round.answer, round.startedAt, round.updatedAt, roundId);
    }
}
