"""The refresh tables (:mod:`agent.store.tables`; states in :mod:`agent.refresh.models`), read and written on
the agent's :class:`~agent.store.db.Database`.

Every item update is a compare-and-set on the item's state (``UPDATE ... WHERE state IN (expected)``), so two
writers -- a refresh advancing its tokens and a newer refresh superseding them -- never overwrite each other: the
loser's update matches no row and it moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from agent.domain import Submission
from agent.errors import BackendUnavailableError
from agent.jobs import JobState
from agent.refresh.models import UNSENT_STATES, ItemState
from agent.store.db import Database
from agent.store.tables import JOBS, REFRESH_ITEMS, REFRESH_RUNS, REFRESH_TRIGGERS, REFRESH_TXS

_jobs = JOBS
runs, items, txs, triggers = REFRESH_RUNS, REFRESH_ITEMS, REFRESH_TXS, REFRESH_TRIGGERS


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RefreshRun:
    """One refresh as recorded: which block it reads, its budget and its pause.

    Attributes:
        job_id: Its ``refresh`` job. trigger: ``cron``, ``price``, ``manual`` or ``studio``. policy: The policy
            that fired it, if any.
        block_number, block_hash, block_timestamp: The ONE block every token's inputs are read at.
        feed_answer: The price feed's raw answer at that block (the price trigger's next baseline).
        force: Regenerate even tokens whose traits did not change.
        allowance: Tokens it may regenerate so far (``refresh.max_tokens`` per go).
        shared: The block-level oracle readings, read once for every token (and what the guard skipped).
        paused_until, pause_reason, pause_detail: The budget that paused it and until when.
    """

    job_id: int
    trigger: str
    policy: str | None
    block_number: int
    block_hash: str
    block_timestamp: int
    feed_answer: int | None
    force: bool
    allowance: int
    shared: Mapping[str, Any]
    paused_until: datetime | None
    pause_reason: str | None
    pause_detail: str | None
    created_at: datetime


@dataclass(frozen=True)
class RefreshItem:
    """One token of one refresh (see :class:`~agent.refresh.models.ItemState`)."""

    job_id: int
    token_id: int
    state: ItemState
    stage: int | None
    parent_digest: str | None
    digest: str | None
    inputs: Mapping[str, Any] | None
    generated: Mapping[str, Any] | None
    published: Mapping[str, Any] | None
    tx_hash: str | None
    reason: str | None


@dataclass(frozen=True)
class RefreshTx:
    """One ``refreshMetadata`` transaction and what became of it (``sent``, ``confirmed``, ``reverted``,
    ``dropped``)."""

    job_id: int
    tx_hash: str
    nonce: int
    tokens: int
    gas_limit: int
    gas_used: int | None
    fee_wei: int | None
    provenance: str
    state: str
    submission: Submission
    block_number: int | None
    sent_at: datetime


class RefreshStore:
    """Reads and writes the refresh tables.

    Args:
        db: The agent's database (the job store's).
        clock: UTC now (the job store's clock, so budgets and leases agree).
    """

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.clock = clock or utcnow

    def _begin(self) -> Any:
        return _Tx(self.db)

    # -- runs -------------------------------------------------------------------------------------------------

    def run(self, job_id: int) -> RefreshRun | None:
        with self._begin() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.job_id == job_id)).mappings().first()
        return _run(row) if row is not None else None

    def create_run(
        self,
        job_id: int,
        *,
        trigger: str,
        policy: str | None,
        block_number: int,
        block_hash: str,
        block_timestamp: int,
        feed_answer: int | None,
        force: bool,
        allowance: int,
        shared: Mapping[str, Any],
        token_ids: Sequence[int],
    ) -> tuple[RefreshRun, int]:
        """Record the run and one ``pending`` item per token, then supersede older runs' unsent items of
        the same tokens. Returns the run and how many items were superseded. Idempotent per job."""
        now = self.clock()
        with self._begin() as conn:
            existing = conn.execute(sa.select(runs).where(runs.c.job_id == job_id)).mappings().first()
            if existing is not None:
                return _run(existing), 0
            conn.execute(
                runs.insert().values(
                    job_id=job_id, trigger=trigger, policy=policy, block_number=block_number,
                    block_hash=block_hash, block_timestamp=block_timestamp,
                    feed_answer=None if feed_answer is None else str(feed_answer), force=force,
                    allowance=allowance, shared=dict(shared), created_at=now, updated_at=now,
                )
            )  # fmt: skip
            rows = [
                {"job_id": job_id, "token_id": t, "state": ItemState.PENDING.value, "updated_at": now}
                for t in token_ids
            ]
            for start in range(0, len(rows), 5_000):
                conn.execute(items.insert(), rows[start : start + 5_000])
            older = sa.select(runs.c.job_id).where(
                runs.c.job_id != job_id, runs.c.block_number <= block_number
            )
            mine = sa.select(items.c.token_id).where(items.c.job_id == job_id)
            superseded = conn.execute(
                items.update()
                .where(
                    items.c.job_id.in_(older),
                    items.c.state.in_([s.value for s in UNSENT_STATES]),
                    items.c.token_id.in_(mine),
                )
                .values(
                    state=ItemState.SUPERSEDED.value,
                    reason=f"superseded by refresh job {job_id} (block {block_number})",
                    updated_at=now,
                )
            ).rowcount
            row = conn.execute(sa.select(runs).where(runs.c.job_id == job_id)).mappings().one()
        return _run(row), int(superseded or 0)

    def pause(self, job_id: int, until: datetime, reason: str, detail: str) -> None:
        with self._begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.job_id == job_id)
                .values(paused_until=until, pause_reason=reason, pause_detail=detail, updated_at=self.clock())
            )

    def resume(self, job_id: int, *, add_allowance: int = 0) -> None:
        """Clear the pause (and grant ``add_allowance`` more tokens after a ``max_tokens`` pause)."""
        with self._begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.job_id == job_id)
                .values(
                    paused_until=None,
                    pause_reason=None,
                    pause_detail=None,
                    allowance=runs.c.allowance + add_allowance,
                    updated_at=self.clock(),
                )
            )

    def runs(self, *, limit: int = 20) -> list[RefreshRun]:
        """The newest runs first."""
        with self._begin() as conn:
            rows = conn.execute(sa.select(runs).order_by(runs.c.job_id.desc()).limit(limit)).mappings().all()
        return [_run(r) for r in rows]

    # -- items ------------------------------------------------------------------------------------------------

    def items(
        self,
        job_id: int,
        states: Iterable[ItemState] | None = None,
        *,
        limit: int | None = None,
        token_ids: Iterable[int] | None = None,
    ) -> list[RefreshItem]:
        """The run's items in token order, optionally in ``states`` / among ``token_ids``."""
        stmt = sa.select(items).where(items.c.job_id == job_id).order_by(items.c.token_id)
        if states is not None:
            stmt = stmt.where(items.c.state.in_([ItemState(s).value for s in states]))
        if token_ids is not None:
            stmt = stmt.where(items.c.token_id.in_(list(token_ids)))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._begin() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [_item(r) for r in rows]

    def item(self, job_id: int, token_id: int) -> RefreshItem | None:
        found = self.items(job_id, token_ids=[token_id])
        return found[0] if found else None

    def counts(self, job_id: int) -> dict[ItemState, int]:
        """Items per state (zeros included)."""
        stmt = (
            sa.select(items.c.state, sa.func.count()).where(items.c.job_id == job_id).group_by(items.c.state)
        )
        with self._begin() as conn:
            found = {ItemState(s): int(n) for s, n in conn.execute(stmt).all()}
        return {s: found.get(s, 0) for s in ItemState}

    def move(
        self,
        job_id: int,
        changes: Sequence[tuple[int, Iterable[ItemState], Mapping[str, Any]]],
    ) -> int:
        """Compare-and-set many items: ``(token_id, expected states, new values)``; ``state`` in the values
        may be an :class:`ItemState`. Returns how many items matched (and changed)."""
        if not changes:
            return 0
        now = self.clock()
        moved = 0
        with self._begin() as conn:
            for token_id, expected, values in changes:
                vals = {k: (v.value if isinstance(v, ItemState) else v) for k, v in values.items()}
                vals["updated_at"] = now
                result = conn.execute(
                    items.update()
                    .where(
                        items.c.job_id == job_id,
                        items.c.token_id == token_id,
                        items.c.state.in_([ItemState(s).value for s in expected]),
                    )
                    .values(**vals)
                )
                moved += int(result.rowcount or 0)
        return moved

    # -- transactions -----------------------------------------------------------------------------------------

    def record_sent(
        self, job_id: int, submission: Submission, token_ids: Sequence[int], provenance: str
    ) -> None:
        """Record a broadcast ``refreshMetadata`` and mark its tokens ``submitted``, in one transaction (before
        waiting for it: a restart then waits for it instead of sending again)."""
        now = self.clock()
        with self._begin() as conn:
            conn.execute(
                txs.insert().values(
                    job_id=job_id, tx_hash=submission.tx_hash, nonce=submission.nonce, tokens=len(token_ids),
                    gas_limit=submission.gas, provenance=provenance, state="sent",
                    submission=submission.to_json(), sent_at=now,
                )
            )  # fmt: skip
            conn.execute(
                items.update()
                .where(
                    items.c.job_id == job_id,
                    items.c.token_id.in_(list(token_ids)),
                    items.c.state == ItemState.PUBLISHED.value,
                )
                .values(state=ItemState.SUBMITTED.value, tx_hash=submission.tx_hash, updated_at=now)
            )

    def sent(self, job_id: int) -> list[RefreshTx]:
        """The run's transactions still waited for."""
        with self._begin() as conn:
            rows = (
                conn.execute(
                    sa.select(txs).where(txs.c.job_id == job_id, txs.c.state == "sent").order_by(txs.c.id)
                )
                .mappings()
                .all()
            )
        return [_tx(r) for r in rows]

    def txs(self, job_id: int) -> list[RefreshTx]:
        with self._begin() as conn:
            rows = (
                conn.execute(sa.select(txs).where(txs.c.job_id == job_id).order_by(txs.c.id)).mappings().all()
            )
        return [_tx(r) for r in rows]

    def finish_tx(
        self,
        tx_hash: str,
        state: str,
        *,
        gas_used: int | None = None,
        fee_wei: int | None = None,
        block_number: int | None = None,
        final_hash: str | None = None,
    ) -> None:
        with self._begin() as conn:
            conn.execute(
                txs.update()
                .where(txs.c.tx_hash == tx_hash)
                .values(
                    state=state,
                    gas_used=gas_used,
                    fee_wei=None if fee_wei is None else str(fee_wei),
                    block_number=block_number,
                    final_hash=final_hash,
                    mined_at=self.clock() if block_number is not None else None,
                )
            )

    def replace_submission(self, tx_hash: str, submission: Submission) -> None:
        """Record the fee-bumped replacement of ``tx_hash`` (a restart then waits for the replacement)."""
        with self._begin() as conn:
            conn.execute(txs.update().where(txs.c.tx_hash == tx_hash).values(submission=submission.to_json()))

    def gas_between(self, start: datetime, end: datetime) -> int:
        """Gas of refresh transactions sent in ``[start, end)``: used gas once mined, the gas limit while in
        flight (reserved), nothing for one that was never mined."""
        spent = sa.func.coalesce(
            sa.func.sum(
                sa.case(
                    (txs.c.state == "sent", txs.c.gas_limit),
                    else_=sa.func.coalesce(txs.c.gas_used, 0),
                )
            ),
            0,
        )
        stmt = sa.select(spent).where(txs.c.sent_at >= start, txs.c.sent_at < end, txs.c.state != "dropped")
        with self._begin() as conn:
            return int(conn.execute(stmt).scalar_one())

    # -- price baselines --------------------------------------------------------------------------------------

    def baseline(self, feed: str) -> tuple[int, int] | None:
        """``(raw answer, block)`` of ``feed`` at the last refresh, if recorded."""
        with self._begin() as conn:
            row = conn.execute(sa.select(triggers).where(triggers.c.feed == feed.lower())).mappings().first()
        return (int(row["baseline"]), int(row["baseline_block"])) if row is not None else None

    def set_baseline(self, feed: str, answer: int, block: int) -> None:
        """Record ``answer`` at ``block`` as ``feed``'s baseline unless a later block's is recorded."""
        now = self.clock()
        with self._begin() as conn:
            row = conn.execute(
                sa.select(triggers).where(triggers.c.feed == feed.lower()).with_for_update()
            ).mappings().first()  # fmt: skip
            if row is None:
                conn.execute(
                    triggers.insert().values(
                        feed=feed.lower(), baseline=str(answer), baseline_block=block, updated_at=now
                    )
                )
            elif int(row["baseline_block"]) <= block:
                conn.execute(
                    triggers.update()
                    .where(triggers.c.feed == feed.lower())
                    .values(baseline=str(answer), baseline_block=block, updated_at=now)
                )

    def baselines(self) -> dict[str, tuple[str, int]]:
        """Every feed's ``(raw answer, block)`` baseline (none on a database without the refresh tables)."""
        if not self.db.has_table(triggers.name):
            return {}
        with self._begin() as conn:
            rows = conn.execute(sa.select(triggers)).mappings().all()
        return {str(r["feed"]): (str(r["baseline"]), int(r["baseline_block"])) for r in rows}

    # -- jobs -------------------------------------------------------------------------------------------------

    def open_refresh_jobs(self) -> list[tuple[int, str, dict[str, Any]]]:
        """``(id, state, payload)`` of queued and running refresh jobs."""
        stmt = (
            sa.select(_jobs.c.id, _jobs.c.state, _jobs.c.payload)
            .where(
                _jobs.c.kind == "refresh", _jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value])
            )
            .order_by(_jobs.c.id)
        )
        with self._begin() as conn:
            return [(int(i), str(s), dict(p or {})) for i, s, p in conn.execute(stmt).all()]


