// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * @dev Per-token evolution state of a LivingCollection, packed into one slot.
 *
 * It is written when a request opens (or is cancelled), and almost never when a request is fulfilled: opening a
 * request already records the stage and model the token will have once it is fulfilled, so that fulfilment only
 * clears the {PendingRequest} slot (a storage refund) and writes the digest.
 *
 * It also binds the latest request to its seed: `seedTag` is the top 96 bits of the `seed` that the request's
 * `EvolutionRequested` event announced. Opening a request writes this slot anyway, so the tag costs no storage
 * write; fulfilments compare it with the seed the agent generated from ({matchesSeed}), so that metadata made for a
 * request that a reorg orphaned (and the same transaction re-mined with a new seed) can never be written.
 *
 * Bit layout:
 *
 *   bits        field          type     meaning
 *   [0..31]     nonce          uint32   requests ever opened for the token; request ids are `tokenId << 32 | nonce`
 *   [32..63]    stage          uint32   stage once the latest request is fulfilled (one more than {stageOf} while
 *                                       a request is pending)
 *   [64..79]    model          uint16   model credited for that stage (0 = none)
 *   [80..95]    previousModel  uint16   model of the stage before it: what {modelOf} returns while a request is
 *                                       pending
 *   [96..191]   seedTag        bytes12  top 96 bits of the latest request's seed (zero after a cancellation; only
 *                                       meaningful while that request is pending)
 *   [192..255]  (spare, zero)
 */
type TokenState is uint256;

/**
 * @dev A token's pending evolution request, packed into one slot; all zero when there is none.
 *
 * Bit layout:
 *
 *   bits        field        type    meaning
 *   [0..31]     nonce        uint32  the request's nonce (>= 1): `requestId = tokenId << 32 | nonce`
 *   [32..71]    requestedAt  uint40  block timestamp at which it was opened (> 0)
 *   [72..111]   timeout      uint40  the collection's request timeout (seconds) when it was opened
 *   [112..207]  fee          uint96  wei escrowed for it
 *   [208..223]  model        uint16  active model when it was opened (the {TokenState} `model` it predicted)
 *   [224..255]  stage        uint32  stage the token reaches when it is fulfilled
 */
type PendingRequest is uint256;

using EvolutionState for TokenState global;
using EvolutionState for PendingRequest global;

/**
 * @title EvolutionState
 * @dev Pack and unpack {TokenState} and {PendingRequest}, in the style of OpenZeppelin's `Time.Delay`.
 */
library EvolutionState {
    // ----------------------------------------------------------------------------------------------------
    // TokenState
    // ----------------------------------------------------------------------------------------------------

    function toTokenState(uint32 nonce_, uint32 stage_, uint16 model_, uint16 previousModel_, bytes12 seedTag_)
        internal
        pure
        returns (TokenState)
    {
        return TokenState.wrap(
            uint256(nonce_) | (uint256(stage_) << 32) | (uint256(model_) << 64) | (uint256(previousModel_) << 80)
                | (uint256(uint96(seedTag_)) << 96)
        );
    }

    /// @dev The tag {TokenState} keeps of a request's seed: its top 96 bits.
    function toSeedTag(bytes32 seed) internal pure returns (bytes12) {
        return bytes12(seed);
    }

    function nonce(TokenState self) internal pure returns (uint32) {
        return uint32(TokenState.unwrap(self));
    }

    function stage(TokenState self) internal pure returns (uint32) {
        return uint32(TokenState.unwrap(self) >> 32);
    }

    function model(TokenState self) internal pure returns (uint16) {
        return uint16(TokenState.unwrap(self) >> 64);
    }

    function previousModel(TokenState self) internal pure returns (uint16) {
        return uint16(TokenState.unwrap(self) >> 80);
    }

    function seedTag(TokenState self) internal pure returns (bytes12) {
        return bytes12(uint96(TokenState.unwrap(self) >> 96));
    }

    /// @dev True when `seed`'s tag is the one recorded for the token's latest request.
    function matchesSeed(TokenState self, bytes32 seed) internal pure returns (bool) {
        return uint96(TokenState.unwrap(self) >> 96) == uint96(bytes12(seed));
    }

    /// @dev `self` with `model` replaced.
    function withModel(TokenState self, uint16 model_) internal pure returns (TokenState) {
        return TokenState.wrap((TokenState.unwrap(self) & ~(uint256(0xffff) << 64)) | (uint256(model_) << 64));
    }

    // ----------------------------------------------------------------------------------------------------
    // PendingRequest
    // ----------------------------------------------------------------------------------------------------

    function toPendingRequest(
        uint32 nonce_,
        uint40 requestedAt_,
        uint40 timeout_,
        uint96 fee_,
        uint16 model_,
        uint32 stage_
    )
        internal
        pure
        returns (PendingRequest)
    {
        return PendingRequest.wrap(
            uint256(nonce_) | (uint256(requestedAt_) << 32) | (uint256(timeout_) << 72) | (uint256(fee_) << 112)
                | (uint256(model_) << 208) | (uint256(stage_) << 224)
        );
    }

    /// @dev True when a request is pending (its slot is not zero).
    function exists(PendingRequest self) internal pure returns (bool) {
        return PendingRequest.unwrap(self) != 0;
    }

    /// @dev True when `self` is pending and is request `requestId` (`requestId`'s low 32 bits are its nonce).
    function isRequest(PendingRequest self, uint256 requestId) internal pure returns (bool) {
        uint256 raw = PendingRequest.unwrap(self);
        return raw != 0 && uint32(raw) == uint32(requestId);
    }

    function nonce(PendingRequest self) internal pure returns (uint32) {
        return uint32(PendingRequest.unwrap(self));
    }

    function requestedAt(PendingRequest self) internal pure returns (uint40) {
        return uint40(PendingRequest.unwrap(self) >> 32);
    }

    /// @dev Timestamp from which the request may be cancelled.
    function cancellableAt(PendingRequest self) internal pure returns (uint256) {
        uint256 raw = PendingRequest.unwrap(self);
        return uint256(uint40(raw >> 32)) + uint40(raw >> 72);
    }

    function fee(PendingRequest self) internal pure returns (uint96) {
        return uint96(PendingRequest.unwrap(self) >> 112);
    }

    function model(PendingRequest self) internal pure returns (uint16) {
        return uint16(PendingRequest.unwrap(self) >> 208);
    }

    function stage(PendingRequest self) internal pure returns (uint32) {
        return uint32(PendingRequest.unwrap(self) >> 224);
    }
}
