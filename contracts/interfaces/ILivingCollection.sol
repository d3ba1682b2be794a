// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * @title ILivingCollection
 * @notice Events, errors and entry points of an ERC-721 collection whose tokens evolve.
 *
 * A holder opens an evolution request (paying the fee into escrow, or burning a second token with {fuse}).
 * An off-chain agent holding `AGENT_ROLE` generates new art and lore, pins the metadata JSON as one raw IPFS
 * block, and fulfils the request with the block's sha256 digest. `tokenURI` rebuilds `ipfs://<CIDv1>` from
 * that digest on-chain. Scheduled and oracle-driven refreshes rewrite digests without a request.
 *
 * Request ids encode their token: `requestId = tokenId << 32 | nonce`, where `nonce` counts the requests
 * ever opened for that token (starting at 1). A request id is never reused on one chain, but a reorg can re-mine
 * the transaction that opened it in another block: same id, new `seed`. Fulfilments therefore name the seed they
 * were generated from, and only the seed of the request pending now is accepted.
 */
interface ILivingCollection {
    // ----------------------------------------------------------------------------------------------------
    // Events
    // ----------------------------------------------------------------------------------------------------

    /// @dev Emitted when a holder opens an evolution request (directly or through {fuse}).
    event EvolutionRequested(
        uint256 indexed requestId, uint256 indexed tokenId, address indexed requester, uint32 stage, bytes32 seed
    );

    /// @dev Emitted when the agent fulfils a request: the token moved to `stage` with new metadata.
    event Evolved(
        uint256 indexed tokenId, uint256 indexed requestId, uint32 stage, bytes32 metadataDigest, bytes32 provenance
    );

    /// @dev Emitted when a pending request is cancelled after its timeout: `refund` is credited to `requester`,
    /// who collects it with {withdrawRefund}.
    event EvolutionCancelled(uint256 indexed requestId, uint256 indexed tokenId, address indexed requester, uint256 refund);

    /// @dev Emitted by {fulfillEvolutions} for a request it left out because it is no longer pending with the given
    /// seed (cancelled, fulfilled, unknown, listed twice, or re-mined after a reorg with a new seed). Nothing was
    /// written for it; the rest of the batch went through.
    event FulfilmentSkipped(uint256 indexed requestId);

    /// @dev Emitted when `account` withdraws its credited refunds to `to`.
    event RefundWithdrawn(address indexed account, address indexed to, uint256 amount);

    /// @dev Emitted when the admin commits to the genesis reveal: the provenance hash of the shuffled collection and
    /// the future block whose hash will pick the offset (also when a missed reveal is moved to a new block).
    event RevealCommitted(bytes32 provenanceHash, uint64 revealBlock);

    /// @dev Emitted once, when the hash of the committed reveal block is recorded.
    event Revealed(uint64 revealBlock, bytes32 revealHash);

    /// @dev Emitted when `burnId` is burnt to open request `requestId` for `keepId`.
    event Fused(uint256 indexed keepId, uint256 indexed burnId, uint256 indexed requestId);

    /// @dev Emitted once per {refreshMetadata} call, after the digests are written.
    event MetadataRefreshed(uint256 count, bytes32 provenance);

    /// @dev Emitted when the admin registers an immutable model record.
    event ModelRegistered(uint16 indexed modelId, bytes32 weightsDigest, string manifestURI);

    /// @dev Emitted when the admin selects the model that subsequent fulfilments and refreshes refer to.
    event ActiveModelChanged(uint16 indexed previousModelId, uint16 indexed modelId);

    /// @dev Emitted when fees are sent to the treasury.
    event FeesWithdrawn(address indexed treasury, uint256 amount);

    /// @dev Emitted when the admin changes the public mint price (wei per token).
    event MintPriceChanged(uint256 previousPrice, uint256 price);

    /// @dev Emitted when the admin changes the evolution fee. Pending requests keep the fee they escrowed.
    event EvolutionFeeChanged(uint256 previousFee, uint256 fee);

    /// @dev Emitted when the admin changes the request timeout. Pending requests keep the timeout they opened with.
    event RequestTimeoutChanged(uint256 previousTimeout, uint256 timeout);

    /// @dev Emitted when the admin changes the address that {withdrawFees} pays.
    event TreasuryChanged(address indexed previousTreasury, address indexed treasury);

