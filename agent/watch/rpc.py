"""The one place the watcher talks JSON-RPC: retries, rate limits, error classification and metrics.

:class:`RpcClient` wraps a web3.py ``Web3`` over HTTP (with web3's own retries turned off, so there is exactly
one retry policy). Every call goes through :meth:`RpcClient.call`, which runs it in the shared
:class:`agent.jsonrpc.RetryLoop` (also behind the submit stage's :class:`~agent.submit.rpc.ChainRpc`):

* requests are spaced out to at most ``max_rps`` per second (client-side rate limit);
* timeouts, connection failures, HTTP 5xx and rate limits (HTTP 429 / rate-limit errors, honouring
  ``Retry-After``) are retried with exponential back-off and jitter;
* a refused ``eth_getLogs`` range (more than N results, range too wide, -32005, HTTP 413) becomes
  :class:`RangeTooLargeError` at once, without retrying, so the caller can split the range;
* once retries are spent it raises :class:`RpcUnavailableError` (a :class:`~agent.errors.BackendUnavailableError`)
  naming the URL, or :class:`RateLimitedError`;
* requests, errors by kind, retries and latency are counted in :data:`agent.metrics.REGISTRY` with
  ``client="watch"``.

What stays here is the web3.py call style (the pipeline's collection reader and the studio run contract views
through :attr:`RpcClient.w3`) and the watcher's own error types; see :mod:`agent.jsonrpc` for why the two
clients share only that core.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from web3 import Web3
from web3.exceptions import BlockNotFound

from agent.jsonrpc import RetryLoop, RpcFailed
from agent.metrics import RPC_ERRORS, RPC_REQUESTS, RPC_RETRIES, RPC_SECONDS
from agent.watch.errors import RangeTooLargeError, RateLimitedError, RpcError, RpcUnavailableError
from agent.watch.events import BlockRef

T = TypeVar("T")

__all__ = ["RPC_ERRORS", "RPC_REQUESTS", "RPC_RETRIES", "RPC_SECONDS", "RpcClient", "hex0x"]


def hex0x(value: bytes | str) -> str:
    """Lower-case ``0x`` hex of bytes or a hex string."""
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


class RpcClient:
    """A JSON-RPC client for one HTTP endpoint with retries, rate limiting and metrics.

    Args:
        url: HTTP(S) endpoint.
        timeout_s: Per-request timeout.
        retries: Extra attempts after a transient failure (so ``retries + 1`` requests at most).
        backoff_s: First retry delay; doubles per retry, with jitter, up to ``max_backoff_s``.
        max_rps: Client-side limit on requests per second (``None``: unlimited).
        sleep: Injected for tests.
        client: The ``client`` label of the RPC metrics.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 4,
        backoff_s: float = 0.25,
        max_backoff_s: float = 8.0,
        max_rps: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        client: str = "watch",
    ) -> None:
        self.url = url
        self._loop = RetryLoop(
            client, url, retries=retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s, max_rps=max_rps,
            sleep=sleep,
        )  # fmt: skip
        provider = Web3.HTTPProvider(
            url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )
        self.w3 = Web3(provider)

    @property
    def retries(self) -> int:
        """Extra attempts after a transient failure."""
        return self._loop.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self._loop.retries = value

    @classmethod
    def from_settings(cls, chain: Any) -> RpcClient:
        """A client configured from :class:`agent.settings.ChainSettings`."""
        return cls(
            chain.rpc_url, timeout_s=chain.rpc_timeout_s, retries=chain.rpc_retries, max_rps=chain.rpc_max_rps
        )

    # -- the one call path ----------------------------------------------------------------------------------

    def call(self, method: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one request named ``method``) with pacing, retries, classification and metrics."""
        try:
            return self._loop.run(method, fn)
        except RpcFailed as failed:
            raise self._error(failed) from failed.__cause__

    def _error(self, failed: RpcFailed) -> Exception:
        f, method = failed.failure, failed.method
        if failed.exhausted:
            if f.kind == "rate_limited":
                return RateLimitedError(self.url, method, f.code, f.message, f.retry_after)
            return RpcUnavailableError(self.url, method, f.message, attempts=failed.attempts)
        if f.kind == "range_refused":
            return RangeTooLargeError(self.url, method, f.code, f.message)
        if f.kind == "http_4xx":
            return RpcError(self.url, method, f.code, f.message,
                            hint="check the URL and any API key in chain.rpc_url")  # fmt: skip
        return RpcError(self.url, method, f.code, f.message)

    # -- typed helpers --------------------------------------------------------------------------------------

    def chain_id(self) -> int:
        return int(self.call("eth_chainId", lambda: self.w3.eth.chain_id))

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber", lambda: self.w3.eth.block_number))

    def get_block(self, number: int) -> BlockRef | None:
        """The block at ``number`` (``None`` if the node has no such block yet)."""

        def fetch() -> Any:
            try:
                return self.w3.eth.get_block(number)
            except BlockNotFound:
                return None

        block = self.call("eth_getBlockByNumber", fetch)
        if block is None:
            return None
        return BlockRef(int(block["number"]), hex0x(block["hash"]), hex0x(block["parentHash"]))

    def get_code(self, address: str) -> bytes:
        """The contract code at ``address`` at the head (empty: no contract there)."""
        return bytes(
            self.call("eth_getCode", lambda: self.w3.eth.get_code(Web3.to_checksum_address(address)))
        )

    def get_logs(
        self,
        from_block: int,
        to_block: int,
        address: str | Sequence[str],
        topics: Sequence[Any] | None = None,
    ) -> list[dict[str, Any]]:
        """``eth_getLogs`` over ``[from_block, to_block]``, as plain dicts with lower-case hex strings."""
        params: dict[str, Any] = {"fromBlock": from_block, "toBlock": to_block, "address": address}
        if topics:
            params["topics"] = topics
        raw = self.call("eth_getLogs", lambda: self.w3.eth.get_logs(params))  # type: ignore[arg-type]
        return [_plain_log(entry) for entry in raw]


def _plain_log(entry: Any) -> dict[str, Any]:
    return {
        "address": Web3.to_checksum_address(entry["address"]),
        "topics": [hex0x(t) for t in entry["topics"]],
        "data": hex0x(entry["data"]),
        "blockNumber": int(entry["blockNumber"]),
        "blockHash": hex0x(entry["blockHash"]),
        "transactionHash": hex0x(entry["transactionHash"]),
        "logIndex": int(entry["logIndex"]),
        "removed": bool(entry.get("removed", False)),
    }
