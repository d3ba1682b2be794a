"""What a refresh records: the run (its block, its budget), one row per token, its transactions, and the price
trigger's baseline. Tables ``refresh_runs``, ``refresh_items``, ``refresh_txs``, ``refresh_triggers``
(migration 0004), in the agent's database beside the jobs.

A refresh is one ``refresh`` job (:class:`~agent.jobs.JobKind`); the job says *whether* the refresh is queued,
running or finished, these tables say *how far* it got, token by token, so a refresh stopped by a budget, a
restart or a crash resumes where it was.

An item's states::

    pending --evaluate--> unchanged | deferred | oracle_skipped | skipped | failed      (terminal)
       \\--------------> changed --generate--> generated --publish--> published --send--> submitted --> confirmed
                                                                        ^   \\--pre-send check--> deferred |
                                                                        +--------(reverted / not mined)--+
    any state before submitted --a newer refresh of the token--> superseded
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from agent.jobs.models import JSONColumn, UTCDateTime


class ItemState(StrEnum):
    """Where one token is in a refresh."""

    PENDING = "pending"
    """Not evaluated yet."""
    UNCHANGED = "unchanged"
    """Terminal: the rules give the traits the token already has; nothing is regenerated or written."""
    DEFERRED = "deferred"
    """Terminal: a holder's request for the token is pending, or its metadata changed since the refresh's
    block (it evolved). The evolution goes first; the next refresh picks the token up."""
    ORACLE_SKIPPED = "oracle_skipped"
    """Terminal: data the token's rules read was stale, missing or absurd at the block (the guard skipped it);
    the token keeps its metadata rather than get traits from defaults."""
    SKIPPED = "skipped"
    """Terminal: nothing to refresh (the token does not exist, or has no metadata yet and
    ``refresh.first_render`` is off)."""
    FAILED = "failed"
    """Terminal: a permanent problem with this token (its metadata is not in the repo, the rules refuse its
    inputs, its metadata would be too large); ``reason`` says which."""
    SUPERSEDED = "superseded"
    """Terminal: a newer refresh of the token took over before this one wrote it."""
    CHANGED = "changed"
    """Traits changed; the inputs record is stored; waiting for generation (and the ``max_tokens`` budget)."""
    GENERATED = "generated"
    """Image, lore and receipt made."""
    PUBLISHED = "published"
    """Metadata and image pinned and replicated; waiting to be written on-chain."""
    SUBMITTED = "submitted"
    """Sent in a ``refreshMetadata`` transaction (``tx_hash``); waiting for it."""
    CONFIRMED = "confirmed"
    """Terminal: written on-chain."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_ITEM_STATES


TERMINAL_ITEM_STATES = frozenset(
    {
        ItemState.UNCHANGED,
        ItemState.DEFERRED,
        ItemState.ORACLE_SKIPPED,
        ItemState.SKIPPED,
        ItemState.FAILED,
        ItemState.SUPERSEDED,
        ItemState.CONFIRMED,
    }
)
REGENERATED_STATES = frozenset(
    {ItemState.GENERATED, ItemState.PUBLISHED, ItemState.SUBMITTED, ItemState.CONFIRMED}
)
"""States that count against ``refresh.max_tokens`` (inference was spent on them)."""
UNSENT_STATES = frozenset({ItemState.PENDING, ItemState.CHANGED, ItemState.GENERATED, ItemState.PUBLISHED})
"""States a newer refresh may supersede (nothing was sent for them yet)."""


class RefreshRunRow(SQLModel, table=True):
    """One refresh (table ``refresh_runs``), keyed by its job: the block it reads, its budget, its pause."""

    __tablename__ = "refresh_runs"

    job_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    )
    trigger: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    policy: str | None = Field(default=None, sa_column=sa.Column(sa.String(100), nullable=True))
    block_number: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    block_hash: str = Field(sa_column=sa.Column(sa.String(66), nullable=False))
    block_timestamp: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    feed_answer: str | None = Field(default=None, sa_column=sa.Column(sa.String(80), nullable=True))
    force: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    allowance: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    shared: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSONColumn, nullable=False))
    paused_until: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    pause_reason: str | None = Field(default=None, sa_column=sa.Column(sa.String(16), nullable=True))
    pause_detail: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class RefreshItemRow(SQLModel, table=True):
    """One token of one refresh (table ``refresh_items``)."""

    __tablename__ = "refresh_items"
    __table_args__ = (sa.Index("ix_refresh_items_state", "job_id", "state", "token_id"),)

    job_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    )
    token_id: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    stage: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    parent_digest: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))
    digest: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))
    inputs: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONColumn, nullable=True))
    generated: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONColumn, nullable=True))
    published: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONColumn, nullable=True))
    tx_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class RefreshTxRow(SQLModel, table=True):
    """One ``refreshMetadata`` transaction (table ``refresh_txs``): what the gas-per-day budget adds up."""

    __tablename__ = "refresh_txs"
    __table_args__ = (sa.Index("ix_refresh_txs_sent_at", "sent_at"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    tx_hash: str = Field(sa_column=sa.Column(sa.String(66), nullable=False, unique=True))
    nonce: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    tokens: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    gas_limit: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    gas_used: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    fee_wei: str | None = Field(default=None, sa_column=sa.Column(sa.String(80), nullable=True))
    provenance: str = Field(sa_column=sa.Column(sa.String(66), nullable=False))
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    submission: dict[str, Any] = Field(sa_column=sa.Column(JSONColumn, nullable=False))
    block_number: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    final_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))
    sent_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    mined_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class RefreshTriggerRow(SQLModel, table=True):
    """A price trigger's baseline (table ``refresh_triggers``): the answer at the last refresh."""

    __tablename__ = "refresh_triggers"

    feed: str = Field(sa_column=sa.Column(sa.String(42), primary_key=True))
    baseline: str = Field(sa_column=sa.Column(sa.String(80), nullable=False))
    baseline_block: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


runs = RefreshRunRow.__table__  # type: ignore[attr-defined]
items = RefreshItemRow.__table__  # type: ignore[attr-defined]
txs = RefreshTxRow.__table__  # type: ignore[attr-defined]
triggers = RefreshTriggerRow.__table__  # type: ignore[attr-defined]
