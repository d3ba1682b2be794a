// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC2981} from "@openzeppelin/contracts/token/common/ERC2981.sol";
import {IERC4906} from "@openzeppelin/contracts/interfaces/IERC4906.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {ILivingCollection} from "./interfaces/ILivingCollection.sol";
import {IERC7007} from "./interfaces/IERC7007.sol";
import {IERC7572} from "./interfaces/IERC7572.sol";
import {CIDv1} from "./libraries/CIDv1.sol";
import {EvolutionState, TokenState, PendingRequest} from "./libraries/EvolutionState.sol";

/**
 * @title LivingCollection
 * @notice An ERC-721 collection whose tokens evolve: holders pay to open evolution requests, an off-chain agent
 * fulfils them with the sha256 digest of new metadata pinned on IPFS, and `tokenURI` rebuilds `ipfs://<CIDv1>`.
 *
 * @dev Roles:
 *
 * - `DEFAULT_ADMIN_ROLE`: grants roles, registers and activates models, sets prices, fees, timeout, treasury,
 *   base URI and royalty, commits the genesis reveal. One account holds it, and it moves in two steps
 *   (OpenZeppelin's {AccessControlDefaultAdminRules}: `beginDefaultAdminTransfer`, then the new admin's
 *   `acceptDefaultAdminTransfer` after {ADMIN_TRANSFER_DELAY}); `grantRole` cannot grant it. The constructor also
 *   gives the admin `MINTER_ROLE` and `PAUSER_ROLE`.
 * - `AGENT_ROLE`: fulfils requests only ({fulfillEvolution}, {fulfillEvolutions}). It can never move funds or
 *   tokens: fees go to the treasury ({withdrawFees}) and refunds to the requester ({withdrawRefund}). A fulfilment
 *   names the request's seed, and is rejected unless it is the seed of the request pending now.
 * - `REFRESHER_ROLE`: {refreshMetadata} only (re-renders of any live token, without a request or a fee), so that a
 *   key that may rewrite every token's metadata at any time can be held apart from the fulfilment key.
 * - `MINTER_ROLE`: {airdrop}.
 * - `PAUSER_ROLE`: {pause} and {unpause}. Pausing stops {mint}, {airdrop}, {requestEvolution}, {fuse} and
 *   {refreshMetadata}; fulfilments, cancellations, withdrawals and transfers keep working, so no fee is ever stuck
 *   behind a pause.
 *
 * Token ids start at 1 and are sequential. Unknown (never minted or burnt) tokens make the views and {tokenURI}
 * revert with {LivingCollectionUnknownToken}, never with OpenZeppelin's `ERC721NonexistentToken` (which only the
 * inherited ERC-721 entry points such as `ownerOf` and `approve` still use).
 *
 * Metadata: a token stores the sha256 digest of its metadata JSON, pinned on IPFS as one raw block. Before the first
 * digest, {tokenURI} is `baseURI ‖ tokenId` (genesis / reveal art); afterwards it is `ipfs://` ‖ {CIDv1-toCID}.
 * Every change emits ERC-4906 `MetadataUpdate` or `BatchMetadataUpdate` through {_metadataUpdated}.
 *
 * Fees: payments use the pull pattern. Evolution fees sit in escrow while their request is pending, move to the
 * withdrawable balance when the request is fulfilled, or are credited to the requester ({refundOf},
 * {withdrawRefund}) when it is cancelled after its timeout. Mint proceeds are withdrawable at once.
 * `address(this).balance == escrowedFees() + withdrawableFees() + owedRefunds()` (plus any ether forced in by
 * `selfdestruct`, which nothing can withdraw).
 *
 * ERC-7007 (verifiable AI-generated content): the agent records, off the fulfilment path, which inputs, metadata
 * digest and inference receipt make up a token's current version ({addAigcData}); {verify} checks such a triple
 * against the chain's state and that record. ERC-7572: {contractURI} points at the collection's metadata JSON.
 */
