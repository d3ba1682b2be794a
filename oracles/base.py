"""The oracle boundary: :class:`Oracle` reads values at one block, described by a :class:`ReadContext`.

Everything an evolution depends on is read *at the event's block*, never at ``latest``: a retried or replayed
job then sees exactly the inputs the first run saw, and a verifier can recompute them from an archive node.
Contract calls pin the block by hash (EIP-1898), so a call can never silently read a block that replaced
it in a reorg; log queries stop at the block's number, and :func:`oracles.snapshot.take_snapshot` checks
afterwards that the hash is still canonical.

Implementations live beside this file, one per module (:mod:`oracles.wallet`, :mod:`oracles.chainlink`).

Oracles read through ``ctx.web3``; in the agent that is :attr:`agent.watch.rpc.RpcClient.w3`, whose provider
retries every request (back-off, ``Retry-After``, the ``chrysalis_rpc_*`` metrics). What outlasts the retries is
a reading that could not be taken, never bad data: :func:`call_at` and :meth:`ReadContext.at` raise
:class:`~oracles.errors.OracleUnavailableError` (retryable) naming the endpoint, the method and the cause.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from eth_typing import ChecksumAddress, Hash32, HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    BadFunctionCallOutput,
    BlockNotFound,
    ContractLogicError,
    Web3Exception,
    Web3RPCError,
)
from web3.types import BlockIdentifier

from agent.domain import OracleReading
from agent.jsonrpc import RpcFailed, RpcUnavailableError, classify_exception
from agent.watch.errors import RpcError, UnsplittableRangeError
from oracles.errors import OracleCallError, OracleUnavailableError

T = TypeVar("T")

ERC721_OWNER_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "ownerOf",
        "stateMutability": "view",
        "inputs": [{"name": "tokenId", "type": "uint256"}],
        "outputs": [{"name": "", "type": "address"}],
    }
]


@dataclass(frozen=True)
class ReadContext:
    """Where and for whom oracles read: one block, one token, its holder.

    Build it with :meth:`at`, which resolves the block once: every oracle sees the same number, hash, time.

    Attributes:
        web3: Connected web3 instance (calls go through it; it is not part of equality or repr).
        chain_id: The chain's id.
        block_number: The block every value is read at (state *after* that block).
        block_hash: That block's hash, ``0x``-prefixed lower-case hex.
        block_timestamp: That block's timestamp (unix seconds); "now" for staleness and holding time.
        token_id: The token evolving.
        holder: Checksum address of the token's owner at the block.
        collection: Checksum address of the collection contract.
    """

    web3: Web3 = field(repr=False, compare=False)
    chain_id: int
    block_number: int
    block_hash: str
    block_timestamp: int
    token_id: int
    holder: ChecksumAddress
    collection: ChecksumAddress

    @property
    def block_identifier(self) -> HexBytes:
        """What every contract call passes as ``block_identifier``: the block's hash (EIP-1898)."""
        return HexBytes(self.block_hash)

    @classmethod
    def at(
        cls,
        web3: Web3,
        block: int | str | bytes,
        *,
        token_id: int,
        collection: str,
        holder: str | None = None,
    ) -> ReadContext:
        """Resolve ``block`` (a number or a hash) and build the context.

        Args:
            web3: Connected web3 instance.
            block: The event's block number or hash. Tags such as ``"latest"`` are refused: pin a block.
            token_id: The token.
            collection: The collection's address.
            holder: The token's owner; looked up with ``ownerOf`` at the block when omitted.

        Raises:
            ValueError: ``block`` is a tag, not a number or hash.
            OracleUnavailableError: the node cannot be reached or does not know the block (yet); retryable.
            OracleCallError: ``holder`` is omitted and ``ownerOf`` reverts (the token does not exist there).
        """
        if isinstance(block, str) and not block.startswith("0x"):
            raise ValueError(
                f"block must be a number or a 0x block hash, not {block!r}; pin the event's block"
            )
        label = block if isinstance(block, int) else "0x" + bytes(HexBytes(block)).hex()
        ident: BlockIdentifier = (
            block if isinstance(block, int) else HexStr(block) if isinstance(block, str) else Hash32(block)
        )
        try:
            header = web3.eth.get_block(ident)
            chain_id = web3.eth.chain_id
        except BlockNotFound as exc:  # a node behind its peers may not have it yet
            raise OracleUnavailableError(
                f"block {label} is not known to the node", oracle="context", block_number=-1
            ) from exc
        except Exception as exc:
            reason = unavailable(
                exc, "eth_getBlockByNumber" if isinstance(block, int) else "eth_getBlockByHash"
            )
            if reason is None:
                raise
            url = endpoint(web3)
            raise OracleUnavailableError(
                f"cannot read block {label}{'' if url in reason else f' from {url}'}: {reason}",
                oracle="context",
                block_number=-1,
            ) from exc
        number = int(header["number"])
        block_hash = "0x" + bytes(header["hash"]).hex()
        collection = Web3.to_checksum_address(collection)
        if holder is None:
            owner_of = web3.eth.contract(address=collection, abi=ERC721_OWNER_ABI).functions.ownerOf(token_id)
            holder = call_at(
                lambda: owner_of.call(block_identifier=HexBytes(block_hash)),
                oracle="context",
                block_number=number,
                address=collection,
                function=f"ownerOf({token_id})",
            )
        return cls(
            web3=web3,
            chain_id=int(chain_id),
            block_number=number,
            block_hash=block_hash,
            block_timestamp=int(header["timestamp"]),
            token_id=int(token_id),
            holder=Web3.to_checksum_address(holder),
            collection=collection,
        )


