"""The studio's limits on what one client may cost it: failed logins, Verify runs and live-update streams.

All of it is kept in memory (a restart forgets it) and bounded: each table keeps at most ``max_keys`` entries, and
the oldest is forgotten first. Keys are client addresses (``request.client.host``: behind a reverse proxy on the
same machine uvicorn takes it from ``X-Forwarded-For``) and, for logins, account names.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Exponential backoff with a temporary lockout, per client address and per account name.

    Every attempt counts as a failure from the moment it starts (so parallel guesses are throttled too) until
    :meth:`succeeded` clears it. The ``free``-th failure locks the key for ``base_s``, each further one twice as
    long as the one before, up to ``max_s``. A key is forgotten ``max_s`` after its last failure.

    Example::

        throttle = LoginThrottle(free=5, max_s=900)
        wait = throttle.wait(ip=ip, name=name)   # > 0: refuse (429, Retry-After: ceil(wait))
        throttle.attempt(ip=ip, name=name)       # before checking the password
        throttle.succeeded(ip=ip, name=name)     # when it was right
    """

    def __init__(
        self,
        *,
        free: int = 5,
        max_s: float = 900.0,
        base_s: float = 1.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.max_s, self.base_s, self.max_keys = free, max_s, base_s, max_keys
        self.clock = clock
        # separate tables: names cannot push addresses out (and the reverse)
        self._tables: dict[str, OrderedDict[str, _Failures]] = {"ip": OrderedDict(), "name": OrderedDict()}
        self._lock = threading.Lock()

    def wait(self, *, ip: str, name: str) -> float:
        """Seconds until ``ip`` may try ``name`` again (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [
                entry.locked_until - now
                for kind, key in (("ip", ip), ("name", name))
                if (entry := self._tables[kind].get(key)) is not None
            ]
        return max([0.0, *waits])

    def attempt(self, *, ip: str, name: str) -> None:
        """Count an attempt as a failure (until :meth:`succeeded`)."""
        now = self.clock()
        with self._lock:
            for kind, key in (("ip", ip), ("name", name)):
                table = self._tables[kind]
                entry = table.pop(key, None)
                if entry is None or now - entry.last > self.max_s:
                    entry = _Failures()
                entry.count += 1
                entry.last = now
                over = entry.count - self.free
                if over >= 0:
                    entry.locked_until = now + min(self.base_s * 2 ** min(over, 62), self.max_s)
                table[key] = entry
                while len(table) > self.max_keys:
                    table.popitem(last=False)

    def succeeded(self, *, ip: str, name: str) -> None:
        with self._lock:
            self._tables["ip"].pop(ip, None)
            self._tables["name"].pop(name, None)


class RateLimit:
    """A token bucket per key: ``per_minute`` actions a minute, up to ``per_minute`` at once."""

    def __init__(
        self, per_minute: int, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute, self.max_keys, self.clock = per_minute, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Use one action of ``key``: 0 when allowed, else the seconds until the next one is."""
        if self.per_minute <= 0:
            return 60.0
        rate = self.per_minute / 60.0
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - then) * rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


class StreamSlots:
    """Open long-lived streams, per client address and in all (the ``/events`` caps)."""

    def __init__(self, *, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> str | None:
        """Take a slot for ``client``; None when granted, else ``"client"`` or ``"total"`` (which cap is full)."""
        with self._lock:
            if self._open.get(client, 0) >= self.per_client:
                return "client"
            if sum(self._open.values()) >= self.total:
                return "total"
            self._open[client] = self._open.get(client, 0) + 1
        return None

    def release(self, client: str) -> None:
        with self._lock:
            left = self._open.get(client, 0) - 1
            if left > 0:
                self._open[client] = left
            else:
                self._open.pop(client, None)

    @property
    def open(self) -> int:
        with self._lock:
            return sum(self._open.values())


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
