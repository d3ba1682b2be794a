"""Watcher cursors in the agent's SQL database (tables ``watch_cursors`` and ``watch_blocks``; migrations in
:mod:`agent.jobs.migrations`), so a cursor and the jobs its logs created live in one place."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from agent.jobs.models import UTCDateTime
from agent.watch.cursor import CursorState, CursorStore
from agent.watch.events import BlockRef


class WatchCursorRow(SQLModel, table=True):
    """One stream's cursor."""

    __tablename__ = "watch_cursors"

    stream: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))
    chain_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    block_number: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    block_hash: str = Field(sa_column=sa.Column(sa.String(66), nullable=False))
    finalized_number: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    finalized_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class WatchBlockRow(SQLModel, table=True):
    """One block of a stream's unfinalized window."""

    __tablename__ = "watch_blocks"

    stream: str = Field(
        sa_column=sa.Column(
            sa.String(200), sa.ForeignKey("watch_cursors.stream", ondelete="CASCADE"), primary_key=True
        )
    )
    number: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    hash: str = Field(sa_column=sa.Column(sa.String(66), nullable=False))
    parent_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))


_cursors = WatchCursorRow.__table__  # type: ignore[attr-defined]
_blocks = WatchBlockRow.__table__  # type: ignore[attr-defined]


class SqlCursorStore(CursorStore):
    """:class:`CursorStore` on the agent's database engine (``JobStore.engine``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, stream: str) -> CursorState | None:
        with self.engine.begin() as conn:
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
        with self.engine.begin() as conn:
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
        with self.engine.begin() as conn:
            conn.execute(sa.delete(_blocks).where(_blocks.c.stream == stream))
            conn.execute(sa.delete(_cursors).where(_cursors.c.stream == stream))
