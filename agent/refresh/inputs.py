"""A refresh's inputs: every token read at ONE block, the rules re-run, and the verdict per token.

For each token at the refresh's block ``B`` (all through ``eth_call`` pinned to ``B`` by hash, EIP-1898):

1. the token's owner, stage, metadata digest and pending request (one JSON-RPC batch per chunk of tokens);
2. a token with a pending request at ``B`` is **deferred** (the holder's evolution goes first), a missing one is
   **skipped**, one without metadata yet is skipped unless ``refresh.first_render`` is on;
3. its current metadata is read from the embedded IPFS repo (its traits are the ``previous`` of the rules, its
   image the init image of the re-render);
4. the snapshot: block-level oracles (the price feed) are read and screened by the guard ONCE per refresh and
   shared; per-token oracles (the holder's wallet) are screened per token (:mod:`oracles.guard`);
5. a token whose rules read a reading the guard skipped (stale, missing, absurd) is **oracle_skipped**: it keeps
   its metadata rather than take traits from a rule's default;
6. the rules (:mod:`agent.rules`) at the token's current stage: no trait changed -> **unchanged**; else
   **changed**, with its :class:`~agent.domain.Inputs` (the type the evolution pipeline's inputs stage makes,
   with the previous version read by the same :func:`~agent.pipeline.inputs.read_previous`), so the pipeline's
   generate and publish stages render it (the previous image as the image-to-image start, the previous metadata
   as parent).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_typing import ChecksumAddress
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3

from agent.domain import Inputs, InputSnapshot, OracleReading, PreviousVersion, RefreshMark, TokenFacts
from agent.ipfs.fetch import RemoteBlocks
from agent.ipfs.repo import IpfsRepo
from agent.pipeline.collection import CollectionReader
from agent.pipeline.errors import PreviousMetadataMissingError
from agent.pipeline.inputs import read_previous
from agent.pipeline.traits import evaluate_traits
from agent.refresh.models import ItemState
from agent.rules import RuleEngine
from agent.rules.errors import RuleEvaluationError
from agent.submit.errors import CallRevertedError
from agent.submit.rpc import ChainRpc
from oracles.base import Oracle, ReadContext
from oracles.chainlink import ChainlinkOracle
from oracles.errors import OracleUnavailableError
from oracles.guard import OracleGuard, SkippedOracle

log = logging.getLogger("chrysalis.refresh")

ZERO32 = "0x" + "00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
_SEL = {
    name: function_signature_to_4byte_selector(sig)
    for name, sig in (
        ("ownerOf", "ownerOf(uint256)"),
        ("stageOf", "stageOf(uint256)"),
        ("metadataDigestOf", "metadataDigestOf(uint256)"),
        ("pendingRequestOf", "pendingRequestOf(uint256)"),
        ("totalMinted", "totalMinted()"),
    )
}


@dataclass(frozen=True)
class Block:
    """The block a refresh reads."""

    number: int
    hash: str
    timestamp: int


@dataclass(frozen=True)
class TokenState:
    """A token's on-chain state at a block (``owner`` None: it does not exist there)."""

    token_id: int
    owner: str | None
    stage: int
    digest: str
    pending_request: int


@dataclass(frozen=True)
class Evaluation:
    """The verdict on one token: its next item state and what to store with it."""

    token_id: int
    state: ItemState
    stage: int | None = None
    parent_digest: str | None = None
    inputs: Inputs | None = None
    reason: str | None = None

    def values(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "stage": self.stage,
            "parent_digest": self.parent_digest,
            "inputs": self.inputs.to_json() if self.inputs else None,
            "reason": self.reason,
        }


class _TokenFields(TypedDict):
    """What every verdict on an existing token stores: its stage and current digest (the refresh's parent)."""

    stage: int
    parent_digest: str


def _call(address: str, name: str, *args: int) -> dict[str, Any]:
    data = _SEL[name] + (abi_encode(["uint256"] * len(args), list(args)) if args else b"")
    return {"to": address, "data": "0x" + data.hex()}


