// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * @title IERC7572
 * @dev ERC-7572: contract-level metadata via `contractURI()`. The URI points to a JSON object with the
 * collection's `name`, `description`, `image`, `external_link` (OpenSea's contract-level metadata);
 * `ContractURIUpdated()` tells indexers to fetch it again.
 */
interface IERC7572 {
    /// @dev Emitted when the contract-level metadata changes.
    event ContractURIUpdated();

    /// @dev The URI of the contract-level metadata JSON.
    function contractURI() external view returns (string memory);
}
