"""The one place the watcher talks JSON-RPC: retries, rate limits, error classification and metrics.

:class:`RpcClient` wraps a web3.py ``Web3`` over HTTP (with web3's own retries turned off, so there is exactly
one retry policy). Every call goes through :meth:`RpcClient.call`, which

* spaces requests out to at most ``max_rps`` per second (client-side rate limit);
* retries timeouts, connection failures, HTTP 5xx and rate limits (HTTP 429 / rate-limit errors, honouring
  ``Retry-After``) with exponential back-off and jitter;
* turns a refused ``eth_getLogs`` range (more than N results, range too wide, -32005, HTTP 413) into
  :class:`RangeTooLargeError` at once, without retrying, so the caller can split the range;
* raises :class:`RpcUnavailableError` (a :class:`~agent.errors.BackendUnavailableError`) naming the URL once
  retries are spent;
* counts requests, errors by kind and retries in Prometheus metrics.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import requests
from prometheus_client import Counter, Histogram
from web3 import Web3
from web3.exceptions import BlockNotFound, Web3RPCError

from agent.watch.errors import RangeTooLargeError, RateLimitedError, RpcError, RpcUnavailableError
from agent.watch.events import BlockRef

T = TypeVar("T")
log = logging.getLogger("chrysalis.watch.rpc")

RPC_REQUESTS = Counter(
    "chrysalis_rpc_requests_total", "JSON-RPC requests sent (retries included)", ["method"]
)
RPC_ERRORS = Counter(
    "chrysalis_rpc_errors_total",
    "JSON-RPC requests that failed, by kind: timeout, connection, http_5xx, http_4xx, rate_limited, "
    "range_refused, rpc_error, bad_response",
    ["method", "kind"],
)
RPC_RETRIES = Counter(
    "chrysalis_rpc_retries_total", "JSON-RPC requests retried after a transient error", ["method"]
)
RPC_SECONDS = Histogram("chrysalis_rpc_request_seconds", "JSON-RPC request latency", ["method"])

_RANGE_REFUSALS = re.compile(
    r"more than \d+ results|block range|range (is )?too (large|wide|big)|too many (results|logs|blocks)"
    r"|exceed(ed|s)? .*(range|limit|results|size)|response size|limit exceeded|query timeout|returned more than",
    re.IGNORECASE,
)
_RATE_LIMITS = re.compile(r"rate.?limit|too many requests|request count|capacity|throughput", re.IGNORECASE)


def hex0x(value: bytes | str) -> str:
    """Lower-case ``0x`` hex of bytes or a hex string."""
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


class _Pacer:
    """At most ``rate`` requests per second across threads (evenly spaced)."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