class _Tx:
    """``db.begin()`` with connection failures turned into :class:`BackendUnavailableError`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cm: Any = None

    def __enter__(self) -> sa.Connection:
        try:
            self._cm = self.db.begin()
            conn: sa.Connection = self._cm.__enter__()
            return conn
        except OperationalError as exc:
            raise _unavailable(self.db, exc) from exc

    def __exit__(self, *exc: object) -> None:
        try:
            self._cm.__exit__(*exc)
        except OperationalError as err:
            raise _unavailable(self.db, err) from err


def _unavailable(db: Database, exc: OperationalError) -> BackendUnavailableError:
    return db.unavailable(
        exc,
        prefix="the database at",
        hint="check database.url and that the server is running; the refresh resumes where it stopped",
    )


def _run(r: Mapping[str, Any]) -> RefreshRun:
    return RefreshRun(
        job_id=int(r["job_id"]),
        trigger=str(r["trigger"]),
        policy=r["policy"],
        block_number=int(r["block_number"]),
        block_hash=str(r["block_hash"]),
        block_timestamp=int(r["block_timestamp"]),
        feed_answer=int(r["feed_answer"]) if r["feed_answer"] is not None else None,
        force=bool(r["force"]),
        allowance=int(r["allowance"]),
        shared=dict(r["shared"] or {}),
        paused_until=_aware(r["paused_until"]),
        pause_reason=r["pause_reason"],
        pause_detail=r["pause_detail"],
        created_at=_aware(r["created_at"]) or utcnow(),
    )


def _item(r: Mapping[str, Any]) -> RefreshItem:
    return RefreshItem(
        job_id=int(r["job_id"]),
        token_id=int(r["token_id"]),
        state=ItemState(r["state"]),
        stage=r["stage"],
        parent_digest=r["parent_digest"],
        digest=r["digest"],
        inputs=r["inputs"],
        generated=r["generated"],
        published=r["published"],
        tx_hash=r["tx_hash"],
        reason=r["reason"],
    )


def _tx(r: Mapping[str, Any]) -> RefreshTx:
    return RefreshTx(
        job_id=int(r["job_id"]),
        tx_hash=str(r["tx_hash"]),
        nonce=int(r["nonce"]),
        tokens=int(r["tokens"]),
        gas_limit=int(r["gas_limit"]),
        gas_used=r["gas_used"],
        fee_wei=int(r["fee_wei"]) if r["fee_wei"] is not None else None,
        provenance=str(r["provenance"]),
        state=str(r["state"]),
        submission=Submission.from_json(r["submission"]),
        block_number=r["block_number"],
        sent_at=_aware(r["sent_at"]) or utcnow(),
    )


def _aware(value: datetime | None) -> datetime | None:
    """The tables use :class:`~agent.store.tables.UTCDateTime`, but Core selects of a ``Table`` built by SQLModel
    keep its type; this only guards against a naive value slipping through."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