    /// @dev Emitted when the admin changes the base URI used by tokens that have no metadata digest yet.
    event BaseURIChanged(string baseURI);

    /// @dev Emitted when the admin changes the ERC-2981 default royalty.
    event DefaultRoyaltyChanged(address indexed receiver, uint96 feeNumerator);

    // ----------------------------------------------------------------------------------------------------
    // Errors
    // ----------------------------------------------------------------------------------------------------

    /// @param tokenId The token that does not exist (never minted, or burnt).
    error LivingCollectionUnknownToken(uint256 tokenId);
    /// @param tokenId The token. @param caller Neither its owner nor approved.
    error LivingCollectionNotHolder(uint256 tokenId, address caller);
    /// @param sent Value sent. @param required Exact value required.
    error LivingCollectionWrongPayment(uint256 sent, uint256 required);
    /// @param tokenId The token that already has a pending request. @param requestId That request.
    error LivingCollectionRequestPending(uint256 tokenId, uint256 requestId);
    /// @param requestId A request that is not (or no longer) pending: unknown, fulfilled or cancelled.
    error LivingCollectionRequestNotPending(uint256 requestId);
    /// @param requestId A pending request. @param seed The seed given for it, which is not its seed (it was
    /// generated for an orphaned copy of the request, before a reorg re-mined it with a new seed).
    error LivingCollectionSeedMismatch(uint256 requestId, bytes32 seed);
    /// @param requestId The request. @param cancellableAt Timestamp from which it may be cancelled.
    error LivingCollectionRequestNotExpired(uint256 requestId, uint256 cancellableAt);
    /// @param requestId The request. @param caller Neither the requester nor the token's holder.
    error LivingCollectionNotRequester(uint256 requestId, address caller);
    /// @param requested Tokens asked for. @param remaining Tokens left under the supply cap.
    error LivingCollectionSupplyExceeded(uint256 requested, uint256 remaining);
    /// @param wallet The minter. @param requested Tokens asked for. @param remaining Left under the per-wallet cap.
    error LivingCollectionWalletCapExceeded(address wallet, uint256 requested, uint256 remaining);
    /// @param a Length of the first array. @param b Length of the second array.
    error LivingCollectionLengthMismatch(uint256 a, uint256 b);
    /// @param digest The zero digest is reserved for "no metadata yet" (also: a zero ERC-7007 proof).
    error LivingCollectionInvalidDigest(bytes32 digest);
    /// @param modelId A model id that was never registered (0 is "none").
    error LivingCollectionUnknownModel(uint16 modelId);
    /// @param weightsDigest A model with these weights is already registered.
    error LivingCollectionModelExists(bytes32 weightsDigest);
    /// @dev No active model is set; the admin must register and activate one before fulfilments.
    error LivingCollectionNoActiveModel();
    /// @param tokenId The same token was passed as both ids of {fuse}.
    error LivingCollectionSelfFuse(uint256 tokenId);
    /// @param to Recipient whose ETH transfer failed. @param amount Amount.
    error LivingCollectionTransferFailed(address to, uint256 amount);
    /// @param fee Fees and prices must be whole gwei and fit the packed storage (uint96 wei).
    error LivingCollectionInvalidFee(uint256 fee);
    /// @dev A zero address was given where one is required (treasury).
    error LivingCollectionZeroAddress();
    /// @dev A mint or airdrop of zero tokens.
    error LivingCollectionZeroQuantity();
    /// @param timeout A request timeout outside [MIN_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT] (seconds).
    error LivingCollectionInvalidTimeout(uint256 timeout);
    /// @param account Has no refund to withdraw.
    error LivingCollectionNoRefund(address account);
    /// @param feeNumerator A royalty above the cap. @param max The cap (basis points).
    error LivingCollectionRoyaltyTooHigh(uint256 feeNumerator, uint256 max);
    /// @dev The genesis reveal was already committed (it is committed once).
    error LivingCollectionRevealCommitted();
    /// @param revealBlock A reveal block too soon. @param earliest The first block allowed (now + REVEAL_DELAY).
    error LivingCollectionRevealTooSoon(uint64 revealBlock, uint256 earliest);
    /// @dev No reveal is committed, or it is already revealed.
    error LivingCollectionNothingToReveal();
    /// @param revealBlock The committed block, not mined yet (or mined in this very block).
    error LivingCollectionRevealNotReady(uint64 revealBlock);
    /// @dev The reveal is not recorded yet.
    error LivingCollectionNotRevealed();
    /// @dev An ERC-7007 triple of the wrong shape: `prompt` must be 160 bytes, `aigcData` and `proof` 32 each.
    error LivingCollectionAigcMalformed(uint256 promptLength, uint256 aigcDataLength, uint256 proofLength);
    /// @param tokenId The token `addAigcData` was called for. @param promptTokenId The token its prompt names.
    error LivingCollectionAigcTokenMismatch(uint256 tokenId, uint256 promptTokenId);
    /// @param aigcData The ERC-7007 AIGC data given. @param metadataDigest The token's current digest (0: none).
    error LivingCollectionAigcNotCurrent(uint256 tokenId, bytes32 aigcData, bytes32 metadataDigest);
    /// @param stage The stage the prompt names. @param currentStage The token's stage ({stageOf}).
    error LivingCollectionAigcStageMismatch(uint256 tokenId, uint256 stage, uint256 currentStage);
    /// @param weightsDigest The weights the prompt names. @param registered The weights registered for the
    /// token's model ({modelOf}; 0: none).
    error LivingCollectionAigcModelMismatch(uint256 tokenId, bytes32 weightsDigest, bytes32 registered);

