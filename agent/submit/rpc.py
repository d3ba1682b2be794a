"""The one client wrapper through which the submit stage talks to the node.

Cross-cutting RPC concerns go through the retry core it shares with the watcher's client
(:class:`agent.jsonrpc.RetryLoop`): retries with backoff on transport failures (connection errors, timeouts,
HTTP 429/5xx, JSON-RPC "limit exceeded" and rate limits), one classification of failures, and the RPC metrics
(``chrysalis_rpc_errors{client="submit", method, kind}`` and friends). What stays here is what only the submit
stage needs: raw JSON-RPC calls and batches, and turning final failures into Chrysalis errors (a revert becomes
:class:`CallRevertedError` with its decoded data; a rejected ``eth_sendRawTransaction`` becomes
:class:`TxPoolRejection` with a machine-readable ``kind``).

It speaks raw JSON-RPC through the web3 provider and parses the few hex fields it needs, which keeps the hot
paths (receipts, nonces, raw sends) cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import requests
from web3 import Web3

from agent.errors import PermanentError, RetryableError
from agent.jsonrpc import (
    RetryLoop,
    RetryNotice,
    RpcFailed,
    RpcReplyError,
    RpcUnavailableError,
    classify_error,
    classify_exception,
)
from agent.metrics import RPC_ERRORS
from agent.redact import redact_text
from agent.submit.errors import CallRevertedError, ErrorDecoder

log = logging.getLogger(__name__)

BlockId = int | Literal["latest", "pending", "earliest", "safe", "finalized"]


@dataclass(frozen=True)
class BlockHeader:
    """The few fields of a block the submit stage reads."""

    number: int
    hash: str
    base_fee: int | None
    gas_limit: int
    timestamp: int


@dataclass(frozen=True)
class Receipt:
    """A transaction receipt as the node returned it (hex fields parsed)."""

    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price: int
    status: int
    logs: tuple[dict[str, Any], ...]


class TxPoolRejection(RetryableError):
    """``eth_sendRawTransaction`` was refused. The sender decides what each ``kind`` means.

    Attributes:
        kind: ``nonce_too_low``, ``already_known``, ``underpriced`` (replacement or below the base fee),
            ``nonce_too_high``, ``insufficient_funds`` or ``other``.
        reason: The node's message.
    """

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"transaction rejected by the node ({kind}): {reason}")


def classify_rejection(message: str) -> str:
    """Map a node's ``eth_sendRawTransaction`` error message (geth, anvil, erigon, nethermind) to a kind."""
    text = message.lower()
    if "nonce too low" in text or "nonce is too low" in text or "oldnonce" in text:
        return "nonce_too_low"
    if (
        "already known" in text
        or "already imported" in text
        or "known transaction" in text
        or "alreadyknown" in text
    ):
        return "already_known"
    if (
        "underpriced" in text
        or "less than block base fee" in text
        or "fee cap less than" in text
        or ("max fee per gas" in text and "base fee" in text)
    ):
        return "underpriced"
    if "nonce too high" in text or "nonce gap" in text:
        return "nonce_too_high"
    if "insufficient funds" in text:
        return "insufficient_funds"
    return "other"


def _int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return int(value, 16)