def read_token_states(
    chain: ChainRpc, collection: str, token_ids: Sequence[int], block: Block
) -> list[TokenState]:
    """Owner, stage, digest and pending request of every token at ``block`` (JSON-RPC batches).

    Raises:
        RpcError and subclasses: the node failed (retryable ones are retried by the caller).
    """
    at = {"blockHash": block.hash, "requireCanonical": True}
    calls: list[tuple[str, list[Any]]] = []
    for t in token_ids:
        for name in ("ownerOf", "stageOf", "metadataDigestOf", "pendingRequestOf"):
            calls.append(("eth_call", [_call(collection, name, t), at]))
    results: list[Any] = []
    for start in range(0, len(calls), 400):
        results.extend(chain.batch(calls[start : start + 400]))
    out = []
    for i, t in enumerate(token_ids):
        owner_r, stage_r, digest_r, pending_r = results[4 * i : 4 * i + 4]
        if isinstance(owner_r, CallRevertedError):  # ownerOf reverts: never minted, or burnt
            out.append(TokenState(t, None, 0, ZERO32, 0))
            continue
        for r in (owner_r, stage_r, digest_r, pending_r):
            if isinstance(r, Exception):
                raise r
        owner = Web3.to_checksum_address(abi_decode(["address"], bytes.fromhex(owner_r[2:]))[0])
        (stage,) = abi_decode(["uint32"], bytes.fromhex(stage_r[2:]))
        request_id = abi_decode(["uint256", "address", "uint256", "uint256"], bytes.fromhex(pending_r[2:]))[0]
        out.append(
            TokenState(t, owner, int(stage), "0x" + digest_r[2:].rjust(64, "0")[-64:], int(request_id))
        )
    return out


def total_minted(chain: ChainRpc, collection: str, block: Block) -> int:
    """``totalMinted()`` at ``block``: the highest token id."""
    raw = chain.request("eth_call", [_call(collection, "totalMinted"), {"blockHash": block.hash}])
    return int(str(raw), 16)


def rule_features(rules: RuleEngine) -> dict[str, list[str]]:
    """Reading name -> the rules (``[traits.mood]``) that read it."""
    out: dict[str, list[str]] = {}
    for kind, table in (("traits", rules.spec.traits), ("facts", rules.spec.facts)):
        for name, rule in sorted(table.items()):
            feature = getattr(rule, "feature", None)
            if feature:
                out.setdefault(feature, []).append(f"[{kind}.{name}]")
    return out