    // ----------------------------------------------------------------------------------------------------
    // Holder actions
    // ----------------------------------------------------------------------------------------------------

    /// @notice Opens an evolution request for `tokenId`, escrowing exactly {evolutionFee}.
    function requestEvolution(uint256 tokenId) external payable returns (uint256 requestId);

    /// @notice Burns `burnId` and opens an evolution request for `keepId`. Caller must hold (or be approved for) both.
    function fuse(uint256 keepId, uint256 burnId) external payable returns (uint256 requestId);

    /// @notice Cancels a pending request after {requestTimeout} and credits its fee to the requester
    /// ({refundOf}, {withdrawRefund}).
    function cancelEvolution(uint256 requestId) external;

    /// @notice Sends the caller's credited refunds to `to` (the caller itself, or any address that accepts ETH).
    function withdrawRefund(address to) external;

    // ----------------------------------------------------------------------------------------------------
    // Agent actions (AGENT_ROLE; refreshes REFRESHER_ROLE)
    // ----------------------------------------------------------------------------------------------------

    /// @notice Fulfils one pending request exactly once. `seed` is the request's seed (from its
    /// {EvolutionRequested} event): metadata made from another seed is rejected.
    function fulfillEvolution(uint256 requestId, bytes32 seed, bytes32 metadataDigest, bytes32 provenance) external;

    /// @notice Fulfils many pending requests in one transaction. A request that is not pending with its given seed
    /// is skipped ({FulfilmentSkipped}); the others are fulfilled.
    function fulfillEvolutions(
        uint256[] calldata requestIds,
        bytes32[] calldata seeds,
        bytes32[] calldata metadataDigests,
        bytes32[] calldata provenances
    ) external;

    /// @notice Rewrites metadata digests without a request (scheduled and oracle-driven refreshes); REFRESHER_ROLE.
    function refreshMetadata(uint256[] calldata tokenIds, bytes32[] calldata digests, bytes32 provenance) external;

    // ----------------------------------------------------------------------------------------------------
    // Views
    // ----------------------------------------------------------------------------------------------------

    function stageOf(uint256 tokenId) external view returns (uint32);

    function metadataDigestOf(uint256 tokenId) external view returns (bytes32);

    /// @notice The model that produced the token's current metadata (0 before its first fulfilment).
    /// @dev Set by fulfilments: a refresh re-renders the current stage and does not change it.
    function modelOf(uint256 tokenId) external view returns (uint16);

    /// @notice The pending request of `tokenId`; all zero when there is none.
    function pendingRequestOf(uint256 tokenId)
        external
        view
        returns (uint256 requestId, address requester, uint256 fee, uint256 requestedAt);

    /// @notice True while `requestId` is pending.
    function isPending(uint256 requestId) external view returns (bool);

    /// @notice True while `requestId` is pending and `seed` is its seed: what a fulfilment of it requires.
    function isPendingWith(uint256 requestId, bytes32 seed) external view returns (bool);

    /// @notice Wei credited to `account` by cancellations and not withdrawn yet.
    function refundOf(address account) external view returns (uint256);
}