class ChainRpc:
    """Typed, retried JSON-RPC calls for the submit stage.

    Args:
        w3: A connected :class:`Web3` (HTTP provider recommended; see :meth:`connect`).
        retries: Extra attempts after a transport failure (0: fail at once).
        backoff_s: First wait between attempts; doubles each time.
        decoder: Decodes revert data of failed calls (default: only ``Error``/``Panic``).
        on_retry: Told about each retry (see :class:`~agent.jsonrpc.RetryLoop`).
    """

    def __init__(
        self,
        w3: Web3,
        *,
        retries: int = 3,
        backoff_s: float = 0.25,
        decoder: ErrorDecoder | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> None:
        self.w3 = w3
        self.decoder = decoder or ErrorDecoder()
        url = str(getattr(w3.provider, "endpoint_uri", "") or type(w3.provider).__name__)
        self._loop = RetryLoop(
            "submit", url, retries=retries, backoff_s=backoff_s, max_backoff_s=30.0, jitter=False, sleep=sleep,
            on_retry=on_retry,
        )  # fmt: skip
        self._chain_id: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, url: str, *, timeout_s: float = 30.0, **kwargs: Any) -> ChainRpc:
        """A wrapper over a fresh HTTP provider whose own retries are off (this class retries)."""
        provider = Web3.HTTPProvider(
            url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )
        return cls(Web3(provider), **kwargs)

    # The retry settings live in the shared loop; these keep the attributes callers and tests set.
    @property
    def retries(self) -> int:
        """Extra attempts after a transport failure (0: fail at once)."""
        return self._loop.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self._loop.retries = value

    @property
    def backoff_s(self) -> float:
        """First wait between attempts; doubles each time."""
        return self._loop.backoff_s

    @backoff_s.setter
    def backoff_s(self, value: float) -> None:
        self._loop.backoff_s = value

    @property
    def _sleep(self) -> Callable[[float], None]:
        return self._loop.sleep

    @_sleep.setter
    def _sleep(self, value: Callable[[float], None]) -> None:
        self._loop.sleep = value

    # -- core ---------------------------------------------------------------------------------------------

    def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Send one request and return its ``result``, retrying transport failures.

        Raises:
            CallRevertedError: the call reverted (``eth_call``, ``eth_estimateGas``).
            TxPoolRejection: the node refused an ``eth_sendRawTransaction``.
            RpcUnavailableError: transport failures outlasted the retries.
            PermanentError: any other JSON-RPC error or HTTP 4xx (message kept; ``rpc_code`` attribute set).
        """

        def send() -> Any:
            reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
            error = reply.get("error") if isinstance(reply, dict) else None
            if error is not None:
                raise RpcReplyError(error)
            return reply.get("result") if isinstance(reply, dict) else None

        try:
            return self._loop.run(method, send)
        except RpcFailed as failed:
            raise self._error(failed) from None

    def _error(self, failed: RpcFailed) -> Exception:
        """The Chrysalis error of a request that failed for good."""
        method, f = failed.method, failed.failure
        message = redact_text(f.message, self._loop.url)  # no API key of the endpoint's URL in a message
        if failed.exhausted:
            return RpcUnavailableError(
                self._loop.url,
                method,
                message,
                attempts=failed.attempts,
                hint="check that chain.rpc_url points at a running node; raise submit.rpc_retries for a flaky one",
                rpc_kind=f.kind,
            )
        if f.kind == "revert":
            return CallRevertedError(
                self.decoder.decode(f.data if isinstance(f.data, str) else None), method=method
            )
        if method == "eth_sendRawTransaction" and f.kind == "rpc_error":
            return TxPoolRejection(classify_rejection(f.message), message)
        if f.kind.startswith("http_"):
            exc = PermanentError(f"RPC {method} failed: {message}")
        else:
            exc = PermanentError(f"RPC {method} failed: {message} (code {f.code})")
        exc.rpc_code = f.code  # type: ignore[attr-defined]
        exc.rpc_kind = f.kind  # type: ignore[attr-defined]
        return exc

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send several requests in one JSON-RPC batch; each item is its ``result`` or an exception instance.

        Falls back to one request each when the node refuses batches.
        """
        if not calls:
            return []

        def classify(method: str, exc: BaseException) -> Any:
            if isinstance(exc, requests.HTTPError):
                return None  # the node refuses batches: fall back below
            return classify_exception(method, exc)

        try:
            replies = self._loop.run(
                "batch",
                lambda: self.w3.provider.make_batch_request([(m, list(p)) for m, p in calls]),  # type: ignore
                classify,
            )
        except (NotImplementedError, AttributeError, requests.HTTPError):
            replies = None
        except RpcFailed as failed:
            raise self._error(failed) from None
        if not isinstance(replies, list) or len(replies) != len(calls):
            out: list[Any] = []
            for method, params in calls:
                try:
                    out.append(self.request(method, params))
                except (CallRevertedError, PermanentError) as exc:
                    out.append(exc)
            return out
        results: list[Any] = []
        for (method, _), reply in zip(calls, replies, strict=True):
            if "error" in reply:
                failure = classify_error(method, reply["error"])
                RPC_ERRORS.labels(client="submit", method=method, kind=failure.kind).inc()
                results.append(self._error(RpcFailed(method, failure, 1)))
            else:
                results.append(reply.get("result"))
        return results

    # -- typed calls --------------------------------------------------------------------------------------

    def chain_id(self) -> int:
        """The chain id (read once)."""
        if self._chain_id is None:
            self._chain_id = _int(self.request("eth_chainId"))
        return self._chain_id

    def block_number(self) -> int:
        return _int(self.request("eth_blockNumber"))

    def block(self, block: BlockId = "latest") -> BlockHeader | None:
        """A block's header, or None when the node has no such block."""
        ident = hex(block) if isinstance(block, int) else block
        return _parse_block(self.request("eth_getBlockByNumber", [ident, False]))

    def blocks(self, numbers: Sequence[int]) -> dict[int, BlockHeader | None]:
        """Several block headers by number, in one JSON-RPC batch."""
        wanted = sorted(set(numbers))
        if len(wanted) == 1:
            return {wanted[0]: self.block(wanted[0])}
        results = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in wanted])
        out: dict[int, BlockHeader | None] = {}
        for n, result in zip(wanted, results, strict=True):
            if isinstance(result, Exception):
                raise result
            out[n] = _parse_block(result)
        return out

    def nonce(self, address: str, block: BlockId = "pending") -> int:
        """``eth_getTransactionCount``: the next nonce (``pending`` counts the node's pool)."""
        ident = hex(block) if isinstance(block, int) else block
        return _int(self.request("eth_getTransactionCount", [address, ident]))

    def max_priority_fee(self) -> int | None:
        """``eth_maxPriorityFeePerGas``, or None when the node does not support it."""
        try:
            return _int(self.request("eth_maxPriorityFeePerGas"))
        except PermanentError:
            return None

    def call(self, tx: dict[str, Any], block: BlockId = "latest") -> bytes:
        """``eth_call``; raises :class:`CallRevertedError` on revert."""
        ident = hex(block) if isinstance(block, int) else block
        result = self.request("eth_call", [_tx_params(tx), ident])
        return bytes.fromhex(str(result or "0x")[2:])

    def estimate_gas(self, tx: dict[str, Any]) -> int:
        """``eth_estimateGas``; raises :class:`CallRevertedError` on revert."""
        return _int(self.request("eth_estimateGas", [_tx_params(tx)]))

    def send_raw(self, raw: bytes) -> str:
        """``eth_sendRawTransaction``; raises :class:`TxPoolRejection` when the node refuses it."""
        return str(self.request("eth_sendRawTransaction", ["0x" + raw.hex()]))

    def receipt(self, tx_hash: str) -> Receipt | None:
        """The receipt, or None while the transaction is not mined (or unknown)."""
        return _parse_receipt(self.request("eth_getTransactionReceipt", [tx_hash]))

    def receipts(self, tx_hashes: Sequence[str]) -> list[Receipt | None]:
        """Several receipts (None where not mined), in one JSON-RPC batch."""
        if len(tx_hashes) == 1:
            return [self.receipt(tx_hashes[0])]
        out: list[Receipt | None] = []
        for result in self.batch([("eth_getTransactionReceipt", [h]) for h in tx_hashes]):
            if isinstance(result, Exception):
                raise result
            out.append(_parse_receipt(result))
        return out

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        """The transaction as the node knows it (pool or chain), or None."""
        raw = self.request("eth_getTransactionByHash", [tx_hash])
        return dict(raw) if raw else None


