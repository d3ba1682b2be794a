"""The agent: watches the collection, turns evolution requests into jobs and advances them to confirmed.

Public API (used by the ``chrysalis run/status/jobs/retry/evolve`` commands and ``make demo``)::

    with Agent.from_settings(load_settings()) as agent:
        agent.run(stop)                  # until stop.set() (SIGTERM / SIGINT)
        agent.run_until_idle()           # tests and the demo: until nothing is pending
        agent.status()                   # chain head, cursor, lag, jobs by state, last error, gas spent
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from agent.settings import Settings


@dataclass(frozen=True)
class AgentStatus:
    """A snapshot of the agent for status lines, ``chrysalis status`` and metrics.

    Attributes:
        chain_head: The node's latest block number (None when the node could not be reached).
        cursor_block: The last block the watcher handled (None before the first).
        lag: ``chain_head - cursor_block`` (None when either is unknown).
        jobs: Number of jobs in each state (``queued``, ``running``, ``confirmed``, ``failed``, ``cancelled``).
        last_error: The most recent error the agent met (or the newest failed job's reason).
        gas_spent: Gas used by the agent's confirmed fulfilment transactions.
        events_seen: Contract events the watcher delivered to this agent since it started.
        worker_id: This agent's worker id in the job store.
    """

    chain_head: int | None
    cursor_block: int | None
    lag: int | None
    jobs: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    gas_spent: int = 0
    events_seen: int = 0
    worker_id: str = ""

    @property
    def pending(self) -> int:
        """Jobs not finished yet (queued or running)."""
        return self.jobs.get("queued", 0) + self.jobs.get("running", 0)


class Agent:
    """Watches one collection and fulfils its evolution requests. Build it with :meth:`from_settings`."""

    @classmethod
    def from_settings(
        cls, settings: Settings, *, worker_id: str | None = None, image: Any = None, lore: Any = None
    ) -> Agent:
        """Open everything the agent needs from ``settings`` (job store, watcher, IPFS, oracles, rules, sender).

        Args:
            settings: The configuration.
            worker_id: This worker's id in the job store (default ``settings.agent.worker_id`` or host:pid).
            image: An :class:`~agent.generate.base.ImageGenerator` to use instead of ``settings.models``'.
            lore: A :class:`~agent.generate.base.LoreWriter` to use instead of ``settings.models``'.
        """
        raise NotImplementedError

    def poll_once(self) -> int:
        """Watch one round: new logs become jobs, jobs whose source log was orphaned are cancelled.

        Returns the number of contract events seen.
        """
        raise NotImplementedError

    def work_once(self, max_jobs: int | None = None) -> int:
        """Advance claimable jobs through their stages; returns how many jobs were advanced."""
        raise NotImplementedError

    def run_until_idle(self, timeout_s: float = 120) -> AgentStatus:
        """Poll and work until no job is pending; for tests and the demo."""
        raise NotImplementedError

    def run(self, stop: threading.Event, on_status: Callable[[AgentStatus], None] | None = None) -> None:
        """The long-running loop; returns promptly and cleanly once ``stop`` is set."""
        raise NotImplementedError

    def status(self) -> AgentStatus:
        """Chain head, cursor block, lag, jobs by state, last error and gas spent."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the database, the IPFS node and the RPC connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
