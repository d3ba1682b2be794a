"""The holder's wallet at the block: balance, transaction count, how many tokens they hold and for how long.

Readings (prefix ``wallet`` by default):

=========================  ======  ==========================================================================
name                       type    meaning
=========================  ======  ==========================================================================
``wallet.balance_eth``     float   ETH balance (exact wei in ``meta["wei"]``)
``wallet.tx_count``        int     transactions sent by the holder (account nonce)
``wallet.tokens_held``     int     tokens of the collection the holder owns (``balanceOf``)
``wallet.held_seconds``    int     block time minus the time of the latest transfer of the token INTO them
``wallet.held_blocks``     int     the same in blocks
=========================  ======  ==========================================================================

Holding time restarts when a token leaves and comes back: only the latest transfer into the current holder
counts. It is found from the collection's ``Transfer`` logs, searched backwards from the block down to
``from_block`` (set it to the collection's deploy block) in ranges of at most ``log_chunk`` blocks, negotiated
with the provider like the watcher's (:func:`agent.watch.logs.search_backwards`): a range the provider refuses,
in any wording, is halved until it is accepted, and the accepted size is kept for the next search. A search the
node cannot answer (unreachable after the retries, a range refused even for one block) is
:class:`~oracles.errors.OracleUnavailableError`: retryable, never a missing reading.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from eth_utils import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError

from agent.domain import OracleReading
from agent.watch.logs import AdaptiveRange, search_backwards
from agent.watch.rpc import rpc_errors
from oracles.base import ERC721_OWNER_ABI, Oracle, ReadContext, call_at, endpoint, unavailable
from oracles.errors import (
    HolderMismatchError,
    OracleCallError,
    OracleUnavailableError,
    SnapshotReorgError,
)

TRANSFER_TOPIC = HexBytes(keccak(text="Transfer(address,address,uint256)"))
"""topic0 of ERC-721 ``Transfer(address indexed from, address indexed to, uint256 indexed tokenId)``."""

ERC721_ABI: list[dict[str, Any]] = [
    *ERC721_OWNER_ABI,
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]

WEI_PER_ETH = 10**18

LOG_RECHECKS = 2
"""Searches asked again when the Transfer search found nothing. ``ownerOf`` says the holder has the token, so a
Transfer into them exists: an empty answer is a provider's incomplete one (an ``eth_getLogs`` answering ``[]`` for a
range its backend has not indexed yet), and asking again at once usually gets the honest one. Only when every
search comes back empty is the reading retryable-unavailable (the job's retries then ask later)."""


class WalletOracle(Oracle):
    """Reads the holder's wallet and their tenure of the token at the context's block.

    Args:
        name: Reading prefix.
        from_block: First block to search for Transfer logs (the collection's deploy block).
        log_chunk: Most blocks per ``eth_getLogs`` query; halved while the provider refuses (providers cap
            ranges, at 10,000 blocks, 2,000, or a result count), the accepted size kept in :attr:`span`.
    """

    def __init__(self, *, name: str = "wallet", from_block: int = 0, log_chunk: int = 10_000) -> None:
        if from_block < 0 or log_chunk < 1:
            raise ValueError("from_block must be >= 0 and log_chunk >= 1")
        self._name = name
        self._from_block = from_block
        self._log_chunk = log_chunk
        self.span = AdaptiveRange(max_size=log_chunk)
        """The negotiated ``eth_getLogs`` span, kept between reads."""

    @property
    def name(self) -> str:
        return self._name

    @property
    def provides(self) -> tuple[str, ...]:
        fields = ("balance_eth", "tx_count", "tokens_held", "held_seconds", "held_blocks")
        return tuple(f"{self._name}.{f}" for f in fields)

    def read(self, ctx: ReadContext) -> list[OracleReading]:
        w3, at, n = ctx.web3, ctx.block_identifier, ctx.block_number
        collection = w3.eth.contract(address=ctx.collection, abi=ERC721_ABI)

        owner = self._owner(ctx, collection)
        if owner != ctx.holder:
            raise HolderMismatchError(
                oracle=self._name, block_number=n, token_id=ctx.token_id, holder=ctx.holder, owner=owner
            )

        wei = self._call(
            ctx,
            "eth_getBalance",
            lambda: w3.eth.get_balance(ctx.holder, block_identifier=at),
            address=ctx.holder,
        )
        nonce = self._call(
            ctx,
            "eth_getTransactionCount",
            lambda: w3.eth.get_transaction_count(ctx.holder, block_identifier=at),
            address=ctx.holder,
        )
        held = self._call(
            ctx, "balanceOf", lambda: collection.functions.balanceOf(ctx.holder).call(block_identifier=at)
        )
        acquired = self._latest_transfer_in(ctx)
        acquired_block = int(acquired["blockNumber"])
        acquired_at = int(
            self._call(ctx, "eth_getBlockByHash", lambda: w3.eth.get_block(acquired["blockHash"]))[
                "timestamp"
            ]
        )
        tenure = {
            "acquired_block": acquired_block,
            "acquired_at": acquired_at,
            "acquired_tx": "0x" + bytes(acquired["transactionHash"]).hex(),
            "from": Web3.to_checksum_address(bytes(acquired["topics"][1])[-20:]),
        }

        def reading(field: str, value: Any, source: str, meta: dict[str, Any] | None = None) -> OracleReading:
            return OracleReading(f"{self._name}.{field}", value, source, n, meta or {})

        return [
            reading(
                "balance_eth", float(Fraction(wei, WEI_PER_ETH)), f"eth_getBalance:{ctx.holder}", {"wei": wei}
            ),
            reading("tx_count", int(nonce), f"eth_getTransactionCount:{ctx.holder}"),
            reading("tokens_held", int(held), f"erc721.balanceOf:{ctx.collection}"),
            reading(
                "held_seconds", ctx.block_timestamp - acquired_at, f"erc721.Transfer:{ctx.collection}", tenure
            ),
            reading("held_blocks", n - acquired_block, f"erc721.Transfer:{ctx.collection}", dict(tenure)),
        ]

    def _latest_transfer_in(self, ctx: ReadContext) -> Any:
        """The latest Transfer log of the token into the holder at or before the block, searched backwards."""
        topics = [
            TRANSFER_TOPIC,
            None,
            HexBytes(bytes(12) + bytes(HexBytes(ctx.holder))),
            HexBytes(ctx.token_id.to_bytes(32, "big")),
        ]
        url = endpoint(ctx.web3)

        def get_logs(lo: int, hi: int) -> list[Any]:
            flt: Any = {"address": ctx.collection, "fromBlock": lo, "toBlock": hi, "topics": topics}
            return list(rpc_errors(url, "eth_getLogs", lambda: ctx.web3.eth.get_logs(flt)))

        if ctx.block_number >= self._from_block:
            try:
                for _ in range(1 + LOG_RECHECKS):
                    _, logs = search_backwards(
                        get_logs, self._from_block, ctx.block_number, self.span, url=url
                    )
                    if logs:
                        break
            except Exception as exc:
                reason = unavailable(exc, "eth_getLogs")
                if reason is None:
                    raise
                raise OracleUnavailableError(
                    f"the search for token {ctx.token_id}'s latest Transfer to {ctx.holder} (eth_getLogs, "
                    f"blocks {self._from_block}..{ctx.block_number}) failed: {reason}",
                    oracle=self._name,
                    block_number=ctx.block_number,
                ) from exc
            if logs:
                latest = max(logs, key=lambda log: (int(log["blockNumber"]), int(log["logIndex"])))
                if (
                    int(latest["blockNumber"]) == ctx.block_number
                    and _hex(latest["blockHash"]) != ctx.block_hash
                ):
                    raise SnapshotReorgError(
                        block_number=ctx.block_number,
                        expected_hash=ctx.block_hash,
                        actual_hash=_hex(latest["blockHash"]),
                    )
                return latest
        # ownerOf says the holder has the token, so a Transfer into them exists at or before the block (mints
        # emit one too): not finding it means the provider's log answers are incomplete (an eth_getLogs answering
        # [] for a range its backend has not indexed) -- retryable -- or from_block is later than the mint.
        raise OracleUnavailableError(
            f"{ctx.holder} holds token {ctx.token_id}, but eth_getLogs found no Transfer of it to them in blocks "
            f"{self._from_block}..{ctx.block_number}: the provider's log answers are incomplete (retry), or "
            "WalletOracle(from_block=...) is later than the mint (set it to the collection's deploy block)",
            oracle=self._name,
            block_number=ctx.block_number,
        )

    def _owner(self, ctx: ReadContext, collection: Any) -> str | None:
        """The token's owner at the block; None when ``ownerOf`` reverts (not minted yet, or burnt)."""
        try:
            owner = self._call(
                ctx,
                f"ownerOf({ctx.token_id})",
                lambda: collection.functions.ownerOf(ctx.token_id).call(
                    block_identifier=ctx.block_identifier
                ),
            )
        except OracleCallError as exc:
            if isinstance(exc.__cause__, ContractLogicError):
                return None
            raise
        return Web3.to_checksum_address(owner)

    def _call(self, ctx: ReadContext, what: str, fn: Any, *, address: str | None = None) -> Any:
        return call_at(
            fn,
            oracle=self._name,
            block_number=ctx.block_number,
            address=address or ctx.collection,
            function=what,
        )


def _hex(value: bytes | str) -> str:
    return "0x" + bytes(HexBytes(value)).hex()
