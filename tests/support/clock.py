"""A settable clock, for code that takes one (the job store's leases and back-offs, refresh budgets): time moves
only when a test says so, and never by sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """A settable UTC clock: call it for the time, :meth:`advance` it to move on."""

    def __init__(self, start: datetime | None = None) -> None:
        """Start at ``start`` (default: 2030-01-01 00:00 UTC)."""
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move on by ``seconds``; the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now
