"""What the chain watcher tells its caller, in Ponder's vocabulary: ``block``, ``reorg`` and ``finalize``.

Events arrive in chain order. A caller reacts to each:

* :class:`NewBlock` -- the watched contract's logs in one block (``events``, by log index). Enqueue work, keyed
  by the log (the job store ignores a key it has seen).
* :class:`Reorg` -- blocks the caller has seen were replaced. Cancel jobs whose source log is in
  ``orphaned`` (``JobStore.cancel_orphaned(reorg.orphaned_hashes)``), and re-check submissions mined in those
  blocks. The new chain's blocks follow as :class:`NewBlock` events.
* :class:`Finalize` -- everything up to ``block`` is final: it can no longer be reorganised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.domain import ChainEvent


@dataclass(frozen=True)
class BlockRef:
    """A block's position: number, hash and (when known) its parent's hash. Hashes are lower-case 0x hex.

    ``logs_bloom`` (the header's 256-byte bloom of its logs' addresses and topics, when it was fetched) is not part
    of the block's identity: it is never stored, compared or printed.
    """

    number: int
    hash: str
    parent_hash: str | None = None
    logs_bloom: bytes | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"#{self.number} ({self.hash[:10]})"


@dataclass(frozen=True)
class NewBlock:
    """The watcher reached ``block``; ``events`` are its matching logs, decoded, in log-index order.

    In the unfinalized part of the chain every block is reported (most with no events); while catching up
    through finalized history only blocks with events and the end of each fetched range are.
    """

    block: BlockRef
    events: tuple[ChainEvent, ...] = ()
    kind: Literal["block"] = "block"
    recovered: bool = False
    """True for logs of a block handled earlier that the first answer missed (found again when the block was
    finalized); the cursor does not move. Handlers keyed by ``ChainEvent.key`` need not tell the difference."""


@dataclass(frozen=True)
class Reorg:
    """The chain switched branches: ``orphaned`` blocks (ascending) are no longer canonical.

    Attributes:
        common_ancestor: The newest block both branches share; the watcher continues after it.
        orphaned: The reported blocks that were replaced, oldest first.
    """

    common_ancestor: BlockRef
    orphaned: tuple[BlockRef, ...]
    kind: Literal["reorg"] = "reorg"

    @property
    def depth(self) -> int:
        """How many reported blocks were replaced."""
        return len(self.orphaned)

    @property
    def orphaned_hashes(self) -> tuple[str, ...]:
        return tuple(b.hash for b in self.orphaned)

    @property
    def orphaned_range(self) -> tuple[int, int]:
        """First and last orphaned block numbers (inclusive)."""
        return self.orphaned[0].number, self.orphaned[-1].number


@dataclass(frozen=True)
class Finalize:
    """Every block up to and including ``block`` is final (at least ``finality_depth`` blocks deep)."""

    block: BlockRef
    kind: Literal["finalize"] = "finalize"


WatchEvent = NewBlock | Reorg | Finalize
"""Anything the watcher emits; switch on ``event.kind``."""
