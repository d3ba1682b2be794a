"""When a failed attempt runs again: exponential back-off with jitter and a cap, for a bounded number of tries;
which errors are worth another try (:func:`is_retryable`), and how an error is recorded (:func:`describe_error`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.errors import ChrysalisError


def describe_error(error: BaseException | str) -> str:
    """One line naming the error's type and message (and hint), as stored in ``last_error``/``reason``."""
    if isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}".replace("\n", " ").strip()


def is_retryable(error: BaseException | str) -> bool:
    """Chrysalis errors say so themselves; unknown exceptions are treated as transient (still bounded by
    ``max_attempts``); a plain string reason is permanent."""
    if isinstance(error, str):
        return False
    if isinstance(error, ChrysalisError):
        return error.retryable
    return isinstance(error, Exception)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with "equal jitter" and a cap.

    The delay after attempt ``n`` (1-based) is ``min(cap_s, base_s * factor ** (n - 1))``, shortened by a random
    fraction of at most ``jitter`` so that jobs failing together do not retry together. It never exceeds
    ``cap_s``. After ``max_attempts`` attempts a job fails for good.

    Attributes:
        max_attempts: Attempts (claims) before a job ends ``failed``; at least 1.
        base_s: Delay after the first failed attempt.
        factor: Growth per attempt.
        cap_s: Longest delay.
        jitter: Fraction in [0, 1] of the delay that is randomised away.
    """

    max_attempts: int = 5
    base_s: float = 5.0
    factor: float = 2.0
    cap_s: float = 600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1 (got {self.max_attempts})")
        if self.base_s < 0 or self.cap_s < 0 or self.factor < 1:
            raise ValueError("base_s and cap_s must be >= 0 and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1] (got {self.jitter})")

    def nominal_delay(self, attempt: int) -> float:
        """The delay after ``attempt`` before jitter (seconds)."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1 (got {attempt})")
        exponent = min(attempt - 1, 1024)  # float overflow guard; the cap applies long before
        return min(self.cap_s, self.base_s * self.factor**exponent)

    def delay(self, attempt: int, rng: random.Random | None = None, *, at_least: float = 0.0) -> float:
        """The jittered delay after ``attempt`` (seconds), within ``[(1 - jitter) * nominal, nominal]``.

        ``at_least`` (e.g. a provider's Retry-After) raises the result; the cap still applies.
        """
        nominal = self.nominal_delay(attempt)
        r = (rng or random).random()
        return min(self.cap_s, max(at_least, nominal * (1.0 - self.jitter * r)))

    def exhausted(self, attempts: int) -> bool:
        """Whether ``attempts`` attempts use up the budget."""
        return attempts >= self.max_attempts
