"""What a job is: its kinds, stages and states, and the frozen :class:`Job` view.

A job moves forward through :class:`Stage` s, recording each stage's output before the next one starts, and
its :class:`JobState` says whether it is waiting, being worked on, or finished with one terminal outcome::

    queued --claim--> running --record_stage(inputs, generated, published, submitted)--> ... --confirm--> confirmed
       ^                 |  \\--error (retryable, attempts left)--> queued (after a back-off)
       |                 |   \\-error (permanent, or attempts spent)--> failed --retry--> queued
       +----reaper-------+  (lease expired)
    cancel: any non-terminal state (and failed) --> cancelled

The rows that hold a job are tables of :mod:`agent.store.tables`; callers only ever see :class:`Job`, an
immutable snapshot. This module imports no database code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from agent.domain import Artwork, Inputs, LogKey, Published


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
        """The recorded output of ``stage`` as stored (JSON), or ``None`` if it has not been recorded."""
        return self.outputs.get(stage)

    def _recorded(self, stage: Stage) -> Mapping[str, Any]:
        record = self.outputs.get(stage)
        if record is None:
            raise LookupError(
                f"job {self.id} has no {stage.value!r} record yet (its last stage: {self.stage})"
            )
        return cast("Mapping[str, Any]", record)

    @property
    def inputs(self) -> Inputs:
        """The ``inputs`` record, typed (:class:`LookupError` before it is recorded)."""
        return Inputs.from_json(self._recorded(Stage.INPUTS))

    @property
    def artwork(self) -> Artwork:
        """The ``generated`` record, typed (:class:`LookupError` before it is recorded)."""
        return Artwork.from_json(self._recorded(Stage.GENERATED))

    @property
    def published(self) -> Published:
        """The ``published`` record, typed (:class:`LookupError` before it is recorded)."""
        return Published.from_json(self._recorded(Stage.PUBLISHED))