class _Transient(Exception):
    """Internal: a failure worth retrying; ``kind`` labels the metric, ``retry_after`` comes from the provider."""

    def __init__(
        self, kind: str, reason: str, retry_after: float | None = None, code: int | None = None
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retry_after = retry_after
        self.code = code


class RpcClient:
    """A JSON-RPC client for one HTTP endpoint with retries, rate limiting and metrics.

    Args:
        url: HTTP(S) endpoint.
        timeout_s: Per-request timeout.
        retries: Extra attempts after a transient failure (so ``retries + 1`` requests at most).
        backoff_s: First retry delay; doubles per retry, with jitter, up to ``max_backoff_s``.
        max_rps: Client-side limit on requests per second (``None``: unlimited).
        sleep: Injected for tests.
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
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._pacer = _Pacer(max_rps)
        self._rng = random.Random()
        provider = Web3.HTTPProvider(
            url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )
        self.w3 = Web3(provider)

    @classmethod
    def from_settings(cls, chain: Any) -> RpcClient:
        """A client configured from :class:`agent.settings.ChainSettings`."""
        return cls(
            chain.rpc_url, timeout_s=chain.rpc_timeout_s, retries=chain.rpc_retries, max_rps=chain.rpc_max_rps
        )

    # -- the one call path ----------------------------------------------------------------------------------

    def call(self, method: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one request named ``method``) with pacing, retries, classification and metrics."""
        attempt = 0
        while True:
            attempt += 1
            self._pacer.wait()
            RPC_REQUESTS.labels(method).inc()
            started = time.monotonic()
            try:
                try:
                    return fn()
                finally:
                    RPC_SECONDS.labels(method).observe(time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - classified right here, the only place that does
                failure = self._classify(method, exc)
            if attempt > self.retries:
                raise self._give_up(method, failure, attempt)
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (
                0.5 + self._rng.random() / 2
            )
            if failure.retry_after is not None:
                delay = max(delay, min(failure.retry_after, 60.0))
            RPC_RETRIES.labels(method).inc()
            log.info("RPC %s %s failed (%s), retry %d/%d in %.2f s", self.url, method, failure.reason, attempt,
                     self.retries, delay)  # fmt: skip
            self._sleep(delay)

    def _classify(self, method: str, exc: Exception) -> _Transient:
        """Return a retryable failure, or raise the error that ends the call."""

        def count(kind: str) -> None:
            RPC_ERRORS.labels(method, kind).inc()

        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            body = (exc.response.text or "")[:300]
            if status == 413 or (status in (400, 422) and _RANGE_REFUSALS.search(body)):
                count("range_refused")
                raise RangeTooLargeError(self.url, method, status, f"HTTP {status} {body}".strip()) from exc
            if status == 429:
                count("rate_limited")
                return _Transient("rate_limited", "HTTP 429", _retry_after(exc.response), code=429)
            if status >= 500:
                count("http_5xx")
                return _Transient("http_5xx", f"HTTP {status}", code=status)
            count("http_4xx")
            raise RpcError(self.url, method, status, f"HTTP {status} {body}".strip(),
                           hint="check the URL and any API key in chain.rpc_url") from exc  # fmt: skip
        if isinstance(exc, requests.exceptions.Timeout):
            count("timeout")
            return _Transient("timeout", f"timed out: {exc}")
        if isinstance(exc, requests.exceptions.ConnectionError):
            count("connection")
            return _Transient("connection", f"cannot connect: {_root(exc)}")
        if isinstance(exc, Web3RPCError):
            code, message = _rpc_error(exc)
            if (
                method == "eth_getLogs"
                and _RANGE_REFUSALS.search(message)
                and not _RATE_LIMITS.search(message)
            ):
                count("range_refused")
                raise RangeTooLargeError(self.url, method, code, message) from exc
            if code == 429 or _RATE_LIMITS.search(message):
                count("rate_limited")
                return _Transient("rate_limited", message, code=code)
            if method == "eth_getLogs" and code == -32005:
                count("range_refused")
                raise RangeTooLargeError(self.url, method, code, message) from exc
            count("rpc_error")
            raise RpcError(self.url, method, code, message) from exc
        if isinstance(exc, (ValueError, requests.exceptions.RequestException)) and not isinstance(
            exc, BlockNotFound
        ):
            count("bad_response")  # e.g. a proxy's HTML error page instead of JSON
            return _Transient("bad_response", f"unreadable response: {exc}")
        raise exc

    def _give_up(self, method: str, failure: _Transient, attempts: int) -> Exception:
        if failure.kind == "rate_limited":
            return RateLimitedError(self.url, method, failure.code, failure.reason, failure.retry_after)
        return RpcUnavailableError(self.url, method, failure.reason, attempts=attempts)

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


def _rpc_error(exc: Web3RPCError) -> tuple[int | None, str]:
    response = getattr(exc, "rpc_response", None) or {}
    error = response.get("error") if isinstance(response, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return (int(code) if isinstance(code, int) else None), str(error.get("message", ""))
    return None, str(getattr(exc, "user_message", None) or exc)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__
