"""Chrysalis' error hierarchy.

Every error the project raises on purpose derives from :class:`ChrysalisError`. It is split the way Ponder
splits indexing errors: a :class:`RetryableError` may succeed if the same thing is tried again later (an RPC
timeout, a busy pinning service), a :class:`PermanentError` will not (a bad config, a corrupt block, a reverted
transaction). Leaf errors carry structured fields and, where it fits, also inherit a builtin so callers that
catch ``ValueError`` or ``FileNotFoundError`` keep working (web3.py's pattern).

Messages name the problem *and* the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

EXIT_ERROR = 1
"""What ``chrysalis`` exits with after an error, unless a command chose another code (:func:`error_exit_code`)."""


class ChrysalisError(Exception):
    """Root of every error Chrysalis raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)


class RetryableError(ChrysalisError):
    """Trying the same operation again later may succeed."""

    retryable = True


class PermanentError(ChrysalisError):
    """Trying again will fail the same way; a person or a config change must act."""


class ConfigError(PermanentError, ValueError):
    """A configuration value is missing or invalid."""


class NotFoundError(PermanentError, LookupError):
    """Something that was asked for does not exist (a token, a CID, a deployment record, a model)."""


class IntegrityError(PermanentError):
    """Stored or received data does not match the hash that addresses it."""


class BackendUnavailableError(RetryableError, ConnectionError):
    """An external service (RPC, IPFS node, pinning service) could not be reached or answered 5xx."""


class RateLimitedError(RetryableError):
    """An external service asked us to slow down (HTTP 429, or a rate-limit error in its reply).

    The IPFS backends raise it as is (:mod:`agent.ipfs.backends.retry` waits and tries again); the watcher's RPC
    client raises its JSON-RPC flavour, :class:`agent.watch.errors.RpcRateLimitedError`, once retries ran out.

    Attributes:
        retry_after: Seconds the service asked us to wait, if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, hint=hint or "slow down; the request is retried after the wait")


def exit_code_of(exc: BaseException) -> int:
    """The exit code ``chrysalis`` ends with after ``exc`` (``EXIT_ERROR`` unless :func:`error_exit_code` set one)."""
    code = getattr(exc, "chrysalis_exit_code", EXIT_ERROR)
    return code if isinstance(code, int) else EXIT_ERROR


@contextmanager
def error_exit_code(code: int) -> Iterator[None]:
    """Make any error raised inside end ``chrysalis`` with ``code`` instead of 1 (``verify``: 3, since 1 there
    means a mismatch). The exception is re-raised unchanged, marked with the code."""
    try:
        yield
    except Exception as exc:
        try:
            exc.chrysalis_exit_code = code  # type: ignore[attr-defined]
        except AttributeError:  # an exception type without a __dict__: keep the default code
            pass
        raise
