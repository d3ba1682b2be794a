"""Reorg detection on the unfinalized window, and the cursor transitions around it (pure functions).

Each poll first checks that the cursor's tip is still canonical (one block lookup). If it is not, it walks the
window back, newest first, to the newest block whose hash the chain still has: the common ancestor. The blocks
above it are orphaned and reported in a :class:`~agent.watch.events.Reorg`; the cursor moves back to the
ancestor. If no block of the window survives and the window's oldest block had been reported final (or the
orphaned span exceeds the finality depth), the reorg is deeper than finality: :class:`DeepReorgError`.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.watch.cursor import CursorState
from agent.watch.errors import DeepReorgError
from agent.watch.events import BlockRef, Reorg

CanonicalHash = Callable[[int], "str | None"]
"""The canonical chain's hash at a height (``None`` if the chain is not that long)."""


def advance(state: CursorState | None, chain_id: int, block: BlockRef) -> CursorState:
    """The state after ``block`` was handled: it becomes the tip and joins the window."""
    if state is None:
        return CursorState(chain_id=chain_id, tip=block, finalized=None, window=(block,))
    if block.number <= state.tip.number:
        raise ValueError(f"block {block} does not extend the tip {state.tip}")
    linked = block.number == state.tip.number + 1 and block.parent_hash == state.tip.hash
    # Unlinked: a jump through finalized history (only blocks with logs are reported there); the window
    # restarts at the new tip. The unfinalized part of the chain is always reported block by block, linked.
    window = state.window + (block,) if linked else (block,)
    return CursorState(chain_id=state.chain_id, tip=block, finalized=state.finalized, window=window)


def finalize(state: CursorState, number: int) -> tuple[CursorState, BlockRef] | None:
    """Mark every handled block up to ``number`` final; ``None`` if that finalizes nothing new.

    The window keeps the newest final block as its anchor.
    """
    number = min(number, state.tip.number)
    if state.finalized is not None and number <= state.finalized.number:
        return None
    kept = tuple(b for b in state.window if b.number >= number)
    if not kept or kept[0].number != number:
        return None  # that block is not in the window (the window starts later): nothing to anchor on yet
    block = kept[0]
    return CursorState(chain_id=state.chain_id, tip=state.tip, finalized=block, window=kept), block


def detect_reorg(
    state: CursorState,
    canonical: CanonicalHash,
    *,
    stream: str,
    finality_depth: int,
    start_block: int,
) -> tuple[Reorg, CursorState | None] | None:
    """Check the window against the chain: ``None`` if the tip is canonical, else the reorg and the state
    rolled back to the common ancestor (``None``: back to before ``start_block``, when every reported block
    was replaced). Raises :class:`DeepReorgError` when the reorg reaches a final block.

    Only a block the node reports with another hash is evidence of a reorg: a tip the node does not have (it lags
    behind a load balancer, or the new branch is still shorter) is no reorg yet, and the next poll looks again."""
    tip_hash = canonical(state.tip.number)
    if tip_hash is None or tip_hash == state.tip.hash:
        return None
    orphaned: list[BlockRef] = []
    ancestor: BlockRef | None = None
    for block in reversed(state.window):
        if canonical(block.number) == block.hash:
            ancestor = block
            break
        orphaned.append(block)
    orphaned.reverse()
    anchored_final = state.finalized is not None and state.window[0].number <= state.finalized.number
    if ancestor is None:
        oldest = state.window[0]
        if anchored_final or oldest.number != start_block:
            raise DeepReorgError(
                stream=stream,
                depth=len(orphaned),
                finality_depth=finality_depth,
                finalized=state.finalized,
                orphaned=orphaned,
            )
    if len(orphaned) > finality_depth:
        raise DeepReorgError(
            stream=stream,
            depth=len(orphaned),
            finality_depth=finality_depth,
            finalized=state.finalized,
            orphaned=orphaned,
        )
    if ancestor is None:
        # Every block reported since the start block was replaced: start again from the start block.
        parent = canonical(start_block - 1) if start_block > 0 else None
        return Reorg(common_ancestor=BlockRef(start_block - 1, parent or ""), orphaned=tuple(orphaned)), None
    window = tuple(b for b in state.window if b.number <= ancestor.number)
    rolled_back = CursorState(chain_id=state.chain_id, tip=ancestor, finalized=state.finalized, window=window)
    return Reorg(common_ancestor=ancestor, orphaned=tuple(orphaned)), rolled_back