def _parse_block(raw: Any) -> BlockHeader | None:
    if not raw:
        return None
    base = raw.get("baseFeePerGas")
    return BlockHeader(
        number=_int(raw.get("number")),
        hash=str(raw.get("hash")),
        base_fee=_int(base) if base is not None else None,
        gas_limit=_int(raw.get("gasLimit")),
        timestamp=_int(raw.get("timestamp")),
    )


def _parse_receipt(raw: Any) -> Receipt | None:
    if not raw or raw.get("blockHash") is None:
        return None
    return Receipt(
        tx_hash=str(raw["transactionHash"]),
        block_number=_int(raw["blockNumber"]),
        block_hash=str(raw["blockHash"]),
        gas_used=_int(raw.get("gasUsed")),
        effective_gas_price=_int(raw.get("effectiveGasPrice")),
        status=_int(raw.get("status", "0x1")),
        logs=tuple(raw.get("logs") or ()),
    )


def _tx_params(tx: dict[str, Any]) -> dict[str, Any]:
    """JSON-RPC call object: ints as hex quantities, bytes as hex data."""
    out: dict[str, Any] = {}
    for key, value in tx.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, int):
            out[key] = hex(value)
        elif isinstance(value, (bytes, bytearray)):
            out[key] = "0x" + bytes(value).hex()
        else:
            out[key] = value
    return out
