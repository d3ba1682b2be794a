"""Review items in the agent's database (tables ``review_items`` and ``review_events`` of
:mod:`agent.store.tables`): the curators' queue, its transitions and its audit trail.

Subjects are pipeline jobs (``submit(job_id, ...)``), refreshed tokens (``refresh:<job>:<token>``) or any other
keyed item (``submit("genesis:<n>", ...)``, ``token_id`` None), e.g. a genesis collection's items, which are
approved in bulk (:meth:`ReviewStore.approve_all`). Regeneration runs in the studio
(:mod:`agent.studio.regenerate`): the curator's new candidate replaces the old one as a new *revision*, and goes
back to ``awaiting_review``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import OperationalError

from agent.errors import BackendUnavailableError
from agent.review.model import (
    MAX_REROLLS,
    Candidate,
    RegenerateRequest,
    ReviewConflictError,
    ReviewEvent,
    ReviewInputError,
    ReviewItem,
    ReviewNotFoundError,
    ReviewState,
    subject_key,
)
from agent.store.db import Database
from agent.store.tables import REVIEW_EVENTS, REVIEW_ITEMS

_items = REVIEW_ITEMS
_events = REVIEW_EVENTS


def _curator(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ReviewInputError(
            "a review decision needs the curator's name (1..200 characters)",
            hint="log in to the studio, or pass --as NAME on the command line",
        )
    return name


class ReviewStore:
    """Review items in the agent's database (SQLite or PostgreSQL, the same one as the jobs).

    Every transition is one guarded ``UPDATE ... WHERE state = ... AND revision = ...``: two curators acting on
    the same item at once cannot both win, and a decision is never applied to a revision the curator did not see.
    """

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- plumbing -------------------------------------------------------------------------------------------

    def _begin(self) -> Any:
        try:
            return self.db.begin()
        except OperationalError as exc:  # pragma: no cover - the server went away
            raise BackendUnavailableError(
                f"cannot reach the database: {exc.orig}", hint="check database.url and that it is running"
            ) from exc

    def _log(self, conn: sa.Connection, review_id: int, revision: int, action: str, actor: str,
             detail: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        conn.execute(
            _events.insert().values(
                review_id=review_id, revision=revision, action=action, actor=actor,
                detail=dict(detail or {}), at=self._clock(),
            )
        )  # fmt: skip

    def _row(self, conn: sa.Connection, where: Any) -> ReviewItem | None:
        row = conn.execute(sa.select(_items).where(where)).mappings().first()
        return _item(row) if row is not None else None

    # -- reading --------------------------------------------------------------------------------------------

    def get(self, review_id: int) -> ReviewItem:
        with self.db.connect() as conn:
            item = self._row(conn, _items.c.id == review_id)
        if item is None:
            raise ReviewNotFoundError(f"#{review_id}")
        return item

    def by_key(self, subject: int | str) -> ReviewItem | None:
        """The item of a job id (or key), if it was submitted."""
        with self.db.connect() as conn:
            return self._row(conn, _items.c.key == subject_key(subject))

    def list_items(
        self,
        *,
        states: Iterable[ReviewState | str] | None = None,
        kind: str | None = None,
        token_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[ReviewItem]:
        stmt = sa.select(_items)
        if states is not None:
            stmt = stmt.where(_items.c.state.in_([ReviewState(s).value for s in states]))
        if kind is not None:
            stmt = stmt.where(_items.c.kind == kind)
        if token_id is not None:
            stmt = stmt.where(_items.c.token_id == token_id)
        order = _items.c.id.desc() if newest_first else _items.c.id
        stmt = stmt.order_by(order).limit(limit).offset(offset)
        with self.db.connect() as conn:
            return [_item(r) for r in conn.execute(stmt).mappings()]

    def counts(self) -> dict[ReviewState, int]:
        """Items in every state (zeros included)."""
        out = {state: 0 for state in ReviewState}
        stmt = sa.select(_items.c.state, sa.func.count()).group_by(_items.c.state)
        with self.db.connect() as conn:
            for state, n in conn.execute(stmt):
                out[ReviewState(state)] = int(n)
        return out

    def events(self, review_id: int | None = None, *, limit: int = 100) -> list[ReviewEvent]:
        """An item's audit trail (oldest first), or the newest ``limit`` events of all items (newest first)."""
        stmt = sa.select(_events)
        if review_id is not None:
            stmt = stmt.where(_events.c.review_id == review_id).order_by(_events.c.id)
        else:
            stmt = stmt.order_by(_events.c.id.desc())
        with self.db.connect() as conn:
            rows = conn.execute(stmt.limit(limit)).mappings().all()
        return [ReviewEvent(r["id"], r["review_id"], r["revision"], r["action"], r["actor"], r["detail"], r["at"])
                for r in rows]  # fmt: skip

    def version(self) -> tuple[int, int]:
        """Changes to the queue show as a change of this value (newest event id, items): for live updates."""
        with self.db.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(_events.c.id))).scalar()
            count = conn.execute(sa.select(sa.func.count()).select_from(_items)).scalar()
        return int(newest or 0), int(count or 0)

    # -- writing --------------------------------------------------------------------------------------------

    def submit(
        self,
        subject: int | str,
        *,
        token_id: int | None,
        stage: int,
        candidate: Candidate,
        kind: str = "evolve",
        actor: str = "pipeline",
    ) -> ReviewItem:
        """Put a candidate up for review; idempotent by subject (a retried job finds its item as it is now)."""
        key = subject_key(subject)
        now = self._clock()
        values = {
            "key": key,
            "job_id": subject if isinstance(subject, int) else None,
            "token_id": token_id,
            "stage": int(stage),
            "kind": kind,
            "state": ReviewState.AWAITING.value,
            "revision": 1,
            "candidate": candidate.to_json(),
            "created_at": now,
            "updated_at": now,
        }
        insert = self.db.insert(_items).values(**values)
        insert = insert.on_conflict_do_nothing(index_elements=["key"])
        with self._begin() as conn:
            inserted = conn.execute(insert).rowcount
            item = self._row(conn, _items.c.key == key)
            assert item is not None
            if inserted:
                self._log(conn, item.id, 1, "submitted", actor, {"provenance": candidate.provenance})
        return item

    def _transition(
        self,
        review_id: int,
        *,
        action: str,
        actor: str,
        from_states: Sequence[ReviewState],
        revision: int | None,
        values: Mapping[str, Any],
        detail: Mapping[str, Any] | None = None,
        new_revision: bool = False,
    ) -> ReviewItem:
        with self._begin() as conn:
            current = self._row(conn, _items.c.id == review_id)
            if current is None:
                raise ReviewNotFoundError(f"#{review_id}")
            stmt = _items.update().where(
                _items.c.id == review_id, _items.c.state.in_([s.value for s in from_states])
            )
            if revision is not None:
                stmt = stmt.where(_items.c.revision == revision)
            changes = dict(values, updated_at=self._clock())
            if new_revision:
                changes["revision"] = _items.c.revision + 1
            if conn.execute(stmt.values(**changes)).rowcount != 1:
                expected = " or ".join(s.value for s in from_states)
                if revision is not None:
                    expected += f" at revision {revision}"
                raise ReviewConflictError(current, action, expected)
            item = self._row(conn, _items.c.id == review_id)
            assert item is not None
            self._log(conn, review_id, item.revision, action, actor, detail)
        return item

    def approve(self, review_id: int, by: str, *, revision: int | None = None) -> ReviewItem:
        """Approve the candidate (the one at ``revision`` when given: what the curator saw).

        Raises:
            ReviewConflictError: it is not awaiting review (or moved on to another revision).
        """
        by = _curator(by)
        item = self._transition(
            review_id, action="approved", actor=by, from_states=[ReviewState.AWAITING], revision=revision,
            values={"state": ReviewState.APPROVED.value, "decided_by": by, "decided_at": self._clock(),
                    "error": None},
            detail={},
        )  # fmt: skip
        return item

    def approve_many(
        self, review_ids: Iterable[int | tuple[int, int]], by: str
    ) -> tuple[list[ReviewItem], list[ReviewConflictError]]:
        """Approve several items, each an id or an ``(id, revision)`` pair (approved only at that revision: what
        the curator saw); returns those approved and the conflicts (decided by someone else, or changed)."""
        by = _curator(by)
        done: list[ReviewItem] = []
        conflicts: list[ReviewConflictError] = []
        for entry in review_ids:
            review_id, revision = entry if isinstance(entry, tuple) else (entry, None)
            try:
                done.append(self.approve(review_id, by, revision=revision))
            except ReviewConflictError as exc:
                conflicts.append(exc)
        return done, conflicts

    def approve_all(self, by: str, *, kind: str | None = "genesis") -> list[ReviewItem]:
        """Approve every item of ``kind`` awaiting review (bulk approval of a genesis collection)."""
        waiting = self.list_items(states=[ReviewState.AWAITING], kind=kind, limit=1_000_000)
        done, _ = self.approve_many([(i.id, i.revision) for i in waiting], by)  # as listed, not newer
        return done

    def reject(self, review_id: int, by: str, reason: str, *, revision: int | None = None) -> ReviewItem:
        """Reject the candidate for ``reason`` (required: it is what the job ends with)."""
        by = _curator(by)
        reason = (reason or "").strip()
        if not reason:
            raise ReviewInputError(
                "a rejection needs a reason", hint="say what is wrong with it (it becomes the job's reason)"
            )
        return self._transition(
            review_id, action="rejected", actor=by, from_states=[ReviewState.AWAITING], revision=revision,
            values={"state": ReviewState.REJECTED.value, "decided_by": by, "decided_at": self._clock(),
                    "reason": reason},
            detail={"reason": reason},
        )  # fmt: skip

    def request_regeneration(
        self,
        review_id: int,
        by: str,
        *,
        new_seed: bool = False,
        strength: float | None = None,
        revision: int | None = None,
    ) -> ReviewItem:
        """Ask for the next revision: a new seed (the next reroll), a new strength, or both.

        Raises:
            ReviewInputError: neither is asked for, or ``strength`` is outside (0, 1].
            ReviewConflictError: it is not awaiting review.
        """
        by = _curator(by)
        if strength is not None and not 0.0 < float(strength) <= 1.0:
            raise ReviewInputError(
                f"strength {strength} is outside (0, 1]",
                hint="0.1 keeps most of the previous image, 1.0 ignores it",
            )
        if not new_seed and strength is None:
            raise ReviewInputError(
                "regenerating needs a new seed or a new strength", hint="tick 'new seed' or enter a strength"
            )
        item = self.get(review_id)
        if strength is not None and item.candidate.strength is None:
            raise ReviewInputError(
                f"review #{review_id} has no previous image, so a strength changes nothing",
                hint="ask for a new seed instead",
            )
        reroll = item.candidate.reroll + 1 if new_seed else item.candidate.reroll
        if reroll > MAX_REROLLS:
            raise ReviewInputError(
                f"review #{review_id} was rerolled {item.candidate.reroll} times already",
                hint="approve or reject one of them",
            )
        request = RegenerateRequest(reroll, None if strength is None else float(strength), by)
        return self._transition(
            review_id, action="regenerate", actor=by, from_states=[ReviewState.AWAITING],
            revision=revision if revision is not None else item.revision,
            values={"state": ReviewState.REGENERATING.value, "regenerate": request.to_json(), "error": None},
            detail=request.to_json(),
        )  # fmt: skip

    def next_regeneration(self) -> ReviewItem | None:
        """The oldest item waiting to be regenerated."""
        items = self.list_items(states=[ReviewState.REGENERATING], limit=1)
        return items[0] if items else None

    def finish_regeneration(self, review_id: int, revision: int, candidate: Candidate) -> ReviewItem:
        """Store the new candidate as the next revision, back to ``awaiting_review``."""
        item = self.get(review_id)
        actor = item.regenerate.requested_by if item.regenerate else "studio"
        return self._transition(
            review_id, action="regenerated", actor=actor, from_states=[ReviewState.REGENERATING],
            revision=revision, new_revision=True,
            values={"state": ReviewState.AWAITING.value, "candidate": candidate.to_json(), "regenerate": None,
                    "error": None},
            detail={"provenance": candidate.provenance, "reroll": candidate.reroll, "strength": candidate.strength},
        )  # fmt: skip

    def fail_regeneration(self, review_id: int, revision: int, error: str) -> ReviewItem:
        """Give the item back to review with the previous candidate and the error."""
        return self._transition(
            review_id, action="regenerate_failed", actor="studio", from_states=[ReviewState.REGENERATING],
            revision=revision,
            values={"state": ReviewState.AWAITING.value, "regenerate": None, "error": error},
            detail={"error": error},
        )  # fmt: skip

    def close(self) -> None:
        """Close the database (the store's connections)."""
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _item(row: RowMapping | Mapping[str, Any]) -> ReviewItem:
    """The :class:`ReviewItem` of a ``review_items`` row."""
    regen = row["regenerate"]
    return ReviewItem(
        id=int(row["id"]),
        key=row["key"],
        job_id=row["job_id"],
        token_id=int(row["token_id"]) if row["token_id"] is not None else None,
        stage=int(row["stage"]),
        kind=row["kind"],
        state=ReviewState(row["state"]),
        revision=int(row["revision"]),
        candidate=Candidate.from_json(row["candidate"]),
        regenerate=RegenerateRequest.from_json(regen) if regen else None,
        reason=row["reason"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