class RefreshInputs:
    """Reads and evaluates tokens for a refresh; see the module docstring.

    Args:
        reader: The collection (its RPC client carries web3 for the oracles).
        chain: JSON-RPC client for batched reads.
        oracles: The oracles the evolution pipeline reads. Chainlink feeds are read once per refresh (they do not
            depend on the token); the others (the wallet) per token.
        rules: The evolution rules.
        repo: The embedded IPFS repo holding the tokens' current metadata and images.
        guard: Screens every reading (stale, missing, absurd data is skipped, logged and counted).
        token_name, collection_name: As for the pipeline's inputs stage.
        first_render: Render tokens that have no metadata yet (a first image at their stage, no parent).
    """

    def __init__(
        self,
        reader: CollectionReader,
        chain: ChainRpc,
        oracles: Sequence[Oracle],
        rules: RuleEngine,
        repo: IpfsRepo,
        guard: OracleGuard,
        *,
        token_name: str = "{collection} #{token_id}",
        collection_name: str = "Chrysalis",
        first_render: bool = False,
        remote: RemoteBlocks | None = None,
    ) -> None:
        self.reader = reader
        self.chain = chain
        self.remote = remote  # where a previous version the repo lacks is fetched from
        self.shared_oracles = [o for o in oracles if isinstance(o, ChainlinkOracle)]
        self.token_oracles = [o for o in oracles if not isinstance(o, ChainlinkOracle)]
        self.rules = rules
        self.repo = repo
        self.guard = guard
        self.token_name = token_name
        self.collection_name = collection_name
        self.first_render = first_render
        self.features = rule_features(rules)

    @property
    def collection(self) -> ChecksumAddress:
        return self.reader.address

    def block(self, confirmations: int = 0) -> Block:
        """The block a new refresh reads: the head minus ``confirmations``."""
        head = self.chain.block_number()
        header = self.chain.block(max(0, head - confirmations))
        if header is None:
            raise OracleUnavailableError(
                "the node has no block at the head", oracle="refresh", block_number=head
            )
        return Block(header.number, header.hash.lower(), header.timestamp)

    def all_tokens(self, block: Block) -> list[int]:
        return list(range(1, total_minted(self.chain, self.collection, block) + 1))

    def _ctx(self, block: Block, token_id: int, holder: str) -> ReadContext:
        return ReadContext(
            web3=self.reader.rpc.w3,
            chain_id=self.chain.chain_id(),
            block_number=block.number,
            block_hash=block.hash,
            block_timestamp=block.timestamp,
            token_id=token_id,
            holder=Web3.to_checksum_address(holder),
            collection=self.collection,
        )

    def read_shared(self, block: Block) -> dict[str, Any]:
        """Read and screen the block-level oracles once: ``{"passed": {oracle: [reading]}, "skipped": [...]}``.

        Raises:
            OracleUnavailableError: the node could not be reached (retryable; nothing is skipped).
        """
        ctx = self._ctx(block, 0, ZERO_ADDRESS)
        passed: dict[str, list[dict[str, Any]]] = {}
        skipped: list[dict[str, Any]] = []
        for oracle in self.shared_oracles:
            readings, skip = self.guard.screen(oracle, ctx)
            if skip is not None:
                skipped.append(skip.to_json())
            if readings:
                passed[oracle.name] = [r.to_json() for r in readings]
        return {"passed": passed, "skipped": skipped}

    def feed_answer(self, shared: Mapping[str, Any], feed: str | None) -> int | None:
        """The raw answer of ``feed`` among the shared readings (None when it was skipped or not read)."""
        for oracle in self.shared_oracles:
            if feed is not None and oracle.address.lower() != feed.lower():
                continue
            for r in shared.get("passed", {}).get(oracle.name, []):
                if r["name"] == f"{oracle.name}.answer":
                    return int(r["meta"]["raw"])
        return None

    def evaluate(
        self, block: Block, shared: Mapping[str, Any], token_ids: Sequence[int], *, force: bool = False
    ) -> list[Evaluation]:
        """The verdict on each token (see the module docstring), in order.

        Raises:
            OracleUnavailableError, RpcError: the node failed (retryable: the chunk is evaluated again).
        """
        states = read_token_states(self.chain, self.collection, token_ids, block)
        return [self._one(block, shared, s, force) for s in states]

    def _one(self, block: Block, shared: Mapping[str, Any], token: TokenState, force: bool) -> Evaluation:
        t = token.token_id
        if token.owner is None:
            return Evaluation(
                t, ItemState.SKIPPED, reason=f"token {t} does not exist at block {block.number}"
            )
        base: _TokenFields = {"stage": token.stage, "parent_digest": token.digest}
        if token.pending_request:
            return Evaluation(
                t, ItemState.DEFERRED, **base,
                reason=f"request {token.pending_request:#x} for token {t} is pending at block {block.number}: the "
                "holder's evolution goes first; the next refresh picks the token up",
            )  # fmt: skip
        if token.digest == ZERO32 and not self.first_render:
            return Evaluation(
                t, ItemState.SKIPPED, **base,
                reason="no metadata yet (it shows its genesis art until its first evolution; set "
                "refresh.first_render to render it)",
            )  # fmt: skip
        try:
            previous = self._previous(t, token.digest)
        except PreviousMetadataMissingError as exc:
            return Evaluation(t, ItemState.FAILED, **base, reason=f"{exc.message} ({exc.hint})")
        snapshot, skipped = self._snapshot(block, shared, t, token.owner)
        read_but_skipped = sorted(
            ((name, s) for s in skipped for name in s.readings if name in self.features or s.required),
            key=lambda pair: pair[0],
        )
        if read_but_skipped:
            what = "; ".join(
                f"{name} ({s.reason}: {s.detail}) "
                + (
                    f"read by {', '.join(self.features[name])}"
                    if name in self.features
                    else "marked required"
                )
                for name, s in read_but_skipped
            )
            return Evaluation(t, ItemState.ORACLE_SKIPPED, **base, reason=f"oracle data skipped: {what}")
        try:
            rules = evaluate_traits(
                self.rules,
                snapshot,
                stage=token.stage,
                token_id=t,
                previous=previous.traits if previous else None,
            )
        except RuleEvaluationError as exc:
            return Evaluation(t, ItemState.FAILED, **base, reason=f"{exc.message} ({exc.hint})")
        if not rules.changed and not force:
            return Evaluation(t, ItemState.UNCHANGED, **base)
        inputs = Inputs(
            snapshot=snapshot,
            token=TokenFacts(
                name=self.token_name.format(collection=self.collection_name, token_id=t),
                stage=token.stage,
                previous=previous,
                holder=token.owner,
            ),
            rules=rules,
            refresh=RefreshMark(block.number, block.hash, force),
        )
        changed = ", ".join(rules.changed) or "(none: forced)"
        return Evaluation(t, ItemState.CHANGED, **base, inputs=inputs, reason=f"changed: {changed}")

    def _previous(self, token_id: int, digest: str) -> PreviousVersion | None:
        return read_previous(self.repo, token_id, bytes.fromhex(digest.removeprefix("0x")), self.remote)

    def _snapshot(
        self, block: Block, shared: Mapping[str, Any], token_id: int, holder: str
    ) -> tuple[InputSnapshot, list[SkippedOracle]]:
        ctx = self._ctx(block, token_id, holder)
        passed: list[tuple[str, list[OracleReading]]] = [
            (name, [OracleReading.from_json(r) for r in readings])
            for name, readings in shared.get("passed", {}).items()
        ]
        skipped = [SkippedOracle.from_json(s) for s in shared.get("skipped", [])]
        for oracle in self.token_oracles:
            readings, skip = self.guard.screen(oracle, ctx)
            if skip is not None:
                skipped.append(skip)
            if readings:
                passed.append((oracle.name, readings))
        return self.guard.assemble(passed, skipped, ctx), skipped
