"""What the pipeline reads from the collection: token state at a block, and what became of a request.

Every read of a job's inputs is pinned to the request's block by hash (EIP-1898), so a retried job reads
what the first attempt read. What became of a request is answered by the chain, never by the job store:
``isPending`` first, then the ``Evolved`` / ``EvolutionCancelled`` logs naming the request. That is what makes
a crash between broadcasting a fulfilment and recording it harmless: the next attempt finds the fulfilment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eth_utils import keccak
from hexbytes import HexBytes
from web3 import Web3

from agent.pipeline.errors import SourceOrphanedError
from agent.watch.logs import AdaptiveRange, fetch_logs
from agent.watch.rpc import RpcClient, hex0x

EVOLVED_TOPIC = "0x" + keccak(text="Evolved(uint256,uint256,uint32,bytes32,bytes32)").hex()
CANCELLED_TOPIC = "0x" + keccak(text="EvolutionCancelled(uint256,uint256,address,uint256)").hex()

_VIEWS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": name,
        "stateMutability": "view",
        "inputs": inputs,
        "outputs": [{"name": "", "type": out}],
    }
    for name, inputs, out in (
        ("metadataDigestOf", [{"name": "tokenId", "type": "uint256"}], "bytes32"),
        ("isPending", [{"name": "requestId", "type": "uint256"}], "bool"),
        ("name", [], "string"),
    )
] + [
    {
        "type": "function",
        "name": "hasRole",
        "stateMutability": "view",
        "inputs": [{"name": "role", "type": "bytes32"}, {"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "bool"}],
    }
]
AGENT_ROLE = keccak(text="AGENT_ROLE")

Outcome = Literal["pending", "fulfilled", "cancelled", "gone"]


@dataclass(frozen=True)
class RequestOutcome:
    """What the canonical chain says about one request.

    Attributes:
        state: ``pending`` (still open), ``fulfilled`` (an ``Evolved`` log names it), ``cancelled`` (an
            ``EvolutionCancelled`` log names it) or ``gone`` (none of these: the request is not on the
            canonical chain, e.g. orphaned by a reorg).
        tx_hash, block_number, block_hash: Where the fulfilment or cancellation was mined.
        digest: The metadata digest the fulfilment wrote (``0x`` hex).
        sender: Who sent the fulfilling transaction.
    """

    state: Outcome
    tx_hash: str | None = None
    block_number: int | None = None
    block_hash: str | None = None
    digest: str | None = None
    sender: str | None = None


def topic_uint(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


class CollectionReader:
    """Reads the collection through the watcher's :class:`RpcClient` (retries, rate limits, metrics).

    Args:
        rpc: The chain's RPC client.
        address: The collection.
        max_range: Largest ``eth_getLogs`` span (halved when the provider refuses).
    """

    def __init__(self, rpc: RpcClient, address: str, *, max_range: int = 2000) -> None:
        self.rpc = rpc
        self.address = Web3.to_checksum_address(address)
        self.contract = rpc.w3.eth.contract(address=self.address, abi=_VIEWS)
        self._span = AdaptiveRange(max_size=max_range)

    def name(self) -> str:
        """The collection's ERC-721 ``name()``."""
        return str(self.rpc.call("eth_call", lambda: self.contract.functions.name().call()))

    def is_agent(self, address: str) -> bool:
        """Whether ``address`` holds ``AGENT_ROLE`` (may fulfil requests)."""
        fn = self.contract.functions.hasRole(AGENT_ROLE, Web3.to_checksum_address(address))
        return bool(self.rpc.call("eth_call", lambda: fn.call()))

    def canonical_hash(self, number: int) -> str | None:
        block = self.rpc.get_block(number)
        return block.hash if block is not None else None

    def check_canonical(self, number: int, block_hash: str) -> None:
        """Raise :class:`SourceOrphanedError` unless ``block_hash`` is still the block at ``number``."""
        actual = self.canonical_hash(number)
        if actual != block_hash.lower():
            raise SourceOrphanedError(number, block_hash, actual)

    def metadata_digest_at(self, token_id: int, block_hash: str) -> bytes:
        """The token's metadata digest after block ``block_hash`` (32 zero bytes: none yet)."""
        fn = self.contract.functions.metadataDigestOf(token_id)
        return bytes(self.rpc.call("eth_call", lambda: fn.call(block_identifier=HexBytes(block_hash))))

    def is_pending(self, request_id: int) -> bool:
        fn = self.contract.functions.isPending(request_id)
        return bool(self.rpc.call("eth_call", lambda: fn.call(block_identifier="latest")))

    def outcome(self, request_id: int, from_block: int) -> RequestOutcome:
        """What became of ``request_id`` (opened at or after ``from_block``) on the canonical chain now."""
        if self.is_pending(request_id):
            return RequestOutcome("pending")
        head = self.rpc.block_number()
        topic = topic_uint(request_id)
        evolved = self._logs([EVOLVED_TOPIC, None, topic], from_block, head)
        if evolved:
            log = evolved[-1]
            tx = self.rpc.call(
                "eth_getTransactionByHash", lambda: self.rpc.w3.eth.get_transaction(log["transactionHash"])
            )
            data = bytes.fromhex(log["data"][2:])
            return RequestOutcome(
                "fulfilled",
                tx_hash=log["transactionHash"],
                block_number=log["blockNumber"],
                block_hash=log["blockHash"],
                digest="0x" + data[32:64].hex(),
                sender=Web3.to_checksum_address(tx["from"]),
            )
        cancelled = self._logs([CANCELLED_TOPIC, topic], from_block, head)
        if cancelled:
            log = cancelled[-1]
            return RequestOutcome(
                "cancelled",
                tx_hash=log["transactionHash"],
                block_number=log["blockNumber"],
                block_hash=log["blockHash"],
            )
        return RequestOutcome("gone")

    def _logs(self, topics: Sequence[Any], start: int, end: int) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = []
        while start <= end:
            to, raws = fetch_logs(self.rpc, self.address, topics, start, end, self._span)
            found.extend(r for r in raws if not r.get("removed"))
            start = to + 1
        return found


def hex32(value: bytes | str) -> str:
    """``0x`` + 64 hex digits of a bytes32."""
    return hex0x(value) if isinstance(value, str) else "0x" + bytes(value).hex()
