"""Wait for a condition with a deadline, instead of sleeping a fixed time and then looking.

    job = eventually(lambda: store.get_by_key(key), 20, "the job to be queued")

A fixed ``time.sleep`` before an assertion fails on a slow or busy machine (too short) and wastes time on a fast
one (too long); polling a function until a deadline does neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    fn: Callable[[], T], timeout: float = 10.0, what: str | None = None, *, interval: float = 0.02
) -> T:
    """Call ``fn`` every ``interval`` seconds until it returns something truthy; return that value.

    It is called at least once, and a last time at the deadline. Exceptions it raises propagate at once.

    Args:
        fn: What to call.
        timeout: Seconds until it gives up.
        what: What is awaited, for the failure message (default: ``fn``'s name).
        interval: Seconds between calls.

    Raises:
        AssertionError: ``timeout`` seconds went by; the message names what was awaited and the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        final = time.monotonic() >= deadline
        value = fn()
        if value:
            return value
        if final:
            name = what or getattr(fn, "__qualname__", repr(fn))
            raise AssertionError(f"timed out after {timeout:g} s waiting for {name}; last value: {value!r}")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
