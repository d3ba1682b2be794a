"""The one place the watcher talks JSON-RPC: retries, rate limits, error classification and metrics.

:class:`RpcClient` wraps a web3.py ``Web3`` over HTTP (with web3's own retries turned off, so there is exactly
one retry policy). Every call goes through :meth:`RpcClient.call`, which runs it in the shared
:class:`agent.jsonrpc.RetryLoop` (also behind the submit stage's :class:`~agent.submit.rpc.ChainRpc`):

* requests are spaced out to at most ``max_rps`` per second (client-side rate limit);
* timeouts, connection failures, HTTP 5xx and rate limits (HTTP 429 / rate-limit errors, honouring
  ``Retry-After``) are retried with exponential back-off and jitter;
* a refused ``eth_getLogs`` range (more than N results, range too wide, -32005, HTTP 413) becomes
  :class:`RangeTooLargeError` at once, without retrying, so the caller can split the range;
* once retries are spent it raises :class:`~agent.jsonrpc.RpcUnavailableError` (a
  :class:`~agent.errors.BackendUnavailableError`) naming the URL, or :class:`RpcRateLimitedError`;
* requests, errors by kind, retries and latency are counted in :data:`agent.metrics.REGISTRY` with
  ``client="watch"``.

What stays here is the web3.py call style (the pipeline's collection reader and the studio run contract views
through :attr:`RpcClient.w3`) and the watcher's own error types; see :mod:`agent.jsonrpc` for why the two
clients share only that core.

:attr:`RpcClient.w3` itself retries: its provider (:class:`RetryingHTTPProvider`) runs every request made outside
:meth:`RpcClient.call` (the oracles read through ``rpc.w3`` directly) through the same :class:`RetryLoop`, so a
502, a 429 or a dropped connection is retried there too, with the same back-off, ``Retry-After`` and metrics.
A JSON-RPC error that is final (a revert, an unknown block, a refused log range) is handed back to web3, which
raises its usual exceptions (``ContractLogicError``, ``Web3RPCError``); a failure that outlasts the retries raises
the errors :meth:`RpcClient.call` raises (:class:`~agent.jsonrpc.RpcUnavailableError`,
:class:`RpcRateLimitedError`, :class:`RpcError`). Inside :meth:`RpcClient.call` the provider sends each request
once: the call's loop retries, never both (:func:`agent.jsonrpc.in_retry_loop`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from web3 import HTTPProvider, Web3
from web3.exceptions import BlockNotFound
from web3.types import RPCEndpoint, RPCResponse

from agent.jsonrpc import (
    RetryLoop,
    RpcFailed,
    RpcReplyError,
    RpcUnavailableError,
    classify_exception,
    in_retry_loop,
)
from agent.metrics import RPC_ERRORS, RPC_REQUESTS, RPC_RETRIES, RPC_SECONDS
from agent.settings import ChainSettings
from agent.watch.errors import RangeTooLargeError, RpcError, RpcRateLimitedError
from agent.watch.events import BlockRef

T = TypeVar("T")

__all__ = [
    "RPC_ERRORS",
    "RPC_REQUESTS",
    "RPC_RETRIES",
    "RPC_SECONDS",
    "RetryingHTTPProvider",
    "RpcClient",
    "as_rpc_error",
    "hex0x",
    "rpc_errors",
]


def hex0x(value: bytes | str) -> str:
    """Lower-case ``0x`` hex of bytes or a hex string."""
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


def as_rpc_error(url: str, failed: RpcFailed) -> Exception:
    """The watcher's error for a request that failed for good (what :meth:`RpcClient.call` raises)."""
    f, method = failed.failure, failed.method
    if failed.exhausted:
        if f.kind == "rate_limited":
            return RpcRateLimitedError(url, method, f.code, f.message, f.retry_after)
        return RpcUnavailableError(url, method, f.message, attempts=failed.attempts)
    if f.kind == "range_refused":
        return RangeTooLargeError(url, method, f.code, f.message)
    if f.kind == "http_4xx":
        return RpcError(url, method, f.code, f.message, hint="check the URL and any API key in chain.rpc_url")
    return RpcError(url, method, f.code, f.message)


