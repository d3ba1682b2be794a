"""Watcher cursors in the agent's SQL database (tables ``watch_cursors`` and ``watch_blocks`` of
:mod:`agent.store.tables`), so a cursor and the jobs its logs created live in one place."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from agent.store.db import Database
from agent.store.tables import WATCH_BLOCKS, WATCH_CURSORS
from agent.watch.cursor import CursorState, CursorStore
from agent.watch.events import BlockRef

_cursors = WATCH_CURSORS
_blocks = WATCH_BLOCKS


class SqlCursorStore(CursorStore):
    """:class:`CursorStore` on the agent's :class:`~agent.store.db.Database` (the one its jobs are in).

    Args:
        db: The agent's database (migrated).
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, stream: str) -> CursorState | None:
        with self.db.begin() as conn:
            cur = conn.execute(sa.select(_cursors).where(_cursors.c.stream == stream)).mappings().first()
            if cur is None:
                return None
            rows = conn.execute(
                sa.select(_blocks).where(_blocks.c.stream == stream).order_by(_blocks.c.number)
            ).mappings()
            window = tuple(BlockRef(r["number"], r["hash"], r["parent_hash"]) for r in rows)
        by_number = {b.number: b for b in window}
        finalized = None
        if cur["finalized_number"] is not None:
            finalized = BlockRef(cur["finalized_number"], cur["finalized_hash"])
            finalized = by_number.get(finalized.number, finalized)
        tip = BlockRef(cur["block_number"], cur["block_hash"])
        tip = by_number.get(tip.number, tip)
        return CursorState(chain_id=cur["chain_id"], tip=tip, finalized=finalized, window=window or (tip,))

    def save(self, stream: str, state: CursorState) -> None:
        values = {
            "chain_id": state.chain_id,
            "block_number": state.tip.number,
            "block_hash": state.tip.hash,
            "finalized_number": state.finalized.number if state.finalized else None,
            "finalized_hash": state.finalized.hash if state.finalized else None,
            "updated_at": datetime.now(UTC),
        }
        with self.db.begin() as conn:
            updated = conn.execute(sa.update(_cursors).where(_cursors.c.stream == stream).values(**values))
            if updated.rowcount == 0:
                conn.execute(sa.insert(_cursors).values(stream=stream, **values))
            conn.execute(sa.delete(_blocks).where(_blocks.c.stream == stream))
            if state.window:
                conn.execute(
                    sa.insert(_blocks),
                    [{"stream": stream, "number": b.number, "hash": b.hash, "parent_hash": b.parent_hash}
                     for b in state.window],
                )  # fmt: skip

    def reset(self, stream: str) -> None:
        with self.db.begin() as conn:
            conn.execute(sa.delete(_blocks).where(_blocks.c.stream == stream))
            conn.execute(sa.delete(_cursors).where(_cursors.c.stream == stream))
