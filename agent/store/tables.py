"""Every table of the agent's database, on one metadata (:data:`METADATA`, which the migrations compare with).

Row classes are SQLModel tables; the stores read and write them through SQLAlchemy Core (:func:`table` gives
the ``Table`` of a row class) or, for jobs, the ORM. Nothing outside the stores sees a row: each store hands out
frozen snapshots (``Job``, ``CursorState``, ``ReviewItem``, ``RefreshRun``, ...).

Groups (each added by the migration named):

* jobs (``jobs``, ``job_stages``: 0001) and the broadcast journal (``broadcasts``: 0005);
* the chain watcher's cursors (``watch_cursors``, ``watch_blocks``: 0002);
* the review queue (``review_items``, ``review_events``: 0003);
* refreshes (``refresh_runs``, ``refresh_items``, ``refresh_txs``, ``refresh_triggers``: 0004);
* the quality gates' near-duplicate index (``gate_hashes``: 0006);
* the agents sharing the database and the singleton roles they hold (``agents``, ``agent_roles``: 0007).

A change to a table here needs a migration in :mod:`agent.store.migrations` (``tests/jobs/test_migrations.py``
fails until the two agree). The refresh scheduler's APScheduler table is APScheduler's, outside this metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

METADATA: sa.MetaData = SQLModel.metadata
"""The metadata every table below is registered on."""


def table(model: type[SQLModel]) -> sa.Table:
    """The Core ``Table`` of a row class (SQLModel sets ``__table__`` at class creation, untyped)."""
    found: sa.Table = model.__table__  # type: ignore[attr-defined]
    return found


# -- column types ---------------------------------------------------------------------------------------------


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive text, so it is normalised here)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONColumn = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL."""


# -- jobs and broadcasts -------------------------------------------------------------------------------------


class JobRow(SQLModel, table=True):
    """One job (table ``jobs``). Use :class:`~agent.jobs.Job` outside the store."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("key", name="uq_jobs_key"),
        sa.Index("ix_jobs_state_run_after", "state", "run_after"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    stage: str | None = Field(default=None, sa_column=sa.Column(sa.String(16), nullable=True))
    chain_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    tx_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))
    log_index: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    block_hash: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(66), nullable=True, index=True)
    )
    block_number: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSONColumn, nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONColumn, nullable=True))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    max_attempts: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    run_after: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    worker_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    settle_block: int | None = Field(
        default=None, sa_column=sa.Column(sa.BigInteger, nullable=True, index=True)
    )
    waiting: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class JobStageRow(SQLModel, table=True):
    """One recorded stage output (table ``job_stages``); written once, never overwritten."""

    __tablename__ = "job_stages"

    job_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    )
    stage: str = Field(sa_column=sa.Column(sa.String(16), primary_key=True))
    output: Any = Field(sa_column=sa.Column(JSONColumn, nullable=False))
    recorded_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class BroadcastRow(SQLModel, table=True):
    """One signed transaction, recorded BEFORE it was broadcast (table ``broadcasts``).

    Every version sent for a nonce (the first send, each fee-bumped replacement, a re-send) is one row, so a
    restarted agent settles each recorded nonce from these rows (mined? by which hash?) instead of from the
    node's pending state, can re-broadcast ``submission.raw_tx``, and counts replacements across restarts.
    ``keys`` lists what the transaction does (``,<request id>,...,``) so a job can find its broadcasts.
    """

    __tablename__ = "broadcasts"
    __table_args__ = (
        sa.UniqueConstraint("tx_hash", name="uq_broadcasts_tx_hash"),
        sa.Index("ix_broadcasts_sender_nonce", "sender", "nonce"),
    )

    id: int | None = Field(default=None, primary_key=True)
    chain_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    sender: str = Field(sa_column=sa.Column(sa.String(42), nullable=False))
    nonce: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    tx_hash: str = Field(sa_column=sa.Column(sa.String(66), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    keys: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    submission: dict[str, Any] = Field(sa_column=sa.Column(JSONColumn, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    outcome: str | None = Field(default=None, sa_column=sa.Column(sa.String(16), nullable=True))
    mined_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))
    settled_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


# -- the chain watcher ---------------------------------------------------------------------------------------


class WatchCursorRow(SQLModel, table=True):
    """One watcher stream's cursor (table ``watch_cursors``)."""

    __tablename__ = "watch_cursors"

    stream: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))
    chain_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    block_number: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    block_hash: str = Field(sa_column=sa.Column(sa.String(66), nullable=False))
    finalized_number: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    finalized_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class WatchBlockRow(SQLModel, table=True):
    """One block of a stream's unfinalized window (table ``watch_blocks``)."""

    __tablename__ = "watch_blocks"

    stream: str = Field(
        sa_column=sa.Column(
            sa.String(200), sa.ForeignKey("watch_cursors.stream", ondelete="CASCADE"), primary_key=True
        )
    )
    number: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    hash: str = Field(sa_column=sa.Column(sa.String(66), nullable=False))
    parent_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(66), nullable=True))


