"""Retries, back-off and rate limits for every backend: the one place they live.

:class:`RetryPolicy` re-runs an operation that raised a :class:`~agent.errors.RetryableError`: it honours a
server's ``Retry-After`` (carried by :class:`~agent.errors.RateLimitedError`), otherwise backs off
exponentially with a cap, and gives up after a number of attempts or an overall deadline, re-raising the last
error. :class:`HttpClient` is httpx plus that policy: it turns unreachable hosts, 429 and 5xx into retryable
errors so that the backends only deal with answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from agent.errors import BackendUnavailableError, NotFoundError, RateLimitedError, RetryableError
from agent.ipfs.errors import BackendAuthError, BackendRequestError
from agent.redact import redact_text, redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest reply body :class:`HttpClient` reads (decoded); a longer one is refused, not held in memory."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one call.

    Attributes:
        attempts: tries for failures without ``Retry-After`` (unreachable, 5xx), the first included.
        base_delay: back-off before the second try; doubled each time, up to ``max_delay``.
        max_delay: cap on one back-off wait.
        deadline: give up once waiting again would pass this many seconds since the first try.
        rate_limited_attempts: tries allowed while a server keeps answering 429.
    """

    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    deadline: float = 120.0
    rate_limited_attempts: int = 30
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def backoff(self, failures: int) -> float:
        """Wait after the ``failures``-th consecutive failure (1-based)."""
        return min(self.max_delay, self.base_delay * (2 ** (failures - 1)))

    def run(self, operation: Callable[[], T], *, what: str = "request") -> T:
        """Call ``operation`` until it returns, retrying :class:`RetryableError` as described above."""
        started = time.monotonic()
        failures = rate_limited = 0
        while True:
            try:
                return operation()
            except RateLimitedError as exc:
                rate_limited += 1
                wait = exc.retry_after if exc.retry_after is not None else self.backoff(rate_limited)
                if rate_limited >= self.rate_limited_attempts:
                    raise
            except RetryableError:
                failures += 1
                wait = self.backoff(failures)
                if failures >= self.attempts:
                    raise
            if time.monotonic() - started + wait > self.deadline:
                raise
            log.info("%s failed; retrying in %.2f s", what, wait)
            self.sleep(wait)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpClient:
    """An httpx client for one service, with :class:`RetryPolicy` applied to every request.

    Transport failures and 5xx become :class:`BackendUnavailableError`, 429 a :class:`RateLimitedError`
    (both retried); 401/403 raise :class:`BackendAuthError`, 404 :class:`NotFoundError` and other 4xx
    :class:`BackendRequestError` (not retried). A body given as a callable is re-created for each try.
    """

    def __init__(
        self,
        base_url: str,
        *,
        service: str,
        token: str | None = None,
        policy: RetryPolicy | None = None,
        timeout: float = 30.0,
        auth_hint: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.service = service
        self.policy = policy or RetryPolicy()
        self.auth_hint = auth_hint
        self.max_response_bytes = max_response_bytes
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200, 201, 202),
        content: Callable[[], bytes | Iterator[bytes]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request (retried per the policy) and return a response whose status is in ``ok``."""
        url = f"{self.base_url}{path}"
        shown = (
            f"{redact_url(self.base_url)}{path}"  # messages: no token in the base URL's user info or query
        )

        def attempt() -> httpx.Response:
            try:
                request = self._client.build_request(
                    method, path, content=content() if content else None, **kwargs
                )
                response = self._read(request, shown)
            except httpx.TransportError as exc:
                raise BackendUnavailableError(
                    f"{self.service}: cannot reach {shown} "
                    f"({type(exc).__name__}: {redact_text(str(exc), self.base_url) or 'no detail'})",
                    hint=f"check that {redact_url(self.base_url)} is up and reachable from this machine",
                ) from exc
            if response.status_code == 429:
                raise RateLimitedError(
                    f"{self.service}: {method} {shown} was rate limited (429)",
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                )
            if response.status_code >= 500:
                raise BackendUnavailableError(
                    f"{self.service}: {method} {shown} answered {response.status_code}: {_reason(response)}",
                    hint="the service is failing; it will be retried",
                )
            return response

        response = self.policy.run(attempt, what=f"{self.service} {method} {path}")
        if response.status_code in ok:
            return response
        status, reason = response.status_code, _reason(response)
        if status in (401, 403):
            raise BackendAuthError(
                f"{self.service}: {method} {shown} was refused ({status}): {reason}",
                backend=self.service,
                url=url,
                hint=self.auth_hint,
            )
        if status == 404:
            raise NotFoundError(f"{self.service}: {method} {shown}: not found ({reason})")
        raise BackendRequestError(
            f"{self.service}: {method} {shown} answered {status}: {reason}",
            backend=self.service,
            status=status,
        )

    def _read(self, request: httpx.Request, shown: str) -> httpx.Response:
        """Send ``request`` and read its body, refusing (:class:`BackendRequestError`) one past the cap."""
        limit = self.max_response_bytes
        response = self._client.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():  # decoded: a small gzip bomb is caught too
                body += chunk
                if len(body) > limit:
                    raise BackendRequestError(
                        f"{self.service}: {request.method} {shown} answered more than {limit} bytes "
                        f"(HTTP {response.status_code}); the reply was not read",
                        backend=self.service,
                        status=response.status_code,
                        hint="the service is misbehaving (its replies are small JSON documents); "
                        "check its endpoint URL",
                    )
        finally:
            response.close()
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(response.status_code, headers=headers, content=bytes(body), request=request)

    def close(self) -> None:
        self._client.close()


def _reason(response: httpx.Response) -> str:
    """The Pinning Service API ``Failure`` reason/details, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        reason, details = error.get("reason", ""), error.get("details", "")
        return f"{reason}: {details}" if details else str(reason)
    return str(body)[:200]
