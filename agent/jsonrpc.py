"""What the agent's two JSON-RPC clients share: failure classification, retries with back-off, pacing, metrics.

Two wrappers talk to the node, and they stay two because they call it differently and answer with different
errors:

* :class:`agent.watch.rpc.RpcClient` runs web3.py calls (``eth_getLogs``, blocks, contract views through
  ``w3.eth``): failures arrive as exceptions, and a refused log range must become
  :class:`~agent.watch.errors.RangeTooLargeError` so that the watcher can split it;
* :class:`agent.submit.rpc.ChainRpc` sends raw JSON-RPC (``provider.make_request``, batches) on the hot paths of
  the submit stage (receipts, nonces, raw sends): failures arrive as reply dicts, a revert must become
  :class:`~agent.submit.errors.CallRevertedError` with decoded data and a refused send a ``TxPoolRejection``.

Everything else was the same code twice and lives here, once: :func:`classify_exception` and
:func:`classify_error` name every failure (one vocabulary of kinds, :data:`KINDS`), :class:`RetryLoop` retries
the retryable ones with exponential back-off (optional jitter, ``Retry-After`` honoured), spaces requests to
``max_rps``, and counts requests, errors, retries and latency in :data:`agent.metrics.REGISTRY` under the
client's label (``chrysalis_rpc_errors{client="watch"|"submit", method, kind}``). A call that fails for good
raises :class:`RpcFailed`, which each wrapper turns into its own error types; a node that could not be reached
after every retry is the same error for both, :class:`RpcUnavailableError`.

Loops nest without doubling anything: while a :meth:`RetryLoop.run` request is in flight on a thread
(:func:`in_retry_loop`), a retrying transport underneath it (:class:`agent.watch.rpc.RetryingHTTPProvider`) sends
its request once and leaves classification, retries and metrics to the outer loop. So a call through
``RpcClient.call`` (or ``ChainRpc`` over the same provider) is retried by exactly one loop, and a bare call on
``RpcClient.w3`` (the oracles) by the provider's.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http.client import BadStatusLine, RemoteDisconnected
from typing import Any, TypeVar

import requests
from web3.exceptions import BadResponseFormat, BlockNotFound, TransactionNotFound, Web3RPCError

from agent.errors import BackendUnavailableError, ChrysalisError
from agent.metrics import RPC_ERRORS, RPC_REQUESTS, RPC_RETRIES, RPC_SECONDS
from agent.redact import HIDDEN_NOTE, redact_text, redact_url

T = TypeVar("T")
log = logging.getLogger("chrysalis.rpc")

KINDS = (
    "timeout",
    "connection",
    "http_5xx",
    "http_4xx",
    "rate_limited",
    "limit_exceeded",
    "range_refused",
    "revert",
    "rpc_error",
    "bad_response",
)
"""Every failure kind (the ``kind`` label of ``chrysalis_rpc_errors``). Retryable: ``timeout``, ``connection``,
``http_5xx``, ``rate_limited`` (HTTP 429, rate-limit messages), ``limit_exceeded`` (EIP-1474 -32005 outside
``eth_getLogs``), ``bad_response`` (not JSON: a proxy's error page). Final at once: ``http_4xx``,
``range_refused`` (``eth_getLogs`` range too large: split it), ``revert`` (``eth_call`` / ``eth_estimateGas``),
``rpc_error`` (any other JSON-RPC error)."""

RANGE_REFUSALS = re.compile(
    r"more than \d+ results|block range|range (is )?too (large|wide|big)|too many (results|logs|blocks)"
    r"|exceed(ed|s)? .*(range|limit|results|size)|response size|limit exceeded|query timeout|returned more than",
    re.IGNORECASE,
)
"""Provider messages that refuse an ``eth_getLogs`` range (geth, Alchemy, Infura, QuickNode, ... wordings)."""

RATE_LIMITS = re.compile(r"rate.?limit|too many requests|request count|capacity|throughput", re.IGNORECASE)
"""Provider messages that mean "slow down"."""


@dataclass(frozen=True)
class RpcFailure:
    """One failed request, classified.

    Attributes:
        kind: One of :data:`KINDS`.
        message: What went wrong, for logs and error messages (``HTTP 503``, ``cannot connect: ...``, the node's
            JSON-RPC message).
        retryable: Whether the same request may succeed later.
        code: The JSON-RPC error code, or the HTTP status for HTTP-level failures.
        data: The JSON-RPC error's ``data`` (revert data of a failed call), unwrapped when nested.
        retry_after: Seconds the provider asked to wait (HTTP ``Retry-After``).
    """

    kind: str
    message: str
    retryable: bool
    code: int | None = None
    data: Any = None
    retry_after: float | None = None


@dataclass(frozen=True)
class RetryNotice:
    """A request failed and will be tried again (what :class:`RetryLoop`'s ``on_retry`` receives).

    Attributes:
        url: The endpoint, redacted (scheme and host). method: The JSON-RPC method. failure: What went wrong.
        attempt: The attempt that failed (1-based). attempts: The most attempts that will be made.
        delay_s: Seconds until the next attempt.
    """

    url: str
    method: str
    failure: RpcFailure
    attempt: int
    attempts: int
    delay_s: float

    def __str__(self) -> str:
        reason = " ".join(self.failure.message.split())  # one line, whatever the library said
        return (
            f"waiting for the node at {self.url}: {self.method} {_short(reason, 100)} "
            f"(attempt {self.attempt}/{self.attempts}); trying again in {self.delay_s:.1f} s"
        )


class RpcReplyError(Exception):
    """A JSON-RPC reply carried an ``error`` object (raised inside a raw call so that :class:`RetryLoop`
    classifies it like any other failure)."""

    def __init__(self, error: Any) -> None:
        self.error = error if isinstance(error, Mapping) else {"message": str(error)}
        super().__init__(str(self.error.get("message", "")))


class RpcFailed(Exception):
    """A request failed for good: not retryable, or retries spent. Each client turns it into its own error.

    Its message shows the endpoint redacted (:func:`agent.redact.redact_url`: scheme and host only).

    Attributes:
        method: The JSON-RPC method. failure: The last failure. attempts: Requests made.
        url: The endpoint (None when not known; as configured, never shown).
    """

    def __init__(self, method: str, failure: RpcFailure, attempts: int, *, url: str | None = None) -> None:
        self.method = method
        self.failure = failure
        self.attempts = attempts
        self.url = url
        where = f"RPC {redact_url(url)}: " if url else ""
        reason = redact_text(failure.message, url)
        super().__init__(f"{where}{method} failed after {attempts} attempt(s): {reason}")

    @property
    def exhausted(self) -> bool:
        """True when a retryable failure outlasted the retries (False: it was final at once)."""
        return self.failure.retryable


class RpcUnavailableError(BackendUnavailableError):
    """The node could not be reached, timed out or answered 5xx, after every retry (what both clients raise then;
    the submit client, which does not tell rate limits apart, also for an HTTP 429 that outlasted the retries).

    The message shows the endpoint as scheme and host only (:func:`agent.redact.redact_url`): a provider's API
    key in its path or query never reaches a log or a page.

    Attributes:
        url: The endpoint (as configured: never put it in a message, use ``redact_url``).
        method: The JSON-RPC method that failed.
        attempts: Requests made.
        rpc_kind: The last failure's kind (:data:`KINDS`: ``timeout``, ``connection``, ...), None when not known.
    """

    def __init__(
        self,
        url: str,
        method: str,
        reason: str,
        *,
        attempts: int,
        hint: str | None = None,
        rpc_kind: str | None = None,
    ) -> None:
        self.url = url
        self.method = method
        self.attempts = attempts
        self.rpc_kind = rpc_kind
        shown = redact_url(url)
        note = f"; {HIDDEN_NOTE}" if shown != url else ""
        super().__init__(
            f"RPC {shown} unavailable: {method} failed {attempts} time(s): {redact_text(reason, url)}",
            hint=redact_text(hint, url)
            if hint
            else f"is the node running and reachable at {shown}? check chain.rpc_url (CHRYSALIS_CHAIN__RPC_URL)"
            + note,
        )


def classify_http(status: int, body: str = "", retry_after: float | None = None) -> RpcFailure:
    """An HTTP-level refusal (the reply was not a JSON-RPC answer)."""
    text = f"HTTP {status} {body[:300]}".strip()
    if status == 413 or (status in (400, 422) and RANGE_REFUSALS.search(body)):
        return RpcFailure("range_refused", text, False, code=status)
    if status == 429:
        return RpcFailure("rate_limited", "HTTP 429", True, code=429, retry_after=retry_after)
    if status >= 500:
        return RpcFailure("http_5xx", f"HTTP {status}", True, code=status)
    return RpcFailure("http_4xx", text, False, code=status)


def classify_error(method: str, error: Any) -> RpcFailure:
    """A JSON-RPC ``error`` object in a reply (``{"code": ..., "message": ..., "data": ...}``)."""
    if not isinstance(error, Mapping):
        error = {"message": str(error)}
    raw_code = error.get("code")
    code = int(raw_code) if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    message = str(error.get("message", ""))
    data = error.get("data")
    if isinstance(data, Mapping):  # some nodes nest it: {"data": {"data": "0x..."}}
        data = data.get("data")
    if method in ("eth_call", "eth_estimateGas") and (code == 3 or "revert" in message.lower()):
        return RpcFailure("revert", message, False, code=code, data=data)
    if method == "eth_getLogs" and RANGE_REFUSALS.search(message) and not RATE_LIMITS.search(message):
        return RpcFailure("range_refused", message, False, code=code)
    if code == 429 or RATE_LIMITS.search(message):
        return RpcFailure("rate_limited", message, True, code=code)
    if code == -32005:  # EIP-1474 "limit exceeded"
        if method == "eth_getLogs":
            return RpcFailure("range_refused", message, False, code=code)
        return RpcFailure("limit_exceeded", f"{message} (code -32005)", True, code=code)
    return RpcFailure("rpc_error", message, False, code=code, data=data)


def classify_exception(method: str, exc: BaseException) -> RpcFailure | None:
    """A failure raised by a request (requests, web3.py, a raw reply's :class:`RpcReplyError`), classified.

    Returns None for exceptions that are not RPC failures (a ChrysalisError from the caller's own code, web3's
    "no such block/transaction" answers, contract-logic errors): the caller re-raises those unchanged.
    """
    if isinstance(exc, ChrysalisError | BlockNotFound | TransactionNotFound):
        return None
    if isinstance(exc, RpcReplyError):
        return classify_error(method, exc.error)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        response = exc.response
        return classify_http(response.status_code, response.text or "", _retry_after(response.headers))
    if isinstance(exc, requests.Timeout | TimeoutError):
        return RpcFailure("timeout", f"timed out: {exc}", True)
    if isinstance(exc, requests.ConnectionError | ConnectionError):
        root = _root_exc(exc)
        if isinstance(root, BadStatusLine) and not isinstance(root, RemoteDisconnected):
            return RpcFailure(
                "bad_response", f"the reply is not HTTP: {_short(repr(str(root).strip()))}", True
            )
        return RpcFailure("connection", f"cannot connect: {_root(exc)}", True)
    if isinstance(exc, BadResponseFormat):  # JSON, but not a JSON-RPC reply
        return RpcFailure("bad_response", f"not a JSON-RPC reply: {_short(str(exc))}", True)
    if isinstance(exc, Web3RPCError):
        response = getattr(exc, "rpc_response", None)
        error = response.get("error") if isinstance(response, Mapping) else None
        if not isinstance(error, Mapping):
            error = {"message": str(getattr(exc, "user_message", None) or exc)}
        return classify_error(method, error)
    if isinstance(exc, ValueError | requests.RequestException):  # e.g. an HTML page: not JSON
        return RpcFailure("bad_response", f"not a JSON-RPC reply: {_short(str(exc))}", True)
    return None


def describe_reply(url: str, timeout_s: float = 5.0) -> str:
    """What ``url`` answers to a JSON-RPC request, in a few words, for an error message about an endpoint that
    does not speak JSON-RPC: ``HTTP 200 text/html: '<!doctype html>...'``, ``a reply that is not HTTP:
    'SSH-2.0-...'``, or why there was no answer. Sends one ``eth_chainId`` (no retries); the URL itself is not
    in the text.
    """
    request = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    try:
        response = requests.post(url, json=request, timeout=timeout_s)
    except requests.Timeout:
        return f"no answer within {timeout_s:g} s"
    except requests.RequestException as exc:
        root = _root_exc(exc)
        if isinstance(root, BadStatusLine) and not isinstance(root, RemoteDisconnected):
            return f"a reply that is not HTTP: {_short(repr(str(root).strip()))}"
        return f"no answer: {_short(_root(exc))}"
    kind = response.headers.get("Content-Type", "no Content-Type").split(";")[0].strip()
    body = response.content[:80].decode("utf-8", "replace")
    return f"HTTP {response.status_code} {kind}: {body!r}" + ("..." if len(response.content) > 80 else "")


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_nesting = threading.local()


def in_retry_loop() -> bool:
    """Whether this thread is inside a :meth:`RetryLoop.run` request: the outer loop owns retries and metrics,
    so a retrying transport underneath must send once and let failures propagate unchanged."""
    return getattr(_nesting, "depth", 0) > 0


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


class RetryLoop:
    """Runs one request at a time with pacing, classification, retries and metrics.

    Args:
        client: The metrics label (``watch``, ``submit``).
        url: The endpoint (logged redacted: scheme and host only).
        retries: Extra attempts after a retryable failure (``retries + 1`` requests at most).
        backoff_s: First wait; doubles per retry up to ``max_backoff_s``.
        jitter: Scale each wait by a random factor in [0.5, 1) (spreads retries of many workers).
        max_rps: Client-side limit on requests per second (None: unlimited).
        sleep: Injected for tests.
        on_retry: Called before each wait with a :class:`RetryNotice` (a short command prints "waiting for the
            node ..." with it, so that a hanging node is never a silent wait).
    """

    def __init__(
        self,
        client: str,
        url: str,
        *,
        retries: int,
        backoff_s: float,
        max_backoff_s: float = 8.0,
        jitter: bool = True,
        max_rps: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> None:
        self.client = client
        self.url = url
        self.on_retry = on_retry
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter
        self.sleep = sleep
        self._pacer = _Pacer(max_rps)
        self._rng = random.Random()

    def run(
        self,
        method: str,
        fn: Callable[[], T],
        classify: Callable[[str, BaseException], RpcFailure | None] = classify_exception,
    ) -> T:
        """``fn()`` (one request named ``method``), retried while its failures are retryable.

        Raises:
            RpcFailed: the request failed for good (``exhausted`` tells retries-spent from final-at-once).
            Exception: anything ``classify`` does not recognise, unchanged.
        """
        attempt = 0
        while True:
            attempt += 1
            self._pacer.wait()
            RPC_REQUESTS.labels(client=self.client, method=method).inc()
            started = time.monotonic()
            _nesting.depth = getattr(_nesting, "depth", 0) + 1
            try:
                try:
                    return fn()
                finally:
                    _nesting.depth -= 1
                    RPC_SECONDS.labels(client=self.client, method=method).observe(time.monotonic() - started)
            except Exception as exc:  # classified here, the one place that does
                failure = classify(method, exc)
                if failure is None:
                    raise
                # requests and urllib3 quote the URL (or its path and query) in their messages: hide the key
                failure = replace(failure, message=redact_text(failure.message, self.url))
                RPC_ERRORS.labels(client=self.client, method=method, kind=failure.kind).inc()
                if not failure.retryable or attempt > self.retries:
                    raise RpcFailed(method, failure, attempt, url=self.url) from exc
            delay = self.delay(attempt, failure.retry_after)
            RPC_RETRIES.labels(client=self.client, method=method).inc()
            log.info("RPC %s %s failed (%s), retry %d/%d in %.2f s", redact_url(self.url), method,
                     failure.message, attempt, self.retries, delay)  # fmt: skip
            if self.on_retry is not None:
                self.on_retry(
                    RetryNotice(redact_url(self.url), method, failure, attempt, self.retries + 1, delay)
                )
            self.sleep(delay)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``attempt`` (1-based)."""
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        if self.jitter:
            delay *= 0.5 + self._rng.random() / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, 60.0))
        return delay


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _root_exc(exc: BaseException) -> BaseException:
    """The innermost cause of ``exc`` (requests wraps urllib3, which wraps http.client / socket errors)."""
    seen: set[int] = set()
    while (exc.__cause__ is not None or exc.__context__ is not None) and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def _root(exc: BaseException) -> str:
    root = _root_exc(exc)
    return str(root) or type(root).__name__