# -- the review queue ----------------------------------------------------------------------------------------


class ReviewItemRow(SQLModel, table=True):
    """One candidate under review (table ``review_items``). Use :class:`~agent.review.ReviewItem` outside."""

    __tablename__ = "review_items"
    __table_args__ = (
        sa.UniqueConstraint("key", name="uq_review_items_key"),
        sa.Index("ix_review_items_state", "state", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    job_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    token_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    stage: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    state: str = Field(sa_column=sa.Column(sa.String(24), nullable=False))
    revision: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    candidate: dict[str, Any] = Field(sa_column=sa.Column(JSONColumn, nullable=False))
    regenerate: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONColumn, nullable=True))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    decided_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    decided_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class ReviewEventRow(SQLModel, table=True):
    """One thing that happened to a review item (table ``review_events``): the audit trail."""

    __tablename__ = "review_events"
    __table_args__ = (sa.Index("ix_review_events_review_id", "review_id"),)

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("review_items.id", ondelete="CASCADE"), nullable=False)
    )
    revision: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    action: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    actor: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    detail: dict[str, Any] = Field(sa_column=sa.Column(JSONColumn, nullable=False))
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


# -- refreshes -----------------------------------------------------------------------------------------------


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


# -- quality gates -------------------------------------------------------------------------------------------


class GateHashRow(SQLModel, table=True):
    """One image's 64-bit perceptual hash (table ``gate_hashes``), for the near-duplicate gate
    (:mod:`agent.gates.index`): one row per collection, token and stage; ``hash`` is 16 hex digits."""

    __tablename__ = "gate_hashes"
    __table_args__ = (
        sa.UniqueConstraint("collection", "token_id", "stage", name="uq_gate_hashes_token_stage"),
    )

    id: int | None = Field(default=None, primary_key=True)
    collection: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    token_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    stage: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    image_cid: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    hash: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


# -- several agents on one database --------------------------------------------------------------------------


class AgentRow(SQLModel, table=True):
    """One agent process that works this database (table ``agents``): who it is and when it last beat."""

    __tablename__ = "agents"

    worker_id: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    signer: str = Field(sa_column=sa.Column(sa.String(42), nullable=False))
    host: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    pid: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    started_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    heartbeat_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    stopped_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class AgentRoleRow(SQLModel, table=True):
    """A singleton role and the agent that holds it until ``lease_until`` (table ``agent_roles``).

    An agent renews its roles while it runs; once a lease lapses, any agent may take the role over.
    """

    __tablename__ = "agent_roles"

    role: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    holder: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    lease_until: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    acquired_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    renewed_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


JOBS = table(JobRow)
JOB_STAGES = table(JobStageRow)
BROADCASTS = table(BroadcastRow)
WATCH_CURSORS = table(WatchCursorRow)
WATCH_BLOCKS = table(WatchBlockRow)
REVIEW_ITEMS = table(ReviewItemRow)
REVIEW_EVENTS = table(ReviewEventRow)
REFRESH_RUNS = table(RefreshRunRow)
REFRESH_ITEMS = table(RefreshItemRow)
REFRESH_TXS = table(RefreshTxRow)
REFRESH_TRIGGERS = table(RefreshTriggerRow)
GATE_HASHES = table(GateHashRow)
AGENTS = table(AgentRow)
AGENT_ROLES = table(AgentRoleRow)