contract LivingCollection is
    ILivingCollection,
    IERC4906,
    IERC7007,
    IERC7572,
    ERC721,
    ERC2981,
    AccessControlDefaultAdminRules,
    Pausable,
    ReentrancyGuardTransient
{
    // ----------------------------------------------------------------------------------------------------
    // Constants
    // ----------------------------------------------------------------------------------------------------

    /// @dev May fulfil requests; nothing else.
    bytes32 public constant AGENT_ROLE = keccak256("AGENT_ROLE");
    /// @dev May {refreshMetadata}; nothing else.
    bytes32 public constant REFRESHER_ROLE = keccak256("REFRESHER_ROLE");
    /// @dev May {airdrop}.
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");
    /// @dev May {pause} and {unpause}.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    /// @dev Upper bound for {requestTimeout}, so that no configuration can lock a fee away for long.
    uint256 public constant MAX_REQUEST_TIMEOUT = 30 days;
    /// @dev Lower bound for {requestTimeout}: the agent gets at least this long (generation, review, inclusion)
    /// before a requester may cancel, so a request is never cancellable in the block that opened it.
    uint256 public constant MIN_REQUEST_TIMEOUT = 1 hours;
    /// @dev Upper bound for the ERC-2981 default royalty, in basis points (10 %).
    uint96 public constant MAX_ROYALTY_BPS = 1000;
    /// @dev Initial delay of a default admin transfer ({AccessControlDefaultAdminRules}).
    uint48 public constant ADMIN_TRANSFER_DELAY = 1 days;
    /// @dev {commitReveal} must name a block at least this many blocks ahead, whose hash nobody knows yet.
    uint256 public constant REVEAL_DELAY = 10;

    /// @dev Length of an ERC-7007 `prompt`: `abi.encode(tokenId, stage, seed, inputsSha256, weightsSha256)`.
    uint256 private constant _AIGC_PROMPT_LENGTH = 160;

    /// @dev Written into a burnt token's digest slot. Lets {refreshMetadata} reject burnt tokens from the slot it
    /// writes anyway (an SLOAD it pays for regardless) instead of a cold read of `_ownerOf`. No digest may equal it.
    bytes32 private constant _BURNT = bytes32(type(uint256).max);

    // ----------------------------------------------------------------------------------------------------
    // Storage
    // ----------------------------------------------------------------------------------------------------

    /// @dev An immutable record of the model weights (and manifest) that produced some metadata.
    struct ModelRecord {
        bytes32 weightsDigest;
        uint64 registeredAt;
        string manifestURI;
    }

    uint256 private immutable _maxSupply;
    uint256 private immutable _maxPerWallet;

    // Per-token storage, three slots (the gas of the hot paths is in which of them each path touches):
    //
    //   slot A  _digests[tokenId]     bytes32         metadata digest; 0 = none yet; all ones = burnt
    //   slot B  _tokenState[tokenId]  TokenState      nonce, stage, model, seed tag (see EvolutionState.sol)
    //   slot C  _requests[tokenId]    PendingRequest  the pending request; 0 = none (see EvolutionState.sol)
    //
    //   requestEvolution  writes B and C (+ the requester)  the holder pays for the bookkeeping (B carries the
    //                                                       request's seed tag at no extra write)
    //   fulfil            reads B and C, zeroes C, writes A zeroing C earns a refund; B is read for the seed tag
    //                                                       and written only if the active model changed since
    //                                                       the request opened
    //   refreshMetadata   reads and writes A                A's burnt marker spares a cold `_ownerOf` read
    //   cancelEvolution   zeroes C, rolls B back
    //
    // A request is pending iff C is not zero, and C's nonce names it; B's seed tag binds it to the seed its
    // EvolutionRequested event announced (a request id re-mined after a reorg has the same id but a new seed).
    // Burning reverts while C is not zero, so a pending request implies a live token and the fulfilment path never
    // reads `_ownerOf`.

    /// @dev Slot A: sha256 of the token's metadata JSON (0 = none yet, {_BURNT} = burnt).
    mapping(uint256 tokenId => bytes32 digest) private _digests;
    /// @dev Slot B: requests opened, stage, model and the latest request's seed tag. See {TokenState}.
    mapping(uint256 tokenId => TokenState state) private _tokenState;
    /// @dev Slot C: the pending request (zero when none). See {PendingRequest}.
    mapping(uint256 tokenId => PendingRequest request) private _requests;
    /// @dev Who opened the token's latest request (read only by {cancelEvolution}; overwritten, never cleared).
    mapping(uint256 tokenId => address requester) private _requesters;
    /// @dev Tokens minted by each wallet through {mint} (airdrops do not count).
    mapping(address minter => uint256 count) private _mintedBy;

    mapping(uint16 modelId => ModelRecord record) private _models;
    mapping(bytes32 weightsDigest => uint16 modelId) private _modelIds;

    uint256 private _totalMinted;
    uint256 private _totalBurnt;

    // One slot: fee accounting, updated once per batch.
    uint128 private _escrowed;
    uint128 private _withdrawable;

    /// @dev Refunds credited by {cancelEvolution} and not withdrawn yet, per account and in total.
    mapping(address account => uint256 amount) private _refunds;
    uint256 private _owedRefunds;

    // The genesis reveal: committed once ({commitReveal}), recorded once ({reveal}).
    bytes32 private _provenanceHash;
    uint64 private _revealBlock;
    bytes32 private _revealHash;

    // One slot: where fees go, and what an evolution costs.
    address private _treasury;
    uint96 private _evolutionFee;

    // One slot: the rest of the configuration.
    uint96 private _mintPrice;
    uint40 private _requestTimeout;
    uint16 private _activeModel;
    uint16 private _modelCount;

    string private _baseTokenURI;

    /// @dev ERC-7572: the collection's metadata URI ({contractURI}).
    string private _contractURI;

    /// @dev ERC-7007: per token, `keccak256(prompt ‖ aigcData ‖ proof)` of the version the agent last recorded
    /// with {addAigcData} (0 = none). Written only by {addAigcData}, never on the fulfilment path.
    mapping(uint256 tokenId => bytes32 record) private _aigcRecords;

    // ----------------------------------------------------------------------------------------------------
    // Construction
    // ----------------------------------------------------------------------------------------------------

    /**
     * @dev Sets the collection up. `admin` receives `DEFAULT_ADMIN_ROLE` (transferred in two steps, with an initial
     * delay of {ADMIN_TRANSFER_DELAY}), `MINTER_ROLE` and `PAUSER_ROLE`; `AGENT_ROLE` and `REFRESHER_ROLE` must be
     * granted separately. The default royalty of `royaltyBps` basis points goes to `treasury`.
     *
     * Requirements:
     *
     * - `admin` and `treasury` are not the zero address.
     * - `mintPrice` and `evolutionFee` fit in 96 bits; `requestTimeout` is within
     *   [{MIN_REQUEST_TIMEOUT}, {MAX_REQUEST_TIMEOUT}].
     * - `royaltyBps` is at most {MAX_ROYALTY_BPS}.
     *
     * Emits the configuration events ({TreasuryChanged}, {MintPriceChanged}, {EvolutionFeeChanged},
     * {RequestTimeoutChanged}, {BaseURIChanged}, {DefaultRoyaltyChanged}), so an indexer sees every setting from the
     * start.
     */
    constructor(
        string memory name_,
        string memory symbol_,
        address admin,
        address treasury_,
        uint256 maxSupply_,
        uint256 mintPrice_,
        uint256 maxPerWallet_,
        uint256 evolutionFee_,
        uint256 requestTimeout_,
        string memory baseURI_,
        uint96 royaltyBps
    ) ERC721(name_, symbol_) AccessControlDefaultAdminRules(ADMIN_TRANSFER_DELAY, _nonZero(admin)) {
        _maxSupply = maxSupply_;
        _maxPerWallet = maxPerWallet_;
        _grantRole(MINTER_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
        _setTreasury(treasury_);
        _setMintPrice(mintPrice_);
        _setEvolutionFee(evolutionFee_);
        _setRequestTimeout(requestTimeout_);
        _baseTokenURI = baseURI_;
        emit BaseURIChanged(baseURI_);
        _setRoyalty(treasury_, royaltyBps);
    }

    // ----------------------------------------------------------------------------------------------------
    // Minting
    // ----------------------------------------------------------------------------------------------------

    /**
     * @dev Mints `quantity` tokens to the caller for exactly `quantity * mintPrice()` wei, which becomes
     * withdrawable at once.
     *
     * Requirements:
     *
     * - The contract is not paused.
     * - `msg.value == quantity * mintPrice()`.
     * - `quantity` is not zero, fits under the supply cap and under the caller's per-wallet cap (if any).
     * - A contract caller implements {IERC721Receiver-onERC721Received}.
     *
     * Emits a {Transfer} event per token.
     */
    function mint(uint256 quantity) external payable virtual whenNotPaused nonReentrant {
        uint256 price = uint256(_mintPrice) * quantity;
        if (msg.value != price) revert LivingCollectionWrongPayment(msg.value, price);
        uint256 minted = _mintedBy[msg.sender];
        if (_maxPerWallet != 0 && quantity > _maxPerWallet - minted) {
            revert LivingCollectionWalletCapExceeded(msg.sender, quantity, _maxPerWallet - minted);
        }
        _mintedBy[msg.sender] = minted + quantity;
        _withdrawable += uint128(price);
        _mintBatch(msg.sender, quantity);
    }

    /**
     * @dev Mints `quantity` tokens to `to` for free. The per-wallet cap does not apply; the supply cap does.
     *
     * Requirements:
     *
     * - The contract is not paused.
     * - The caller has `MINTER_ROLE`.
     * - `quantity` is not zero and fits under the supply cap.
     * - If `to` is a contract, it implements {IERC721Receiver-onERC721Received}.
     *
     * Emits a {Transfer} event per token.
     */
    function airdrop(address to, uint256 quantity)
        external
        virtual
        whenNotPaused
        onlyRole(MINTER_ROLE)
        nonReentrant
    {
        _mintBatch(to, quantity);
    }

    /// @dev Mints ids `totalMinted() + 1 ..= totalMinted() + quantity` to `to`, counters first.
    function _mintBatch(address to, uint256 quantity) internal virtual {
        if (quantity == 0) revert LivingCollectionZeroQuantity();
        uint256 first = _totalMinted + 1;
        uint256 remaining = _maxSupply - _totalMinted;
        if (quantity > remaining) revert LivingCollectionSupplyExceeded(quantity, remaining);
        _totalMinted += quantity;
        for (uint256 i = 0; i < quantity; ++i) {
            _safeMint(to, first + i);
        }
    }

    // ----------------------------------------------------------------------------------------------------
    // Holder actions
    // ----------------------------------------------------------------------------------------------------

    /**
     * @inheritdoc ILivingCollection
     * @dev The request id is `tokenId << 32 | nonce`. The fee is escrowed until the request is fulfilled or
     * cancelled. The event's `stage` is the token's stage before evolving; its `seed` mixes `prevrandao`, the
     * previous block hash, the token and the request.
     *
     * Requirements:
     *
     * - The contract is not paused.
     * - A model is active (otherwise the request could only be cancelled).
     * - `tokenId` exists and the caller owns it or is approved for it.
     * - `msg.value == evolutionFee()`.
     * - `tokenId` has no pending request.
     *
     * Emits an {EvolutionRequested} event.
     */
    function requestEvolution(uint256 tokenId) external payable virtual whenNotPaused returns (uint256 requestId) {
        _checkHolder(tokenId);
        _checkFee();
        requestId = _openRequest(tokenId, msg.sender);
    }

    /**
     * @inheritdoc ILivingCollection
     * @dev Fusing costs the same {evolutionFee} as {requestEvolution}: the burnt token is the extra price. The
     * burnt token's stage and metadata are gone; what the fusion produces is up to the agent.
     *
     * Requirements:
     *
     * - The contract is not paused; a model is active.
     * - `keepId != burnId`, both exist and the caller owns or is approved for both.
     * - `msg.value == evolutionFee()`.
     * - Neither token has a pending request (a burnt token never has one).
     *
     * Emits a {Transfer} event (the burn), an {EvolutionRequested} event, then a {Fused} event.
     */
    function fuse(uint256 keepId, uint256 burnId) external payable virtual whenNotPaused returns (uint256 requestId) {
        if (keepId == burnId) revert LivingCollectionSelfFuse(keepId);
        _checkHolder(keepId);
        _checkHolder(burnId);
        _checkFee();
        _burn(burnId); // reverts if burnId has a pending request, see {_update}
        requestId = _openRequest(keepId, msg.sender);
        emit Fused(keepId, burnId, requestId);
    }

    /**
     * @inheritdoc ILivingCollection
     * @dev Works while paused. The fee is credited to the requester, whoever calls, and the requester collects it
     * with {withdrawRefund}: nothing is sent here, so a requester that rejects ETH cannot block the cancellation (and
     * with it burning or re-requesting the token). The timeout is the one in force when the request was opened.
     *
     * Requirements:
     *
     * - `requestId` is pending.
     * - The caller is its requester or the token's current owner.
     * - At least the request's timeout has passed since it was opened.
     *
     * Emits an {EvolutionCancelled} event.
     */
    function cancelEvolution(uint256 requestId) external virtual nonReentrant {
        uint256 tokenId = requestId >> 32;
        PendingRequest request = _requests[tokenId];
        if (!request.isRequest(requestId)) revert LivingCollectionRequestNotPending(requestId);
        address requester = _requesters[tokenId];
        if (msg.sender != requester && msg.sender != _ownerOf(tokenId)) {
            revert LivingCollectionNotRequester(requestId, msg.sender);
        }
        uint256 notBefore = request.cancellableAt();
        if (block.timestamp < notBefore) revert LivingCollectionRequestNotExpired(requestId, notBefore);

        uint256 fee = request.fee();
        _requests[tokenId] = PendingRequest.wrap(0);
        TokenState state = _tokenState[tokenId];
        // Roll back what opening the request predicted: the stage it would reach and the model credited for it.
        // The seed tag goes too: no request is pending.
        _tokenState[tokenId] = EvolutionState.toTokenState(
            state.nonce(), state.stage() - 1, state.previousModel(), state.previousModel(), bytes12(0)
        );
        _escrowed -= uint128(fee);
        _refunds[requester] += fee;
        _owedRefunds += fee;
        emit EvolutionCancelled(requestId, tokenId, requester, fee);
    }

    /**
     * @inheritdoc ILivingCollection
     * @dev Works while paused. `to` lets a requester that cannot receive ETH itself (a contract) collect elsewhere.
     *
     * Requirements:
     *
     * - The caller has a refund credited ({refundOf}); otherwise reverts with {LivingCollectionNoRefund}.
     * - `to` accepts the payment.
     *
     * Emits a {RefundWithdrawn} event.
     */
    function withdrawRefund(address to) external virtual nonReentrant {
        uint256 amount = _refunds[msg.sender];
        if (amount == 0) revert LivingCollectionNoRefund(msg.sender);
        if (to == address(0)) revert LivingCollectionZeroAddress();
        _refunds[msg.sender] = 0;
        _owedRefunds -= amount;
        emit RefundWithdrawn(msg.sender, to, amount);
        _sendValue(to, amount);
    }

    // ----------------------------------------------------------------------------------------------------
    // Agent actions
    // ----------------------------------------------------------------------------------------------------

    /**
     * @inheritdoc ILivingCollection
     * @dev Sets the token's digest, increments its stage, records the active model and moves the request's fee
     * from escrow to the withdrawable balance. Works while paused.
     *
     * Requirements:
     *
     * - The caller has `AGENT_ROLE`.
     * - A model is active.
     * - `requestId` is pending (so a request is fulfilled at most once).
     * - `seed` is the seed of that pending request, as its {EvolutionRequested} event announced it (its top 96
     *   bits are compared). A request re-mined after a reorg keeps its id but gets a new seed: metadata generated
     *   from the orphaned request's seed reverts with {LivingCollectionSeedMismatch}. {isPendingWith} checks it
     *   without sending.
     * - `metadataDigest` is a real digest (not zero).
     *
     * Emits an {Evolved} event, then a {MetadataUpdate} event.
     */
    function fulfillEvolution(uint256 requestId, bytes32 seed, bytes32 metadataDigest, bytes32 provenance)
        external
        virtual
        onlyRole(AGENT_ROLE)
    {
        uint256 fee = _fulfil(requestId, seed, metadataDigest, provenance, _requireActiveModel(), true);
        _settle(fee);
    }

    /**
     * @inheritdoc ILivingCollection
     * @dev Same as {fulfillEvolution} for each request in order; the fees are settled with one storage write.
     * A request that is not pending with its given seed (unknown, already fulfilled, cancelled, listed twice, or
     * re-mined after a reorg with another seed) is skipped with a {FulfilmentSkipped} event, and the rest go
     * through: a cancellation that lands just before the batch cannot revert it. The agent still drops such
     * requests before sending ({isPendingWith}), and treats a skipped one as not fulfilled.
     *
     * Requirements:
     *
     * - The caller has `AGENT_ROLE`; a model is active.
     * - The four arrays have the same length.
     * - Every digest is not zero (an agent error: it reverts the batch).
     *
     * Emits an {Evolved} and a {MetadataUpdate} event per fulfilled request, a {FulfilmentSkipped} event per
     * skipped one.
     */
    function fulfillEvolutions(
        uint256[] calldata requestIds,
        bytes32[] calldata seeds,
        bytes32[] calldata metadataDigests,
        bytes32[] calldata provenances
    ) external virtual onlyRole(AGENT_ROLE) {
        uint256 n = requestIds.length;
        if (seeds.length != n) revert LivingCollectionLengthMismatch(n, seeds.length);
        if (metadataDigests.length != n) revert LivingCollectionLengthMismatch(n, metadataDigests.length);
        if (provenances.length != n) revert LivingCollectionLengthMismatch(n, provenances.length);
        uint16 modelId = _requireActiveModel();
        uint256 fees = 0;
        for (uint256 i = 0; i < n; ++i) {
            fees += _fulfil(requestIds[i], seeds[i], metadataDigests[i], provenances[i], modelId, false);
        }
        _settle(fees);
    }

    /**
     * @inheritdoc ILivingCollection
     * @dev For scheduled and oracle-driven re-renders of a token at its current stage. Needs no request and no
     * active model, and leaves stage and {modelOf} unchanged (`modelOf` names the model of the latest evolution;
     * `provenance` commits to the refresh's inputs). A token with a pending request may be refreshed: the request
     * stays pending, and its later fulfilment overwrites the refreshed digest.
     *
     * Emits `BatchMetadataUpdate(from, to)` for every run of consecutive ascending ids (`MetadataUpdate` for a run
     * of one), so refreshing ids 1..100 in order emits a single event.
     *
     * Requirements:
     *
     * - The caller has `REFRESHER_ROLE`; the contract is not paused (a pause freezes every token's metadata but
     *   for fulfilments of requests that holders paid for).
     * - `tokenIds` and `digests` have the same length.
     * - Every token exists (minted and not burnt); every digest is not zero.
     *
     * Emits a {MetadataRefreshed} event after the ERC-4906 events.
     */
    function refreshMetadata(uint256[] calldata tokenIds, bytes32[] calldata digests, bytes32 provenance)
        external
        virtual
        whenNotPaused
        onlyRole(REFRESHER_ROLE)
    {
        uint256 n = tokenIds.length;
        if (digests.length != n) revert LivingCollectionLengthMismatch(n, digests.length);
        uint256 minted = _totalMinted;
        uint256 runStart = 0;
        uint256 previous = 0;
        for (uint256 i = 0; i < n; ++i) {
            uint256 tokenId = tokenIds[i];
            // tokenId - 1 wraps for 0, so one comparison rejects 0 and never-minted ids.
            unchecked {
                if (tokenId - 1 >= minted || _digests[tokenId] == _BURNT) {
                    revert LivingCollectionUnknownToken(tokenId);
                }
            }
            _writeDigest(tokenId, digests[i]);
            if (i == 0) {
                runStart = tokenId;
            } else if (tokenId != previous + 1) {
                _metadataUpdated(runStart, previous);
                runStart = tokenId;
            }
            previous = tokenId;
        }
        if (n != 0) _metadataUpdated(runStart, previous);
        emit MetadataRefreshed(n, provenance);
    }

    // ----------------------------------------------------------------------------------------------------
    // ERC-7007: verifiable AI-generated content
    // ----------------------------------------------------------------------------------------------------
    //
    // A token version's AIGC triple, all fixed-length:
    //
    //   prompt    160 bytes  abi.encode(uint256 tokenId, uint256 stage, bytes32 seed, bytes32 inputsSha256,
    //                        bytes32 weightsSha256): the token and stage, the request's on-chain seed, the sha256
    //                        of the input snapshot's canonical JSON, and the image model's weights sha256 (the
    //                        receipt's `seed.onchain_seed`, `input_snapshot_sha256`, `image.model.weights_sha256`)
    //   aigcData   32 bytes  the sha256 of the metadata JSON: the digest `tokenURI` is built from
    //   proof      32 bytes  the sha256 of the inference receipt's canonical JSON: the fulfilment's `provenance`
    //
    // On-chain, {verify} checks what the chain holds: the token is live, `aigcData` is its current digest, `stage`
    // its current stage, `weightsSha256` the registered weights of {modelOf}, and the agent recorded exactly this
    // triple for it ({addAigcData}). Off-chain, `chrysalis verify` completes it: the metadata and receipt fetched
    // by CID hash to `aigcData` and `proof`, the seed is the one the request's {EvolutionRequested} announced, and
    // replaying the model on the inputs gives the same pixels and lore.

    /**
     * @inheritdoc IERC7007
     * @dev Records the triple for the token's current version and emits {AigcData}. Kept off the fulfilment path
     * (the ERC lets AIGC data be added separately from minting): recording costs the agent one storage write and
     * the event when it chooses to, and {fulfillEvolutions} stays within its gas budget. A later evolution or
     * refresh makes the record stale ({verify} is false until the agent records the new version).
     *
     * Requirements:
     *
     * - The caller has `AGENT_ROLE` (the key whose fulfilment already announced this provenance in {Evolved}).
     * - `prompt` is 160 bytes, `aigcData` and `proof` 32 bytes each; `proof` is not zero.
     * - `prompt` names `tokenId`, which exists; `aigcData` is its current metadata digest, the prompt's stage its
     *   current stage and its weights the registered weights of its model ({modelOf}).
     *
     * Emits an {AigcData} event.
     */
    function addAigcData(uint256 tokenId, bytes calldata prompt, bytes calldata aigcData, bytes calldata proof)
        external
        virtual
        onlyRole(AGENT_ROLE)
    {
        if (prompt.length == _AIGC_PROMPT_LENGTH && uint256(bytes32(prompt[:32])) != tokenId) {
            revert LivingCollectionAigcTokenMismatch(tokenId, uint256(bytes32(prompt[:32])));
        }
        _checkAigc(prompt, aigcData, proof, true);
        _aigcRecords[tokenId] = keccak256(bytes.concat(prompt, aigcData, proof));
        emit AigcData(tokenId, prompt, aigcData, proof);
    }

    /**
     * @inheritdoc IERC7007
     * @dev True iff the triple is well formed, names a live token whose current version it describes (digest,
     * stage, registered model weights), and the agent recorded exactly this triple for that version with
     * {addAigcData}. Never reverts. A past version's triple is false (its {AigcData} event stays in the logs).
     * The model replay that shows the inputs really give this output is off-chain (`chrysalis verify`).
     */
    function verify(bytes calldata prompt, bytes calldata aigcData, bytes calldata proof)
        external
        view
        virtual
        returns (bool success)
    {
        (uint256 tokenId, bool current) = _checkAigc(prompt, aigcData, proof, false);
        return current && _aigcRecords[tokenId] == keccak256(bytes.concat(prompt, aigcData, proof));
    }

    // ----------------------------------------------------------------------------------------------------
    // Fees
    // ----------------------------------------------------------------------------------------------------

    /**
     * @dev Sends every withdrawable wei (fulfilled evolution fees and mint proceeds) to the treasury. Anyone may
     * call it; the money can only go to {treasury}. Works while paused.
     *
     * Requirements:
     *
     * - The treasury accepts the payment.
     *
     * Emits a {FeesWithdrawn} event.
     */
    function withdrawFees() external virtual nonReentrant {
        uint256 amount = _withdrawable;
        address to = _treasury;
        _withdrawable = 0;
        emit FeesWithdrawn(to, amount);
        _sendValue(to, amount);
    }

    // ----------------------------------------------------------------------------------------------------
    // Model registry (admin)
    // ----------------------------------------------------------------------------------------------------

    /**
     * @dev Registers an immutable model record and returns its id (ids start at 1). Does not activate it.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`.
     * - `weightsDigest` is not zero and not registered yet.
     *
     * Emits a {ModelRegistered} event.
     */
    function registerModel(bytes32 weightsDigest, string calldata manifestURI)
        external
        virtual
        onlyRole(DEFAULT_ADMIN_ROLE)
        returns (uint16 modelId)
    {
        if (weightsDigest == 0) revert LivingCollectionInvalidDigest(weightsDigest);
        if (_modelIds[weightsDigest] != 0) revert LivingCollectionModelExists(weightsDigest);
        modelId = ++_modelCount;
        _modelIds[weightsDigest] = modelId;
        _models[modelId] = ModelRecord(weightsDigest, uint64(block.timestamp), manifestURI);
        emit ModelRegistered(modelId, weightsDigest, manifestURI);
    }

    /**
     * @dev Selects the model that later fulfilments record in {modelOf}.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`.
     * - `modelId` is registered (not 0).
     *
     * Emits an {ActiveModelChanged} event.
     */
    function setActiveModel(uint16 modelId) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        if (modelId == 0 || modelId > _modelCount) revert LivingCollectionUnknownModel(modelId);
        uint16 previous = _activeModel;
        _activeModel = modelId;
        emit ActiveModelChanged(previous, modelId);
    }

    // ----------------------------------------------------------------------------------------------------
    // Configuration (admin)
    // ----------------------------------------------------------------------------------------------------

    /**
     * @dev Sets the public mint price (wei per token).
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`; `price` fits in 96 bits.
     *
     * Emits a {MintPriceChanged} event.
     */
    function setMintPrice(uint256 price) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        _setMintPrice(price);
    }

    /**
     * @dev Sets the evolution fee for new requests; pending requests keep what they escrowed.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`; `fee` fits in 96 bits.
     *
     * Emits an {EvolutionFeeChanged} event.
     */
    function setEvolutionFee(uint256 fee) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        _setEvolutionFee(fee);
    }

    /**
     * @dev Sets the timeout (seconds) after which new requests may be cancelled; pending requests keep theirs.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`; `timeout` is within [{MIN_REQUEST_TIMEOUT}, {MAX_REQUEST_TIMEOUT}].
     *
     * Emits a {RequestTimeoutChanged} event.
     */
    function setRequestTimeout(uint256 timeout) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        _setRequestTimeout(timeout);
    }

    /**
     * @dev Sets the address that {withdrawFees} pays. Does not change the royalty receiver.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`; `treasury_` is not the zero address.
     *
     * Emits a {TreasuryChanged} event.
     */
    function setTreasury(address treasury_) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        _setTreasury(treasury_);
    }

    /**
     * @dev Sets the base URI of tokens that have no digest yet.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`.
     *
     * Emits a {BaseURIChanged} event, then `BatchMetadataUpdate(1, totalMinted())` once tokens exist.
     */
    function setBaseURI(string calldata baseURI_) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        _baseTokenURI = baseURI_;
        emit BaseURIChanged(baseURI_);
        uint256 minted = _totalMinted;
        if (minted != 0) _metadataUpdated(1, minted);
    }

    /**
     * @dev Sets the ERC-2981 default royalty.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`; `receiver` is not zero; `feeNumerator` is at most {MAX_ROYALTY_BPS}.
     *
     * Emits a {DefaultRoyaltyChanged} event.
     */
    function setDefaultRoyalty(address receiver, uint96 feeNumerator) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        _setRoyalty(receiver, feeNumerator);
    }

    /**
     * @dev Sets the ERC-7572 contract-level metadata URI ({contractURI}): `ipfs://<cid>` of the collection's
     * metadata JSON (`chrysalis deploy` pins it), an `https://` URL, or a `data:application/json` URI.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`.
     *
     * Emits a {ContractURIUpdated} event.
     */
    function setContractURI(string calldata uri) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        _contractURI = uri;
        emit ContractURIUpdated();
    }

    // ----------------------------------------------------------------------------------------------------
    // Genesis reveal (commit on-chain, reveal from the committed block's hash)
    // ----------------------------------------------------------------------------------------------------

    /**
     * @dev Commits, once, to the genesis reveal: `provenanceHash` (sha256 over the shuffled collection's items)
     * and `revealBlock`, a future block whose hash picks the offset (`uint256(revealHash) mod N`; token `t` shows
     * item `(t - 1 + offset) mod N`). Committing before the block exists, on-chain and once, leaves the operator
     * no choice among blocks or provenance hashes.
     *
     * Requirements:
     *
     * - The caller has `DEFAULT_ADMIN_ROLE`; no reveal was committed before.
     * - `revealBlock >= block.number + REVEAL_DELAY`.
     *
     * Emits a {RevealCommitted} event.
     */
    function commitReveal(bytes32 provenanceHash, uint64 revealBlock) external virtual onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_revealBlock != 0) revert LivingCollectionRevealCommitted();
        uint256 earliest = block.number + REVEAL_DELAY;
        if (revealBlock < earliest) revert LivingCollectionRevealTooSoon(revealBlock, earliest);
        _provenanceHash = provenanceHash;
        _revealBlock = revealBlock;
        emit RevealCommitted(provenanceHash, revealBlock);
    }

    /**
     * @dev Records the hash of the committed reveal block. Anyone may call it once the block is mined. The EVM
     * only knows the last 256 block hashes: when the reveal block is older, nothing is revealed and the reveal moves
     * to block `block.number + REVEAL_DELAY` ({RevealCommitted} again), whose hash nobody knows yet.
     *
     * Requirements:
     *
     * - A reveal is committed and not recorded yet; its block is mined (`block.number > revealBlock`).
     *
     * Emits a {Revealed} event (or {RevealCommitted} when the block was missed).
     */
    function reveal() external virtual {
        uint64 revealBlock = _revealBlock;
        if (revealBlock == 0 || _revealHash != 0) revert LivingCollectionNothingToReveal();
        if (block.number <= revealBlock) revert LivingCollectionRevealNotReady(revealBlock);
        bytes32 hash = blockhash(revealBlock);
        if (hash == 0) {
            revealBlock = uint64(block.number + REVEAL_DELAY);
            _revealBlock = revealBlock;
            emit RevealCommitted(_provenanceHash, revealBlock);
            return;
        }
        _revealHash = hash;
        emit Revealed(revealBlock, hash);
    }

    /// @dev The committed provenance hash, reveal block and (once {reveal} recorded it) that block's hash; all zero
    /// before {commitReveal}.
    function revealCommitment()
        external
        view
        virtual
        returns (bytes32 provenanceHash, uint64 revealBlock, bytes32 revealHash)
    {
        return (_provenanceHash, _revealBlock, _revealHash);
    }

    /**
     * @dev The genesis offset for a collection of `n` items: `uint256(revealHash) mod n`.
     *
     * Requirements:
     *
     * - The reveal is recorded; otherwise reverts with {LivingCollectionNotRevealed}. `n` is not zero.
     */
    function revealOffset(uint256 n) external view virtual returns (uint256) {
        bytes32 hash = _revealHash;
        if (hash == 0) revert LivingCollectionNotRevealed();
        return uint256(hash) % n;
    }

    /**
     * @dev Stops {mint}, {airdrop}, {requestEvolution}, {fuse} and {refreshMetadata}.
     *
     * Requirements:
     *
     * - The caller has `PAUSER_ROLE`; the contract is not paused.
     *
     * Emits a {Paused} event.
     */
    function pause() external virtual onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /**
     * @dev Resumes {mint}, {airdrop}, {requestEvolution}, {fuse} and {refreshMetadata}.
     *
     * Requirements:
     *
     * - The caller has `PAUSER_ROLE`; the contract is paused.
     *
     * Emits an {Unpaused} event.
     */
    function unpause() external virtual onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    // ----------------------------------------------------------------------------------------------------
    // Views
    // ----------------------------------------------------------------------------------------------------

    /**
     * @dev `ipfs://<CIDv1>` of the token's metadata block once it has a digest; before that `baseURI ‖ tokenId`
     * (empty when no base URI is set).
     *
     * Requirements:
     *
     * - `tokenId` exists; otherwise reverts with {LivingCollectionUnknownToken}.
     */
    function tokenURI(uint256 tokenId) public view virtual override returns (string memory) {
        _requireKnown(tokenId);
        bytes32 digest = _digests[tokenId];
        if (digest == 0) return super.tokenURI(tokenId);
        return CIDv1.toIpfsURI(digest);
    }

    /// @inheritdoc ILivingCollection
    function stageOf(uint256 tokenId) external view virtual returns (uint32) {
        _requireKnown(tokenId);
        uint32 stage = _tokenState[tokenId].stage();
        return _requests[tokenId].exists() ? stage - 1 : stage;
    }

    /// @inheritdoc ILivingCollection
    function metadataDigestOf(uint256 tokenId) external view virtual returns (bytes32) {
        _requireKnown(tokenId);
        return _digests[tokenId];
    }

    /**
     * @inheritdoc ILivingCollection
     * @dev Set by fulfilments only; {refreshMetadata} re-renders the current stage and leaves it unchanged.
     */
    function modelOf(uint256 tokenId) external view virtual returns (uint16) {
        _requireKnown(tokenId);
        TokenState state = _tokenState[tokenId];
        return _requests[tokenId].exists() ? state.previousModel() : state.model();
    }

    /// @inheritdoc ILivingCollection
    function pendingRequestOf(uint256 tokenId)
        external
        view
        virtual
        returns (uint256 requestId, address requester, uint256 fee, uint256 requestedAt)
    {
        PendingRequest request = _requests[tokenId];
        if (request.exists()) {
            requestId = tokenId << 32 | request.nonce();
            requester = _requesters[tokenId];
            fee = request.fee();
            requestedAt = request.requestedAt();
        }
    }

    /// @inheritdoc ILivingCollection
    function isPending(uint256 requestId) external view virtual returns (bool) {
        return _requests[requestId >> 32].isRequest(requestId);
    }

    /**
     * @inheritdoc ILivingCollection
     * @dev Exactly when {fulfillEvolution} would accept `requestId` with `seed` (role, model and digest aside):
     * false when the request is not pending, and false when it is pending with another seed (it was re-mined
     * after a reorg; its current seed is in the canonical {EvolutionRequested} event).
     */
    function isPendingWith(uint256 requestId, bytes32 seed) external view virtual returns (bool) {
        uint256 tokenId = requestId >> 32;
        return _requests[tokenId].isRequest(requestId) && _tokenState[tokenId].matchesSeed(seed);
    }

    /// @dev Timestamp from which pending request `requestId` may be cancelled; reverts if it is not pending.
    function cancellableAt(uint256 requestId) external view virtual returns (uint256) {
        PendingRequest request = _requests[requestId >> 32];
        if (!request.isRequest(requestId)) revert LivingCollectionRequestNotPending(requestId);
        return request.cancellableAt();
    }

    /// @dev Requests ever opened for `tokenId` (the nonce of its latest request id).
    function requestCount(uint256 tokenId) external view virtual returns (uint256) {
        return _tokenState[tokenId].nonce();
    }

    /// @dev Supply cap.
    function maxSupply() external view virtual returns (uint256) {
        return _maxSupply;
    }

    /// @dev Per-wallet cap on {mint} (0 = no cap).
    function maxPerWallet() external view virtual returns (uint256) {
        return _maxPerWallet;
    }

    /// @dev Tokens `wallet` has minted through {mint}.
    function mintedBy(address wallet) external view virtual returns (uint256) {
        return _mintedBy[wallet];
    }

    /// @dev True when `tokenId` has been minted and not burnt (where `ownerOf` would revert).
    function exists(uint256 tokenId) external view virtual returns (bool) {
        return _ownerOf(tokenId) != address(0);
    }

    /// @dev Tokens ever minted (the highest id so far).
    function totalMinted() external view virtual returns (uint256) {
        return _totalMinted;
    }

    /// @dev Tokens in existence: minted minus burnt.
    function totalSupply() external view virtual returns (uint256) {
        return _totalMinted - _totalBurnt;
    }

    /// @dev Wei per token for {mint}.
    function mintPrice() external view virtual returns (uint256) {
        return _mintPrice;
    }

    /// @dev Wei escrowed by {requestEvolution} and {fuse}.
    function evolutionFee() external view virtual returns (uint256) {
        return _evolutionFee;
    }

    /// @dev Seconds after which new requests may be cancelled.
    function requestTimeout() external view virtual returns (uint256) {
        return _requestTimeout;
    }

    /// @dev Fees held for pending requests.
    function escrowedFees() external view virtual returns (uint256) {
        return _escrowed;
    }

    /// @dev Fees and mint proceeds that {withdrawFees} would send now.
    function withdrawableFees() external view virtual returns (uint256) {
        return _withdrawable;
    }

    /// @inheritdoc ILivingCollection
    function refundOf(address account) external view virtual returns (uint256) {
        return _refunds[account];
    }

    /// @dev Refunds credited by cancellations and not withdrawn yet, all accounts together.
    function owedRefunds() external view virtual returns (uint256) {
        return _owedRefunds;
    }

    /// @dev Where {withdrawFees} sends the money.
    function treasury() external view virtual returns (address) {
        return _treasury;
    }

    /// @dev Base URI of tokens that have no digest yet.
    function baseURI() external view virtual returns (string memory) {
        return _baseTokenURI;
    }

    /// @dev The model that fulfilments record (0 = none; fulfilments revert).
    function activeModel() external view virtual returns (uint16) {
        return _activeModel;
    }

    /// @dev Models registered so far (ids are 1..modelCount()).
    function modelCount() external view virtual returns (uint16) {
        return _modelCount;
    }

    /**
     * @dev The immutable record of model `modelId`.
     *
     * Requirements:
     *
     * - `modelId` is registered; otherwise reverts with {LivingCollectionUnknownModel}.
     */
    function modelRecord(uint16 modelId)
        external
        view
        virtual
        returns (bytes32 weightsDigest, string memory manifestURI, uint64 registeredAt)
    {
        if (modelId == 0 || modelId > _modelCount) revert LivingCollectionUnknownModel(modelId);
        ModelRecord storage record = _models[modelId];
        return (record.weightsDigest, record.manifestURI, record.registeredAt);
    }

    /// @dev Id of the model registered with `weightsDigest` (0 = none).
    function modelIdOf(bytes32 weightsDigest) external view virtual returns (uint16) {
        return _modelIds[weightsDigest];
    }

    /// @inheritdoc IERC7572
    function contractURI() external view virtual returns (string memory) {
        return _contractURI;
    }

    /**
     * @dev ERC-165: also ERC-4906 (`0x49064906`), ERC-7007 (`0x702c55a6`), ERC-7572 (`0xe8a3d485`, the selector
     * of `contractURI()`: the ERC asks for no ERC-165 id, but this is the id its interface has) and
     * {ILivingCollection}.
     */
    function supportsInterface(bytes4 interfaceId)
        public
        view
        virtual
        override(IERC165, ERC721, ERC2981, AccessControlDefaultAdminRules)
        returns (bool)
    {
        return interfaceId == bytes4(0x49064906) || interfaceId == type(IERC7007).interfaceId
            || interfaceId == type(IERC7572).interfaceId || interfaceId == type(ILivingCollection).interfaceId
            || super.supportsInterface(interfaceId);
    }

    // ----------------------------------------------------------------------------------------------------
    // Internal
    // ----------------------------------------------------------------------------------------------------

    /**
     * @dev Fulfils one request and returns its fee (the caller settles fees). Reads the token's slots B (the
     * seed tag) and C, zeroes C and writes A (B too if the active model changed since the request opened); no
     * `_ownerOf` read, since a pending request implies a live token. A request that is not pending with `seed`
     * reverts when `strict`, and is otherwise skipped (a {FulfilmentSkipped} event, fee 0, nothing written).
     *
     * Requirements:
     *
     * - `digest` is neither zero nor the burnt marker.
     * - When `strict`: `requestId` is pending and `seed` matches its seed tag.
     *
     * Emits an {Evolved} event, then a {MetadataUpdate} event (or a {FulfilmentSkipped} event).
     */
    function _fulfil(
        uint256 requestId,
        bytes32 seed,
        bytes32 digest,
        bytes32 provenance,
        uint16 modelId,
        bool strict
    ) internal virtual returns (uint256 fee) {
        uint256 tokenId = requestId >> 32;
        PendingRequest request = _requests[tokenId];
        TokenState state = _tokenState[tokenId];
        if (!request.isRequest(requestId) || !state.matchesSeed(seed)) {
            if (strict) {
                if (!request.isRequest(requestId)) revert LivingCollectionRequestNotPending(requestId);
                revert LivingCollectionSeedMismatch(requestId, seed);
            }
            emit FulfilmentSkipped(requestId);
            return 0;
        }
        _requests[tokenId] = PendingRequest.wrap(0);
        if (request.model() != modelId) _tokenState[tokenId] = state.withModel(modelId);
        _writeDigest(tokenId, digest);
        emit Evolved(tokenId, requestId, request.stage(), digest, provenance);
        _metadataUpdated(tokenId, tokenId);
        return request.fee();
    }

    /**
     * @dev Checks an ERC-7007 triple against the current version of the token its prompt names (see the ERC-7007
     * section) and returns that token. A check that fails reverts when `strict`, and otherwise returns
     * `current == false`. The agent's record of the triple is the caller's to compare.
     *
     * Requirements (when `strict`):
     *
     * - `prompt` is 160 bytes, `aigcData` and `proof` 32 bytes ({LivingCollectionAigcMalformed}).
     * - The named token exists ({LivingCollectionUnknownToken}).
     * - `aigcData` is its metadata digest ({LivingCollectionAigcNotCurrent}), the prompt's stage its stage
     *   ({LivingCollectionAigcStageMismatch}) and the prompt's weights those registered for its model
     *   ({LivingCollectionAigcModelMismatch}).
     * - `proof` is not zero ({LivingCollectionInvalidDigest}).
     */
    function _checkAigc(bytes calldata prompt, bytes calldata aigcData, bytes calldata proof, bool strict)
        internal
        view
        virtual
        returns (uint256 tokenId, bool current)
    {
        if (prompt.length != _AIGC_PROMPT_LENGTH || aigcData.length != 32 || proof.length != 32) {
            if (strict) revert LivingCollectionAigcMalformed(prompt.length, aigcData.length, proof.length);
            return (0, false);
        }
        tokenId = uint256(bytes32(prompt[:32]));
        if (_ownerOf(tokenId) == address(0)) {
            if (strict) revert LivingCollectionUnknownToken(tokenId);
            return (tokenId, false);
        }
        bytes32 digest = _digests[tokenId];
        if (digest == 0 || bytes32(aigcData) != digest) {
            if (strict) revert LivingCollectionAigcNotCurrent(tokenId, bytes32(aigcData), digest);
            return (tokenId, false);
        }
        // The token's stage and model as {stageOf} and {modelOf} report them.
        TokenState state = _tokenState[tokenId];
        bool pending = _requests[tokenId].exists();
        uint256 stage = pending ? state.stage() - 1 : state.stage();
        if (uint256(bytes32(prompt[32:64])) != stage) {
            if (strict) revert LivingCollectionAigcStageMismatch(tokenId, uint256(bytes32(prompt[32:64])), stage);
            return (tokenId, false);
        }
        bytes32 registered = _models[pending ? state.previousModel() : state.model()].weightsDigest;
        if (registered == 0 || bytes32(prompt[128:160]) != registered) {
            if (strict) revert LivingCollectionAigcModelMismatch(tokenId, bytes32(prompt[128:160]), registered);
            return (tokenId, false);
        }
        if (bytes32(proof) == 0) {
            if (strict) revert LivingCollectionInvalidDigest(0);
            return (tokenId, false);
        }
        return (tokenId, true);
    }

    /// @dev Moves `fees` from escrow to the withdrawable balance (one slot, one write).
    function _settle(uint256 fees) private {
        if (fees != 0) {
            _escrowed -= uint128(fees);
            _withdrawable += uint128(fees);
        }
    }

    /**
     * @dev Opens a request for `tokenId` paid with `msg.value` (already checked) and returns its id. The seed's
     * tag goes into the token's {TokenState} (written here anyway), binding the request's fulfilment to it.
     *
     * Emits an {EvolutionRequested} event.
     */
    function _openRequest(uint256 tokenId, address requester) internal virtual returns (uint256 requestId) {
        PendingRequest pending = _requests[tokenId];
        if (pending.exists()) revert LivingCollectionRequestPending(tokenId, tokenId << 32 | pending.nonce());
        TokenState state = _tokenState[tokenId];
        uint32 nonce = state.nonce() + 1; // checked: a token takes at most 2**32 - 1 requests
        uint32 stage = state.stage(); // the current stage: no request is pending
        uint16 model = _requireActiveModel();
        requestId = tokenId << 32 | nonce;
        bytes32 seed = keccak256(abi.encode(block.prevrandao, blockhash(block.number - 1), tokenId, requestId));
        _tokenState[tokenId] =
            EvolutionState.toTokenState(nonce, stage + 1, model, state.model(), EvolutionState.toSeedTag(seed));
        _requests[tokenId] = EvolutionState.toPendingRequest(
            nonce, uint40(block.timestamp), _requestTimeout, uint96(msg.value), model, stage + 1
        );
        _requesters[tokenId] = requester;
        _escrowed += uint128(msg.value);
        emit EvolutionRequested(requestId, tokenId, requester, stage, seed);
    }

    /**
     * @dev Stores a token's metadata digest. Every metadata write goes through here; the caller then announces it
     * with {_metadataUpdated}.
     *
     * Requirements:
     *
     * - `digest` is neither zero ("no metadata") nor the burnt marker.
     */
    function _writeDigest(uint256 tokenId, bytes32 digest) internal virtual {
        if (digest == 0 || digest == _BURNT) revert LivingCollectionInvalidDigest(digest);
        _digests[tokenId] = digest;
    }

    /**
     * @dev Announces changed metadata for ids `fromId..=toId`: ERC-4906 `MetadataUpdate` for one token,
     * `BatchMetadataUpdate` for a range. Every metadata change in this contract ends here.
     */
    function _metadataUpdated(uint256 fromId, uint256 toId) internal virtual {
        if (fromId == toId) {
            emit MetadataUpdate(fromId);
        } else {
            emit BatchMetadataUpdate(fromId, toId);
        }
    }

    /**
     * @dev Burning keeps the invariant that a burnt token never has a pending request, and marks the token's
     * digest slot so that {refreshMetadata} rejects it without reading `_ownerOf`.
     *
     * Requirements:
     *
     * - A burnt token has no pending request.
     */
    function _update(address to, uint256 tokenId, address auth) internal virtual override returns (address from) {
        from = super._update(to, tokenId, auth);
        if (to == address(0)) {
            PendingRequest pending = _requests[tokenId];
            if (pending.exists()) revert LivingCollectionRequestPending(tokenId, tokenId << 32 | pending.nonce());
            _digests[tokenId] = _BURNT;
            ++_totalBurnt;
        }
    }

    /// @dev Base of {tokenURI} before a token's first digest.
    function _baseURI() internal view virtual override returns (string memory) {
        return _baseTokenURI;
    }

    function _requireActiveModel() private view returns (uint16 modelId) {
        modelId = _activeModel;
        if (modelId == 0) revert LivingCollectionNoActiveModel();
    }

    /// @dev Reverts with {LivingCollectionUnknownToken} unless `tokenId` exists and the caller may operate it.
    function _checkHolder(uint256 tokenId) private view {
        address owner = _requireKnown(tokenId);
        if (!_isAuthorized(owner, msg.sender, tokenId)) revert LivingCollectionNotHolder(tokenId, msg.sender);
    }

    function _checkFee() private view {
        uint256 fee = _evolutionFee;
        if (msg.value != fee) revert LivingCollectionWrongPayment(msg.value, fee);
    }

    function _requireKnown(uint256 tokenId) private view returns (address owner) {
        owner = _ownerOf(tokenId);
        if (owner == address(0)) revert LivingCollectionUnknownToken(tokenId);
    }

    function _sendValue(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert LivingCollectionTransferFailed(to, amount);
    }

    function _setRoyalty(address receiver, uint96 feeNumerator) private {
        if (feeNumerator > MAX_ROYALTY_BPS) revert LivingCollectionRoyaltyTooHigh(feeNumerator, MAX_ROYALTY_BPS);
        _setDefaultRoyalty(receiver, feeNumerator);
        emit DefaultRoyaltyChanged(receiver, feeNumerator);
    }

    /// @dev `account`, checked not to be zero (for the base constructor's argument, so the error is ours).
    function _nonZero(address account) private pure returns (address) {
        if (account == address(0)) revert LivingCollectionZeroAddress();
        return account;
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert LivingCollectionZeroAddress();
        address previous = _treasury;
        _treasury = treasury_;
        emit TreasuryChanged(previous, treasury_);
    }

    function _setMintPrice(uint256 price) private {
        if (price > type(uint96).max) revert LivingCollectionInvalidFee(price);
        uint256 previous = _mintPrice;
        _mintPrice = uint96(price);
        emit MintPriceChanged(previous, price);
    }

    function _setEvolutionFee(uint256 fee) private {
        if (fee > type(uint96).max) revert LivingCollectionInvalidFee(fee);
        uint256 previous = _evolutionFee;
        _evolutionFee = uint96(fee);
        emit EvolutionFeeChanged(previous, fee);
    }

    function _setRequestTimeout(uint256 timeout) private {
        if (timeout < MIN_REQUEST_TIMEOUT || timeout > MAX_REQUEST_TIMEOUT) revert LivingCollectionInvalidTimeout(timeout);
        uint256 previous = _requestTimeout;
        _requestTimeout = uint40(timeout);
        emit RequestTimeoutChanged(previous, timeout);
    }
}
