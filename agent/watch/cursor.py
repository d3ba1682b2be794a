"""Where the watcher is: its cursor (the last block handled) and the unfinalized window behind it.

The window holds every handled block above the last finalized one, oldest first, plus that finalized block
as its anchor; consecutive entries are linked by parent hash. It is what a reorg is checked against.
:class:`~agent.watch.cursor_sql.SqlCursorStore` keeps it in the agent's database, beside the jobs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from agent.watch.events import BlockRef


@dataclass(frozen=True)
class CursorState:
    """A stream's saved position.

    Attributes:
        chain_id: The chain the blocks belong to.
        tip: The last block whose events the caller handled: the watcher resumes after it.
        finalized: The last block reported final (``None`` before the first :class:`Finalize`).
        window: Handled blocks not yet final, oldest first, starting with ``finalized`` (or the first block
            handled) and ending with ``tip``.
    """

    chain_id: int
    tip: BlockRef
    finalized: BlockRef | None
    window: tuple[BlockRef, ...]


def watch_lag(chain_head: int | None, cursor_block: int | None) -> int | None:
    """How many blocks the watcher is behind the node: ``chain_head - cursor_block``.

    The one definition every status view uses (the agent's own :class:`~agent.pipeline.agent.AgentStatus` and its
    ``chrysalis_watch_lag_blocks`` gauge, ``chrysalis status``, the studio's operations page).

    Args:
        chain_head: The node's latest block (None: the node could not be asked).
        cursor_block: The last block the watcher handled (None: none yet).

    Returns:
        The lag, never negative (a node behind the cursor, a lagging backend, is no negative lag: the watcher
        waits for it); None when either block is unknown.
    """
    if chain_head is None or cursor_block is None:
        return None
    return max(0, chain_head - cursor_block)


class CursorStore(ABC):
    """Durable cursors, one per stream (a stream is one chain + contract + filter)."""

    @abstractmethod
    def load(self, stream: str) -> CursorState | None:
        """The saved state of ``stream``, or ``None`` if it has never been saved."""

    @abstractmethod
    def save(self, stream: str, state: CursorState) -> None:
        """Replace the saved state of ``stream`` atomically."""

    @abstractmethod
    def reset(self, stream: str) -> None:
        """Forget ``stream``: the next watcher starts again from its start block."""
