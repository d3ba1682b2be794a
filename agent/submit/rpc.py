"""The one client wrapper through which the submit stage talks to the node.

Cross-cutting RPC concerns live here and nowhere else: retries with backoff on transport failures (connection
errors, timeouts, HTTP 429/5xx, JSON-RPC "limit exceeded"), the ``RPC_ERRORS`` metric, and turning raw
JSON-RPC errors into Chrysalis errors (a revert becomes :class:`CallRevertedError` with its decoded data; a
rejected ``eth_sendRawTransaction`` becomes :class:`TxPoolRejection` with a machine-readable ``kind``).

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
from agent.metrics import RPC_ERRORS
from agent.submit.errors import CallRevertedError, ErrorDecoder, RpcError

log = logging.getLogger(__name__)

BlockId = int | Literal["latest", "pending", "earliest", "safe", "finalized"]

#: JSON-RPC error codes that mean "try again later" (EIP-1474 limit exceeded; some providers' rate limits).
_TRANSIENT_CODES = {-32005, 429}


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
    """

    def __init__(
        self,
        w3: Web3,
        *,
        retries: int = 3,
        backoff_s: float = 0.25,
        decoder: ErrorDecoder | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.w3 = w3
        self.retries = retries
        self.backoff_s = backoff_s
        self.decoder = decoder or ErrorDecoder()
        self._sleep = sleep
        self._chain_id: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, url: str, *, timeout_s: float = 30.0, **kwargs: Any) -> ChainRpc:
        """A wrapper over a fresh HTTP provider whose own retries are off (this class retries)."""
        provider = Web3.HTTPProvider(
            url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )
        return cls(Web3(provider), **kwargs)

    # -- core ---------------------------------------------------------------------------------------------

    def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Send one request and return its ``result``, retrying transport failures.

        Raises:
            CallRevertedError: the call reverted (``eth_call``, ``eth_estimateGas``).
            RpcError: transport failures outlasted the retries.
            PermanentError: any other JSON-RPC error (message kept; ``rpc_code`` attribute set).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
            except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as exc:
                self._transient(method, attempt, f"{type(exc).__name__}: {exc}")
                continue
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status == 429 or status >= 500:
                    self._transient(method, attempt, f"HTTP {status}")
                    continue
                RPC_ERRORS.labels(method=method, kind="rpc").inc()
                raise PermanentError(f"RPC {method} failed: HTTP {status}") from None
            error = reply.get("error") if isinstance(reply, dict) else None
            if error is None:
                return reply.get("result") if isinstance(reply, dict) else None
            self._raise_rpc_error(method, error, attempt)

    def _raise_rpc_error(self, method: str, error: Any, attempt: int) -> None:
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code = error.get("code")
        message = str(error.get("message", ""))
        data = error.get("data")
        if isinstance(data, dict):  # some nodes nest it: {"data": {"data": "0x..."}}
            data = data.get("data")
        if method in ("eth_call", "eth_estimateGas") and (code == 3 or "revert" in message.lower()):
            RPC_ERRORS.labels(method=method, kind="revert").inc()
            raise CallRevertedError(
                self.decoder.decode(data if isinstance(data, str) else None), method=method
            )
        if code in _TRANSIENT_CODES or "rate limit" in message.lower():
            self._transient(method, attempt, f"{code}: {message}")
            return
        RPC_ERRORS.labels(method=method, kind="rpc").inc()
        if method == "eth_sendRawTransaction":
            raise TxPoolRejection(classify_rejection(message), message)
        exc = PermanentError(f"RPC {method} failed: {message} (code {code})")
        exc.rpc_code = code  # type: ignore[attr-defined]
        raise exc

    def _transient(self, method: str, attempt: int, cause: str) -> None:
        RPC_ERRORS.labels(method=method, kind="transport").inc()
        if attempt > self.retries:
            raise RpcError(method, attempt, cause)
        delay = self.backoff_s * 2 ** (attempt - 1)
        log.warning("RPC %s failed (%s); retry %d/%d in %.2fs", method, cause, attempt, self.retries, delay)
        self._sleep(delay)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send several requests in one JSON-RPC batch; each item is its ``result`` or an exception instance.

        Falls back to one request each when the node refuses batches.
        """
        if not calls:
            return []
        attempt = 0
        while True:
            attempt += 1
            try:
                replies = self.w3.provider.make_batch_request([(m, list(p)) for m, p in calls])  # type: ignore
                break
            except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as exc:
                self._transient("batch", attempt, f"{type(exc).__name__}: {exc}")
            except (NotImplementedError, AttributeError, requests.HTTPError):
                replies = None
                break
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
                try:
                    self._raise_rpc_error(method, reply["error"], attempt=self.retries + 1)
                except Exception as exc:  # noqa: BLE001 - each item carries its own error
                    results.append(exc)
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
