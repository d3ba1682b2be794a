// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title EventEmitter
/// @notice Test-only contract for the chain watcher's tests: emits LivingCollection's EvolutionRequested
/// event (same signature, so the collection's ABI decodes it) and a Ping event with a dynamic argument.
/// Compiled by tests/watch/compile_emitter.js into EventEmitter.json (committed).
contract EventEmitter {
    event EvolutionRequested(
        uint256 indexed requestId, uint256 indexed tokenId, address indexed requester, uint32 stage, bytes32 seed
    );
    event Ping(uint256 indexed n, string note);

    uint256 private _lastRequestId;

    /// @dev Emits one {EvolutionRequested} with the next request id.
    function request(uint256 tokenId, uint32 stage, bytes32 seed) external returns (uint256 requestId) {
        requestId = ++_lastRequestId;
        emit EvolutionRequested(requestId, tokenId, msg.sender, stage, seed);
    }

    /// @dev Emits `count` {EvolutionRequested} events in one transaction.
    function requestMany(uint256 tokenId, uint256 count) external {
        for (uint256 i = 0; i < count; ++i) {
            uint256 requestId = ++_lastRequestId;
            emit EvolutionRequested(requestId, tokenId, msg.sender, uint32(i), keccak256(abi.encode(requestId)));
        }
    }

    /// @dev Emits one {Ping}.
    function ping(uint256 n, string calldata note) external {
        emit Ping(n, note);
    }
}