def rpc_errors(url: str, method: str, fn: Callable[[], T]) -> T:
    """``fn()`` (web3 calls), with its RPC failures as the watcher's errors, once, without retrying.

    For callers that hold a bare ``Web3`` (the oracles' :class:`~oracles.base.ReadContext`): over
    :attr:`RpcClient.w3` the provider has retried already and raises these errors itself; web3's exception for a
    final JSON-RPC error (a refused ``eth_getLogs`` range: :class:`RangeTooLargeError`), or a transport failure of
    another provider (:class:`~agent.jsonrpc.RpcUnavailableError`), is classified here like
    :meth:`RpcClient.call` would.
    Anything that is not an RPC failure (a revert's ``ContractLogicError``, ``BlockNotFound``) propagates unchanged.
    """
    try:
        return fn()
    except Exception as exc:
        failure = classify_exception(method, exc)
        if failure is None or failure.kind == "revert":
            raise
        raise as_rpc_error(url, RpcFailed(method, failure, 1, url=url)) from exc


class _FinalReply(RpcReplyError):
    """A JSON-RPC error reply, carried through the retry loop so that it is classified and counted once."""

    def __init__(self, reply: RPCResponse) -> None:
        self.reply = reply
        super().__init__(reply.get("error"))


class RetryingHTTPProvider(HTTPProvider):
    """web3's HTTP provider, with every request run through a :class:`~agent.jsonrpc.RetryLoop`.

    Retryable failures (timeouts, dropped connections, HTTP 5xx, HTTP 429 and rate-limit errors, -32005 outside
    ``eth_getLogs``, garbage replies) are retried with the loop's back-off, honouring ``Retry-After``, and counted
    once in the loop's metrics. A JSON-RPC error reply that is final is returned to web3 unchanged (web3 raises
    ``ContractLogicError`` for a revert, ``Web3RPCError`` for the rest, as without this provider). Failures that
    outlast the retries, and final HTTP refusals, raise :func:`as_rpc_error`'s errors.

    Inside another loop's request (:func:`~agent.jsonrpc.in_retry_loop`: :meth:`RpcClient.call`, or a
    ``ChainRpc`` over this provider) it sends once and lets everything propagate as a plain ``HTTPProvider``
    would: the outer loop classifies, retries and counts, so nothing is retried or counted twice.

    Args:
        endpoint_uri: The node's HTTP URL.
        loop: The retry loop (the client's, so that pacing and metrics are shared).
        timeout_s: Per-request timeout.
    """

    def __init__(self, endpoint_uri: str, loop: RetryLoop, *, timeout_s: float = 10.0) -> None:
        super().__init__(
            endpoint_uri, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )
        self.loop = loop

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        send_once = super().make_request
        if in_retry_loop():
            return send_once(method, params)

        def send() -> RPCResponse:
            reply = send_once(method, params)
            if isinstance(reply, Mapping) and reply.get("error") is not None:
                raise _FinalReply(reply)  # retried if the loop finds it retryable (a rate-limit message)
            return reply

        try:
            return self.loop.run(str(method), send)
        except RpcFailed as failed:
            cause = failed.__cause__
            if isinstance(cause, _FinalReply) and not failed.exhausted:
                return cause.reply  # web3 raises its own exception for it (ContractLogicError, Web3RPCError)
            raise as_rpc_error(self.loop.url, failed) from cause


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
        self.w3 = Web3(RetryingHTTPProvider(url, self._loop, timeout_s=timeout_s))
        """web3 over this client's endpoint; every request made through it is retried (see the module doc)."""

    @property
    def retries(self) -> int:
        """Extra attempts after a transient failure."""
        return self._loop.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self._loop.retries = value

    @classmethod
    def from_settings(cls, chain: ChainSettings) -> RpcClient:
        """A client configured from the ``[chain]`` settings (URL, timeout, retries, requests per second)."""
        return cls(
            chain.rpc_url, timeout_s=chain.rpc_timeout_s, retries=chain.rpc_retries, max_rps=chain.rpc_max_rps
        )

    # -- the one call path ----------------------------------------------------------------------------------

    def call(self, method: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one request named ``method``) with pacing, retries, classification and metrics.

        The requests ``fn`` makes through :attr:`w3` are sent once each by the provider (this loop retries
        ``fn``), so nothing is retried or counted twice.
        """
        try:
            return self._loop.run(method, fn)
        except RpcFailed as failed:
            raise self._error(failed) from failed.__cause__

    def _error(self, failed: RpcFailed) -> Exception:
        return as_rpc_error(self.url, failed)

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
        bloom = block.get("logsBloom")
        return BlockRef(
            int(block["number"]), hex0x(block["hash"]), hex0x(block["parentHash"]),
            logs_bloom=bytes(bloom) if bloom is not None else None,
        )  # fmt: skip

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
