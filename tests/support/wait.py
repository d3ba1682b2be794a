"""Wait for a condition with a deadline, instead of sleeping a fixed time and then looking.

    job = wait_until(lambda: store.get_by_key(key), timeout=20, message="the job to be queued")

A fixed ``time.sleep`` before an assertion fails on a slow or busy machine (too short) and wastes time on a fast
one (too long); polling a predicate until a deadline does neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | None = None,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; return that value.

    It is called at least once, and a last time at the deadline. Exceptions it raises propagate at once.

    Raises:
        AssertionError: ``timeout`` seconds went by. The message names what was awaited (``message``, else the
            predicate's name) and the last value the predicate returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        final = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if final:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last value: {value!r}")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
