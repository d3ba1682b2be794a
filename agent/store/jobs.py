"""The job store on SQL: SQLite (WAL, ``BEGIN IMMEDIATE``) or PostgreSQL (row locks, ``SKIP LOCKED``).

Claims are a guarded ``UPDATE ... WHERE id = :candidate AND state = 'queued'`` on both backends. On PostgreSQL the
candidate is picked with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent claimers take different rows
without waiting; on SQLite the write transaction itself is exclusive. Single-job updates lock the row
(``FOR UPDATE``; a no-op on SQLite, whose write transactions are already serial) and check who holds it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from agent.domain import LogKey, canonical_json
from agent.errors import BackendUnavailableError
from agent.jobs.errors import JobNotFoundError, JobStateError, LeaseLostError, StageOrderError
from agent.jobs.models import STAGES, Job, JobKind, JobState, Stage
from agent.jobs.policy import RetryPolicy, describe_error, is_retryable
from agent.jobs.store import DEFAULT_LEASE_S, ORPHANED_REASON, JobStore
from agent.store.db import Database
from agent.store.tables import JOB_STAGES, JOBS, JobRow, JobStageRow

log = logging.getLogger("chrysalis.jobs")

_jobs = JOBS
_stages = JOB_STAGES
_c = _jobs.c
_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class SqlJobStore(JobStore):
    """:class:`JobStore` on the agent's :class:`~agent.store.db.Database` (tables ``jobs`` and ``job_stages``).

    Args:
        db: The database (migrated); :meth:`close` closes it.
        policy: The retry policy (default :class:`~agent.jobs.policy.RetryPolicy`).
        clock: UTC now (tests move it; default: the system's).
        rng: The randomness of the back-off jitter.
    """

    def __init__(
        self,
        db: Database,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or RetryPolicy()
        self._clock = clock or utcnow
        self._rng = rng or random.Random()

    # -- plumbing -------------------------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the store's clock must return aware UTC datetimes")
        return now

    def _session(self) -> Session:
        return Session(self.db.engine, expire_on_commit=False)

    def _tx(self) -> Any:
        """A session in a transaction, with connection failures turned into BackendUnavailableError."""
        return _Transaction(self)

    def _lock(self, session: Session, job_id: int) -> JobRow:
        row = session.get(JobRow, job_id, with_for_update=True, populate_existing=True)
        if row is None:
            raise JobNotFoundError(job_id)
        return row

    def _held(self, session: Session, job_id: int, worker_id: str) -> JobRow:
        row = self._lock(session, job_id)
        if row.state != JobState.RUNNING or row.worker_id != worker_id:
            raise LeaseLostError(job_id, worker_id, row.worker_id, row.state)
        return row

    def _view(self, session: Session, row: JobRow) -> Job:
        session.flush()
        stages = session.execute(sa.select(JobStageRow).where(_stages.c.job_id == row.id)).scalars().all()
        return _job(row, list(stages))

    def _views(self, session: Session, rows: list[JobRow]) -> list[Job]:
        if not rows:
            return []
        ids = [r.id for r in rows]
        by_job: dict[int, list[JobStageRow]] = {i: [] for i in ids if i is not None}
        stmt = sa.select(JobStageRow).where(_stages.c.job_id.in_(ids))
        for s in session.execute(stmt).scalars():
            by_job[s.job_id].append(s)
        return [_job(r, by_job.get(r.id or 0, [])) for r in rows]

    def _insert(self) -> Any:
        return self.db.insert(_jobs)

    # -- writing jobs ---------------------------------------------------------------------------------------

    def enqueue(
        self,
        kind: JobKind | str,
        key: str,
        *,
        payload: Mapping[str, Any] | None = None,
        source: LogKey | None = None,
        block_number: int | None = None,
        max_attempts: int | None = None,
        run_after: datetime | None = None,
    ) -> tuple[Job, bool]:
        kind = JobKind(kind)
        payload = dict(payload or {})
        _check_json(payload, "payload")
        if not key or len(key) > 200:
            raise ValueError(f"job keys are 1-200 characters (got {len(key)})")
        now = self._now()
        values: dict[str, Any] = {
            "key": key,
            "kind": kind.value,
            "state": JobState.QUEUED.value,
            "stage": None,
            "payload": payload,
            "attempts": 0,
            "max_attempts": max_attempts or self.policy.max_attempts,
            "run_after": run_after or now,
            "created_at": now,
            "updated_at": now,
            **_source_columns(source, block_number),
        }
        with self._tx() as session:
            stmt = (
                self._insert()
                .values(**values)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(_c.id)
            )
            inserted = session.execute(stmt).scalar_one_or_none()
            if inserted is not None:
                row = self._lock(session, inserted)
                log.info("job %s enqueued: %s %s", row.id, kind.value, key)
                return self._view(session, row), True
            job_id = session.execute(sa.select(_c.id).where(_c.key == key)).scalar_one()
            row = self._lock(session, job_id)
            if _revivable(row, source):
                assert source is not None
                session.execute(sa.delete(_stages).where(_stages.c.job_id == row.id))
                log.warning(
                    "job %s (%s) revived: source moved from block %s to %s after a reorg",
                    row.id, key, row.block_hash, source.block_hash,
                )  # fmt: skip
                for name, value in _source_columns(source, block_number).items():
                    setattr(row, name, value)
                row.payload = payload
                row.state = JobState.QUEUED.value
                row.stage = None
                row.result = None
                row.attempts = 0
                row.run_after = run_after or now
                row.reason = None
                row.finished_at = None
                row.updated_at = now
                return self._view(session, row), True
            return self._view(session, row), False

    def claim(
        self,
        worker_id: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        kinds: Iterable[JobKind | str] | None = None,
    ) -> Job | None:
        if not worker_id:
            raise ValueError("worker_id must be non-empty")
        now = self._now()
        pick = (
            sa.select(_c.id)
            .where(_c.state == JobState.QUEUED.value, _c.run_after <= now)
            .order_by(_c.run_after, _c.id)
            .limit(1)
        )
        if kinds is not None:
            pick = pick.where(_c.kind.in_([JobKind(k).value for k in kinds]))
        if self.db.postgres:
            pick = pick.with_for_update(skip_locked=True)
        with self._tx() as session:
            for _ in range(8):  # a guarded update that lost a race picks again
                job_id = session.execute(pick).scalar_one_or_none()
                if job_id is None:
                    return None
                claimed = session.execute(
                    sa.update(_jobs)
                    .where(_c.id == job_id, _c.state == JobState.QUEUED.value)
                    .values(
                        state=JobState.RUNNING.value,
                        worker_id=worker_id,
                        lease_until=now + timedelta(seconds=lease_s),
                        attempts=_c.attempts + 1,
                        updated_at=now,
                    )
                )
                if claimed.rowcount == 1:
                    row = self._lock(session, job_id)
                    return self._view(session, row)
            return None

    def heartbeat(self, job_id: int, worker_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> Job:
        now = self._now()
        with self._tx() as session:
            row = self._held(session, job_id, worker_id)
            row.lease_until = now + timedelta(seconds=lease_s)
            row.updated_at = now
            return self._view(session, row)

    def record_stage(self, job_id: int, worker_id: str, stage: Stage | str, output: Any) -> Job:
        stage = Stage(stage)
        _check_json(output, f"output of stage {stage.value}")
        now = self._now()
        with self._tx() as session:
            row = self._held(session, job_id, worker_id)
            done = Stage(row.stage).position if row.stage else -1
            if stage.position <= done:
                log.info("job %s: stage %s already recorded; keeping the first output", job_id, stage.value)
                return self._view(session, row)
            if stage.position != done + 1:
                raise StageOrderError(job_id, stage.value, STAGES[done + 1].value)
            session.add(JobStageRow(job_id=job_id, stage=stage.value, output=output, recorded_at=now))
            row.stage = stage.value
            row.waiting = None
            row.updated_at = now
            return self._view(session, row)

    def confirm(
        self,
        job_id: int,
        worker_id: str,
        result: Mapping[str, Any] | None = None,
        *,
        settle_block: int | None = None,
    ) -> Job:
        result = dict(result or {})
        _check_json(result, "result")
        now = self._now()
        with self._tx() as session:
            row = self._held(session, job_id, worker_id)
            row.state = JobState.CONFIRMED.value
            row.result = result
            row.settle_block = settle_block
            row.waiting = None
            row.worker_id = None
            row.lease_until = None
            row.finished_at = now
            row.updated_at = now
            log.info(
                "job %s (%s) confirmed after %d attempt(s)%s", job_id, row.key, row.attempts,
                f"; final once block {settle_block} is past the watcher and still canonical"
                if settle_block is not None else "",
            )  # fmt: skip
            return self._view(session, row)

    def unsettled(self, limit: int = 500) -> list[Job]:
        stmt = (
            sa.select(JobRow)
            .where(_c.state == JobState.CONFIRMED.value, _c.settle_block.is_not(None))
            .order_by(_c.id)
            .limit(limit)
        )
        with self._tx() as session:
            return self._views(session, list(session.execute(stmt).scalars()))

    def settle(
        self, job_id: int, result: Mapping[str, Any] | None = None, *, settle_block: int | None = None
    ) -> Job:
        extra = dict(result or {})
        _check_json(extra, "result")
        now = self._now()
        with self._tx() as session:
            row = self._lock(session, job_id)
            if row.state != JobState.CONFIRMED:
                raise JobStateError(job_id, row.state, "settle", hint="only confirmed jobs are settled")
            if extra:
                row.result = {**(row.result or {}), **extra}
            row.settle_block = settle_block
            row.updated_at = now
            return self._view(session, row)

    def waiting_counts(self) -> dict[str, int]:
        with self._tx() as session:
            unsettled = session.execute(
                sa.select(sa.func.count()).where(
                    _c.state == JobState.CONFIRMED.value, _c.settle_block.is_not(None)
                )
            ).scalar_one()
            stalled = session.execute(
                sa.select(sa.func.count()).where(_c.state.in_(_UNFINISHED), _c.waiting.is_not(None))
            ).scalar_one()
        return {"unsettled": int(unsettled), "stalled": int(stalled)}

    def report_error(self, job_id: int, worker_id: str, error: BaseException | str) -> Job:
        message = describe_error(error)
        now = self._now()
        with self._tx() as session:
            row = self._held(session, job_id, worker_id)
            row.last_error = message
            row.waiting = None
            row.worker_id = None
            row.lease_until = None
            row.updated_at = now
            if not is_retryable(error):
                self._fail(row, f"permanent error on attempt {row.attempts}: {message}", now)
            elif row.attempts >= row.max_attempts:
                self._fail(row, f"gave up after {row.attempts} attempts; last error: {message}", now)
            else:
                retry_after = getattr(error, "retry_after", None)
                delay = self.policy.delay(
                    row.attempts, self._rng, at_least=float(retry_after) if retry_after else 0.0
                )
                row.state = JobState.QUEUED.value
                row.run_after = now + timedelta(seconds=delay)
                log.warning(
                    "job %s (%s) attempt %d/%d failed, retrying in %.1f s: %s",
                    job_id, row.key, row.attempts, row.max_attempts, delay, message,
                )  # fmt: skip
            return self._view(session, row)

    def _fail(self, row: JobRow, reason: str, now: datetime) -> None:
        row.state = JobState.FAILED.value
        row.waiting = None
        row.reason = reason
        row.worker_id = None
        row.lease_until = None
        row.finished_at = now
        row.updated_at = now
        log.error(
            "job %s (%s) FAILED: %s (re-queue it with `chrysalis retry %s`)", row.id, row.key, reason, row.id
        )

    def release(
        self, job_id: int, worker_id: str, *, delay_s: float = 0.0, waiting: str | None = None
    ) -> Job:
        now = self._now()
        with self._tx() as session:
            row = self._held(session, job_id, worker_id)
            if waiting is not None:
                row.waiting = waiting
            row.state = JobState.QUEUED.value
            row.attempts = max(0, row.attempts - 1)
            row.worker_id = None
            row.lease_until = None
            row.run_after = now + timedelta(seconds=delay_s)
            row.updated_at = now
            return self._view(session, row)

    def cancel(self, job_id: int, reason: str) -> Job:
        now = self._now()
        with self._tx() as session:
            row = self._lock(session, job_id)
            self._cancel_row(row, reason, now)
            return self._view(session, row)

    def _cancel_row(self, row: JobRow, reason: str, now: datetime) -> None:
        if row.state == JobState.CANCELLED:
            return
        if row.state == JobState.CONFIRMED:
            raise JobStateError(
                row.id or 0, row.state, "cancel", hint="a confirmed job's outcome is final; nothing to cancel"
            )
        row.state = JobState.CANCELLED.value
        row.reason = reason
        row.waiting = None
        row.worker_id = None
        row.lease_until = None
        row.finished_at = now
        row.updated_at = now
        log.warning("job %s (%s) cancelled: %s", row.id, row.key, reason)

    def cancel_orphaned(self, block_hashes: Iterable[str], reason: str = ORPHANED_REASON) -> list[Job]:
        hashes = [h.lower() for h in block_hashes]
        if not hashes:
            return []
        now = self._now()
        with self._tx() as session:
            stmt = (
                sa.select(JobRow)
                .where(_c.block_hash.in_(hashes), _c.state.in_(_UNFINISHED + (JobState.FAILED.value,)))
                .order_by(_c.id)
                .with_for_update()
            )
            rows = list(session.execute(stmt).scalars())
            for row in rows:
                self._cancel_row(row, reason, now)
            return self._views(session, rows)

    def retry(self, job_id: int) -> Job:
        now = self._now()
        with self._tx() as session:
            row = self._lock(session, job_id)
            if row.state != JobState.FAILED:
                raise JobStateError(
                    job_id, row.state, "retry", hint="only failed jobs can be retried; queued and running ones "
                    "are already in progress, cancelled ones were dropped on purpose",
                )  # fmt: skip
            row.state = JobState.QUEUED.value
            row.attempts = 0
            row.run_after = now
            row.reason = None
            row.finished_at = None
            row.updated_at = now
            log.info("job %s (%s) re-queued by retry, resuming after stage %s", job_id, row.key, row.stage)
            return self._view(session, row)

    def reap(self) -> list[Job]:
        now = self._now()
        with self._tx() as session:
            stmt = (
                sa.select(JobRow)
                .where(_c.state == JobState.RUNNING.value, _c.lease_until < now)
                .order_by(_c.id)
                .with_for_update(skip_locked=True)
            )
            rows = list(session.execute(stmt).scalars())
            for row in rows:
                message = (
                    f"lease expired: worker {row.worker_id!r} stopped heartbeating (attempt {row.attempts})"
                )
                row.last_error = message
                row.worker_id = None
                row.lease_until = None
                row.updated_at = now
                if row.attempts >= row.max_attempts:
                    self._fail(row, f"gave up after {row.attempts} attempts; last error: {message}", now)
                else:
                    row.state = JobState.QUEUED.value
                    row.run_after = now
                    log.warning("job %s (%s) reaped: %s", row.id, row.key, message)
            return self._views(session, rows)

    # -- reading --------------------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        with self._tx() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFoundError(job_id)
            return self._view(session, row)

    def get_by_key(self, key: str) -> Job | None:
        with self._tx() as session:
            row = session.execute(sa.select(JobRow).where(_c.key == key)).scalar_one_or_none()
            return self._view(session, row) if row is not None else None

    def by_source_blocks(self, block_hashes: Iterable[str]) -> list[Job]:
        hashes = [h.lower() for h in block_hashes]
        if not hashes:
            return []
        with self._tx() as session:
            rows = list(
                session.execute(sa.select(JobRow).where(_c.block_hash.in_(hashes)).order_by(_c.id)).scalars()
            )
            return self._views(session, rows)

    def list_jobs(
        self,
        *,
        state: JobState | str | None = None,
        kind: JobKind | str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Job]:
        stmt = sa.select(JobRow)
        if state is not None:
            stmt = stmt.where(_c.state == JobState(state).value)
        if kind is not None:
            stmt = stmt.where(_c.kind == JobKind(kind).value)
        stmt = stmt.order_by(_c.id.desc() if newest_first else _c.id).limit(limit).offset(offset)
        with self._tx() as session:
            return self._views(session, list(session.execute(stmt).scalars()))

    def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        with self._tx() as session:
            for state, n in session.execute(sa.select(_c.state, sa.func.count()).group_by(_c.state)):
                counts[JobState(state)] = int(n)
        return counts

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """``with store._tx() as session``: commit on success, roll back on error, map connection failures."""

    def __init__(self, store: SqlJobStore) -> None:
        self._store = store
        self._session: Session | None = None

    def __enter__(self) -> Session:
        self._session = self._store._session()
        try:
            self._session.begin()
        except OperationalError as exc:
            self._session.close()
            raise _unavailable(self._store.db, exc) from exc
        return self._session

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        try:
            if exc is None:
                self._session.commit()
            else:
                self._session.rollback()
        except OperationalError as err:
            raise _unavailable(self._store.db, err) from err
        finally:
            self._session.close()
        if isinstance(exc, OperationalError):
            raise _unavailable(self._store.db, exc) from exc


def _unavailable(db: Database, exc: OperationalError) -> BackendUnavailableError:
    return db.unavailable(exc, hint="check database.url and that the database server is running")


def open_job_store(
    url: str,
    *,
    policy: RetryPolicy | None = None,
    clock: Callable[[], datetime] | None = None,
    migrate: bool = True,
    busy_timeout_ms: int = 30_000,
) -> SqlJobStore:
    """The job store on a database of its own at ``url`` (migrated unless ``migrate`` is false), for commands
    and tests that need only the jobs; closing the store closes the database.

    Raises:
        ConfigError: a malformed URL or an unsupported backend.
        BackendUnavailableError: the database cannot be reached.
    """
    db = Database.open(url, migrate=migrate, busy_timeout_ms=busy_timeout_ms)
    return SqlJobStore(db, policy=policy, clock=clock)


def _job(row: JobRow, stages: list[JobStageRow]) -> Job:
    """The :class:`Job` snapshot of a row and its recorded stages."""
    source = None
    if row.tx_hash is not None and row.block_hash is not None and row.chain_id is not None:
        source = LogKey(row.chain_id, row.tx_hash, int(row.log_index or 0), row.block_hash)
    outputs = {Stage(s.stage): s.output for s in sorted(stages, key=lambda s: Stage(s.stage).position)}
    assert row.id is not None
    return Job(
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


def _source_columns(source: LogKey | None, block_number: int | None) -> dict[str, Any]:
    if source is None:
        return {
            "chain_id": None,
            "tx_hash": None,
            "log_index": None,
            "block_hash": None,
            "block_number": block_number,
        }
    return {
        "chain_id": source.chain_id,
        "tx_hash": source.tx_hash.lower(),
        "log_index": source.log_index,
        "block_hash": source.block_hash.lower(),
        "block_number": block_number,
    }


def _revivable(row: JobRow, source: LogKey | None) -> bool:
    """A cancelled job comes back when its log arrives from another block (re-mined after a reorg), or from the
    same block after it was cancelled as orphaned: the watcher delivers only logs of blocks it has linked to the
    canonical chain, so that block is canonical after all (a reorg that flipped back, or a false alarm)."""
    if row.state != JobState.CANCELLED or source is None or row.block_hash is None:
        return False
    return row.block_hash != source.block_hash.lower() or row.reason == ORPHANED_REASON


def _check_json(value: Any, what: str) -> None:
    try:
        canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable (no bytes, NaN or sets): {exc}") from None