class Oracle(ABC):
    """Reads named values at the context's block.

    Reading names are ``<oracle name>.<field>`` (e.g. ``wallet.tx_count``, ``price.change_pct``): they are
    the feature names evolution rules refer to, so they must be stable. Numbers are JSON numbers: ints where
    exact, and scaled quantities as floats computed deterministically from the raw integers (in ``meta``).
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """Prefix of this oracle's reading names; unique among the oracles of one snapshot."""

    @property
    @abstractmethod
    def provides(self) -> tuple[str, ...]:
        """Every reading name :meth:`read` returns, so rules can be checked against them before any read."""

    @abstractmethod
    def read(self, ctx: ReadContext) -> list[OracleReading]:
        """Read every value at ``ctx.block_number`` (never ``latest``).

        Returns one :class:`~agent.domain.OracleReading` per name in :attr:`provides`, each with
        ``block_number == ctx.block_number``.

        Raises:
            OracleError: the data at the block cannot be trusted (stale, absurd, missing); permanent.
            OracleUnavailableError: the node could not be reached; retryable.
        """


BLOCK_UNKNOWN = re.compile(
    r"header (for hash )?not found|unknown block|block not found|block .*(does not exist|is not available)"
    r"|resource not found",  # EIP-1474 -32001, what anvil answers
    re.IGNORECASE,
)
"""Node messages for a block it does not know (yet): a backend behind its peers, behind a load balancer. Like
``BlockNotFound`` in :meth:`ReadContext.at`, a reading that could not be taken, not the node's word about data."""


def endpoint(web3: Web3) -> str:
    """The node's URL (for messages), or the provider's type."""
    provider = getattr(web3, "provider", None)
    return str(getattr(provider, "endpoint_uri", None) or type(provider).__name__)


def unavailable(exc: BaseException, method: str) -> str | None:
    """Why ``exc`` means the node could not give an answer (a reading that could not be taken), or None.

    True of what outlasted the retries of :attr:`agent.watch.rpc.RpcClient.w3` (:class:`RpcUnavailableError`,
    a rate limit), of a refusal to serve at all (HTTP 4xx: a key or URL problem; a log range refused even for one
    block), and of a retryable transport failure of any other provider (timeouts, dropped connections, HTTP 5xx,
    429), or of a node that does not know the block yet (:data:`BLOCK_UNKNOWN`). Not of a revert or any other
    final JSON-RPC answer (pruned state included): those are the node's word about the data.
    """
    if isinstance(exc, RpcUnavailableError | RpcError | UnsplittableRangeError):
        return exc.message
    if isinstance(exc, RpcFailed):
        return str(exc)
    if isinstance(exc, ContractLogicError | BadFunctionCallOutput):
        return None
    if isinstance(exc, requests.RequestException | Web3RPCError):
        failure = classify_exception(method, exc)
        if failure is not None and (failure.retryable or failure.kind == "http_4xx"):
            return failure.message
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return str(exc) or type(exc).__name__
    if block_unknown(exc):
        return f"the node does not know the block (yet): {_describe(exc)}"
    return None


def block_unknown(exc: BaseException) -> bool:
    """Whether ``exc`` is the node saying it does not know the block (:data:`BLOCK_UNKNOWN`)."""
    return isinstance(exc, Web3RPCError) and BLOCK_UNKNOWN.search(str(exc)) is not None


def call_at(fn: Callable[[], T], *, oracle: str, block_number: int, address: str, function: str) -> T:
    """Run one RPC call, turning web3's failures into oracle errors.

    A revert or empty return becomes :class:`OracleCallError` (permanent: the same call at the same
    block fails the same way); a failure to get an answer at all (the node unreachable after the retries, rate
    limits that outlast them, HTTP 5xx or 4xx) becomes :class:`OracleUnavailableError` (retryable), naming the
    endpoint, the call and the cause.
    """
    try:
        return fn()
    except (ContractLogicError, BadFunctionCallOutput) as exc:
        raise OracleCallError(
            oracle=oracle,
            block_number=block_number,
            address=address,
            function=function,
            reason=_describe(exc),
        ) from exc
    except Exception as exc:
        reason = unavailable(exc, "eth_call")
        if reason is not None:
            raise OracleUnavailableError(
                f"{function} on {address}: {reason}",
                oracle=oracle,
                block_number=block_number,
                block_unknown=block_unknown(exc),
            ) from exc
        if not isinstance(exc, Web3Exception):
            raise
        raise OracleCallError(
            oracle=oracle,
            block_number=block_number,
            address=address,
            function=function,
            reason=_describe(exc),
        ) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
