"""What a job is: its kinds, stages and states, the two tables that hold it, and the frozen :class:`Job` view.

A job moves forward through :class:`Stage` s, recording each stage's output before the next one starts, and
its :class:`JobState` says whether it is waiting, being worked on, or finished with one terminal outcome::

    queued --claim--> running --record_stage(inputs, generated, published, submitted)--> ... --confirm--> confirmed
       ^                 |  \\--error (retryable, attempts left)--> queued (after a back-off)
       |                 |   \\-error (permanent, or attempts spent)--> failed --retry--> queued
       +----reaper-------+  (lease expired)
    cancel: any non-terminal state (and failed) --> cancelled

Rows are SQLModel tables; callers only ever see :class:`Job`, an immutable snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from agent.domain import LogKey


class JobKind(StrEnum):
    """What a job does."""

    EVOLVE = "evolve"
    """Fulfil one ``EvolutionRequested`` event: new image and lore for the token, pinned and written on-chain."""
    REFRESH = "refresh"
    """Rewrite metadata without a request (a scheduled or oracle-driven refresh)."""
    GENESIS = "genesis"
    """Produce a freshly minted token's first metadata."""


class Stage(StrEnum):
    """A completed step of a job, in order. Each one's output is stored before the next starts."""

    INPUTS = "inputs"
    """The input snapshot (wallet and oracle readings at the event's block) was read."""
    GENERATED = "generated"
    """Image, lore and the inference receipt were produced."""
    PUBLISHED = "published"
    """The metadata and image were pinned and their CIDs' replication confirmed."""
    SUBMITTED = "submitted"
    """The fulfilment transaction was sent (its hash and nonce recorded)."""

    @property
    def position(self) -> int:
        """Where the stage comes in :data:`STAGES` (0 for the first)."""
        return STAGES.index(self)

    @property
    def previous(self) -> Stage | None:
        return STAGES[self.position - 1] if self.position else None


STAGES: tuple[Stage, ...] = tuple(Stage)
"""Stages in the order a job passes them."""


class JobState(StrEnum):
    """Where a job is in its life. The last three are terminal outcomes: a job leaves them only by an explicit
    :meth:`~agent.jobs.store.JobStore.retry` (``failed``) or a revival by a re-mined source log (``cancelled``)."""

    QUEUED = "queued"
    """Waiting for a worker; claimable once ``run_after`` has passed (a retry's back-off delays it)."""
    RUNNING = "running"
    """Claimed by ``worker_id``, whose lease runs until ``lease_until``; the reaper re-queues it if that passes."""
    CONFIRMED = "confirmed"
    """Terminal: done. For an evolution, the fulfilment transaction is mined with the confirmations required;
    the outcome is final once ``settle_block`` is cleared (the watcher passed that block and it is still
    canonical); until then the worker re-checks it, and a fulfilment orphaned meanwhile is sent again."""
    FAILED = "failed"
    """Terminal: a permanent error, or the attempts ran out. ``reason`` holds the last error; ``retry`` re-queues."""
    CANCELLED = "cancelled"
    """Terminal: deliberately dropped, e.g. its source log was orphaned by a reorg. ``reason`` says why."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset({JobState.CONFIRMED, JobState.FAILED, JobState.CANCELLED})


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


class JobRow(SQLModel, table=True):
    """One job (table ``jobs``). Use :class:`Job` outside the store."""

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


@dataclass(frozen=True)
class Job:
    """A snapshot of one job, as the store last saw it.

    Attributes:
        id: Store-assigned id (what ``chrysalis retry JOB`` takes).
        key: Idempotency key, e.g. ``evolve:<chain id>:<request id>``; unique.
        kind: What the job does.
        state: Lifecycle state; see :class:`JobState`.
        stage: The last stage whose output is recorded (``None`` before the first).
        source: The log that caused the job, if any. Its block hash lets a reorg notice find it.
        block_number: The source log's block number.
        payload: The job's input (e.g. the decoded event arguments).
        outputs: Recorded stage outputs, by stage, in stage order.
        result: What the terminal ``confirmed`` outcome recorded (e.g. the receipt).
        attempts: Claims so far (a claim is an attempt); ``max_attempts`` bounds them.
        run_after: Not claimable before this time (retry back-off).
        worker_id / lease_until: Who holds the job and until when (while ``running``).
        last_error: The most recent error, kept after recovery for the record.
        reason: Why the job ended ``failed`` or ``cancelled``.
        settle_block: For a ``confirmed`` job whose outcome is not final yet, the block its fulfilment was
            mined in: the job is re-checked until the watcher has passed that block and the block is still
            canonical (``None``: final).
        waiting: Why an unfinished job is waiting rather than failing (e.g. its transaction is stalled in the
            pool); cleared when the job moves on.
    """

    id: int
    key: str
    kind: JobKind
    state: JobState
    stage: Stage | None
    source: LogKey | None
    block_number: int | None
    payload: Mapping[str, Any]
    outputs: Mapping[Stage, Any]
    result: Mapping[str, Any] | None
    attempts: int
    max_attempts: int
    run_after: datetime
    worker_id: str | None
    lease_until: datetime | None
    last_error: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    settle_block: int | None = None
    waiting: str | None = None

    @property
    def settled(self) -> bool:
        """False while a ``confirmed`` outcome is still re-checked against reorgs (see ``settle_block``)."""
        return self.settle_block is None

    @property
    def next_stage(self) -> Stage | None:
        """The stage to run next (``None`` once ``submitted`` is recorded: only the outcome is left)."""
        if self.stage is None:
            return STAGES[0]
        index = Stage(self.stage).position + 1
        return STAGES[index] if index < len(STAGES) else None

    def output(self, stage: Stage) -> Any:
        """The recorded output of ``stage``, or ``None`` if it has not been recorded."""
        return self.outputs.get(stage)

    @classmethod
    def from_rows(cls, row: JobRow, stages: list[JobStageRow]) -> Job:
        source = None
        if row.tx_hash is not None and row.block_hash is not None and row.chain_id is not None:
            source = LogKey(row.chain_id, row.tx_hash, int(row.log_index or 0), row.block_hash)
        outputs = {Stage(s.stage): s.output for s in sorted(stages, key=lambda s: Stage(s.stage).position)}
        assert row.id is not None
        return cls(
            id=row.id,
            key=row.key,
            kind=JobKind(row.kind),
            state=JobState(row.state),
            stage=Stage(row.stage) if row.stage else None,
            source=source,
            block_number=row.block_number,
            payload=dict(row.payload or {}),
            outputs=outputs,
            result=dict(row.result) if row.result is not None else None,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            run_after=row.run_after,
            worker_id=row.worker_id,
            lease_until=row.lease_until,
            last_error=row.last_error,
            reason=row.reason,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            settle_block=row.settle_block,
            waiting=row.waiting,
        )


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
