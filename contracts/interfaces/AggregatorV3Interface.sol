// SPDX-License-Identifier: MIT
pragma solidity ^0.8.0;

/**
 * @title AggregatorV3Interface
 * @dev Chainlink's price-feed read interface, vendored by hand from
 * the `chainlink/contracts` package (`src/v0.8/shared/interfaces/AggregatorV3Interface.sol`, MIT) so that we need no
 * Chainlink package. Feeds and their proxies implement it; consumers read {latestRoundData}.
 */
interface AggregatorV3Interface {
    /// @dev Decimals of `answer` (8 for most USD pairs).
    function decimals() external view returns (uint8);

    /// @dev Human-readable pair, e.g. "ETH / USD".
    function description() external view returns (string memory);

    /// @dev Version of the aggregator implementation.
    function version() external view returns (uint256);

    /// @dev The data of round `_roundId`. Real aggregators revert for rounds without data.
    function getRoundData(uint80 _roundId)
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);

    /// @dev The data of the latest round.
    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
}
