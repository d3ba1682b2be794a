"""Human review between "generated" and "published" (review mode: ``studio.review = true``).

A generated result (image, lore, receipt) waits as a *candidate* in the state ``awaiting_review`` until a
curator approves it, rejects it with a reason, or asks for it to be regenerated with a new seed or strength.
Nothing is pinned to a remote backend and nothing is sent on-chain before the approval: the candidate's image
sits only in the embedded IPFS repo, where the studio shows it.

**What the pipeline calls** (between recording ``generated`` and publishing; same database as the jobs)::

    from agent.studio.review import Approved, Candidate, Pending, Rejected, ReviewGate

    gate = ReviewGate.for_store(job_store)          # once, when settings.studio.review is true
    ...
    gate.submit(job.id, token_id=request.token_id, stage=request.stage,
                candidate=Candidate.from_generated(generated, traits=inputs["rules"]["traits"],
                                                   name=inputs["token"]["name"]))   # idempotent
    decision = gate.decision(job.id)
    if isinstance(decision, Pending):    # not decided yet: give the job back, ask again later
        job_store.release(job.id, worker_id, delay_s=...)
    elif isinstance(decision, Rejected):  # final: end the job with the curator's reason
        job_store.cancel(job.id, decision.describe())
    else:                                 # Approved: publish THIS record (it may be a regenerated one)
        publish(decision.generated, approved_by=decision.approved_by)  # -> build_metadata(approved_by=...)

``decision.generated`` has the shape of the pipeline's ``generated`` record (``image_cid``, ``png_sha256``,
``lore``, ``receipt``, ``receipt_sha256``, ``provenance``). ``gate.approval(job.id)`` returns the approval
record alone (who, when, which revision) for a stage that needs only that.

Regeneration runs in the studio (:mod:`agent.studio.regenerate`): the curator's new candidate replaces the old
one as a new *revision*, and goes back to ``awaiting_review``. A new seed is a *reroll* of the request's on-chain
seed (:func:`reroll_seed`), so anyone can recompute it and the receipt still verifies.

Subjects are pipeline jobs (``submit(job_id, ...)``) or any other keyed item (``submit("genesis:<n>", ...)``,
``token_id`` None), e.g. a genesis collection's items, which are approved in bulk (:meth:`ReviewStore.approve_all`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, SQLModel

from agent.domain import canonical_json
from agent.errors import BackendUnavailableError, NotFoundError, PermanentError
from agent.jobs.models import JSONColumn, UTCDateTime

REROLL_DOMAIN = b"chrysalis.reroll.v1"
"""Domain separator of :func:`reroll_seed`."""

MAX_REROLLS = 64
"""Most rerolls one candidate may go through (and the most a verifier tries when it names one)."""


class ReviewState(StrEnum):
    """Where a candidate is in review."""

    AWAITING = "awaiting_review"
    """Waiting for a curator. Only this state can be approved, rejected or sent to regeneration."""
    REGENERATING = "regenerating"
    """A curator asked for a new seed or strength; the studio is making the next revision."""
    APPROVED = "approved"
    """Terminal: the pipeline may publish this revision; ``decided_by`` approved it."""
    REJECTED = "rejected"
    """Terminal: ``decided_by`` rejected it for ``reason``; the pipeline ends the job."""


OPEN_STATES = (ReviewState.AWAITING, ReviewState.REGENERATING)


# -- errors -------------------------------------------------------------------------------------------------


class ReviewNotFoundError(NotFoundError):
    """No review item has that id or key."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"no review item {what}",
            hint="list the queue with `chrysalis review list` (the id is the first column)",
        )


class ReviewConflictError(PermanentError):
    """The item is not in a state (or revision) that allows the action; someone else acted first.

    Attributes:
        item: The item as it is now.
    """

    def __init__(self, item: ReviewItem, action: str, expected: str) -> None:
        self.item = item
        who = f" by {item.decided_by}" if item.decided_by else ""
        super().__init__(
            f"cannot {action} review #{item.id}: it is {item.state.value}{who} at revision {item.revision}, "
            f"not {expected}",
            hint="reload the review queue to see its current state",
        )


class ReviewInputError(PermanentError, ValueError):
    """A review action was given a bad value (an empty reason, a strength outside (0, 1], no curator name)."""


# -- tables ---------------------------------------------------------------------------------------------------


class ReviewItemRow(SQLModel, table=True):
    """One candidate under review (table ``review_items``; migration 0003). Use :class:`ReviewItem` outside."""

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


_items = ReviewItemRow.__table__  # type: ignore[attr-defined]
_events = ReviewEventRow.__table__  # type: ignore[attr-defined]


# -- values ---------------------------------------------------------------------------------------------------


def reroll_seed(onchain_seed: str | bytes, n: int) -> str:
    """The ``n``-th reroll of a request's on-chain seed: ``sha256(REROLL_DOMAIN || seed || n as 4 bytes)``.

    Reroll 0 is the seed itself. A regenerated candidate's receipt records the rerolled value as its
    ``seed.onchain_seed``; anyone holding the request's seed can recompute it (:func:`find_reroll`).
    """
    raw = (
        bytes.fromhex(onchain_seed.removeprefix("0x"))
        if isinstance(onchain_seed, str)
        else bytes(onchain_seed)
    )
    if len(raw) != 32:
        raise ReviewInputError(
            f"an on-chain seed is 32 bytes, got {len(raw)}", hint="pass the request's bytes32 seed"
        )
    if n == 0:
        return "0x" + raw.hex()
    if not 0 < n <= MAX_REROLLS:
        raise ReviewInputError(f"reroll {n} is outside 0..{MAX_REROLLS}", hint="approve or reject it instead")
    return "0x" + hashlib.sha256(REROLL_DOMAIN + raw + n.to_bytes(4, "big")).hexdigest()


def find_reroll(request_seed: str | bytes, receipt_seed: str) -> int | None:
    """Which reroll of ``request_seed`` the receipt's seed is (0: the seed itself), or None if none is."""
    want = receipt_seed.lower()
    for n in range(MAX_REROLLS + 1):
        if reroll_seed(request_seed, n) == want:
            return n
    return None


@dataclass(frozen=True)
class Candidate:
    """A generated result waiting for review.

    Attributes:
        image_cid: The PNG's CID in the embedded IPFS repo (where the studio shows it from).
        png_sha256: sha256 of that PNG.
        lore: The lore text.
        receipt: The inference receipt (``InferenceReceipt.to_json()``).
        traits: The traits the metadata will carry.
        name: The token's name.
        request_seed: The request's on-chain seed (the base of rerolls); taken from the receipt when omitted.
        reroll: Which reroll of ``request_seed`` this candidate was generated with (0: the seed itself).
    """

    image_cid: str
    png_sha256: str
    lore: str
    receipt: Mapping[str, Any]
    traits: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    request_seed: str | None = None
    reroll: int = 0

    def __post_init__(self) -> None:
        if self.request_seed is None:
            seed = (self.receipt.get("seed") or {}).get("onchain_seed")
            object.__setattr__(self, "request_seed", seed)

    @property
    def receipt_sha256(self) -> str:
        """Hex sha256 of the receipt's canonical JSON."""
        return hashlib.sha256(canonical_json(dict(self.receipt))).hexdigest()

    @property
    def provenance(self) -> str:
        """What the contract will store: ``0x`` + :attr:`receipt_sha256`."""
        return "0x" + self.receipt_sha256

    @property
    def strength(self) -> float | None:
        image = self.receipt.get("image") or {}
        value = (image.get("request") or {}).get("strength")
        return float(value) if value is not None else None

    def generated(self) -> dict[str, Any]:
        """The pipeline's ``generated`` record for this candidate: what the publish stage takes."""
        return {
            "image_cid": self.image_cid,
            "png_sha256": self.png_sha256,
            "lore": self.lore,
            "receipt": dict(self.receipt),
            "receipt_sha256": self.receipt_sha256,
            "provenance": self.provenance,
        }

    @classmethod
    def from_generated(
        cls, generated: Mapping[str, Any], *, traits: Mapping[str, str] | None = None, name: str = ""
    ) -> Candidate:
        """From the pipeline's ``generated`` record (and the traits / name its metadata will carry).

        Raises:
            ReviewInputError: a field the studio needs is missing.
        """
        missing = [k for k in ("image_cid", "png_sha256", "lore", "receipt") if k not in generated]
        if missing:
            raise ReviewInputError(
                f"the generated record lacks {', '.join(missing)}",
                hint="pass the job's generated record as the generate stage stored it",
            )
        return cls(
            image_cid=str(generated["image_cid"]),
            png_sha256=str(generated["png_sha256"]),
            lore=str(generated["lore"]),
            receipt=dict(generated["receipt"]),
            traits=dict(traits or {}),
            name=name,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "image_cid": self.image_cid,
            "png_sha256": self.png_sha256,
            "lore": self.lore,
            "receipt": dict(self.receipt),
            "traits": dict(self.traits),
            "name": self.name,
            "request_seed": self.request_seed,
            "reroll": self.reroll,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(
            image_cid=data["image_cid"],
            png_sha256=data["png_sha256"],
            lore=data["lore"],
            receipt=dict(data["receipt"]),
            traits=dict(data.get("traits") or {}),
            name=data.get("name") or "",
            request_seed=data.get("request_seed"),
            reroll=int(data.get("reroll") or 0),
        )


@dataclass(frozen=True)
class RegenerateRequest:
    """What a curator asked for: a new seed (the next reroll) and/or a new image-to-image strength."""

    reroll: int
    strength: float | None
    requested_by: str

    def to_json(self) -> dict[str, Any]:
        return {"reroll": self.reroll, "strength": self.strength, "requested_by": self.requested_by}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegenerateRequest:
        return cls(int(data["reroll"]), data.get("strength"), str(data.get("requested_by") or ""))


@dataclass(frozen=True)
class ReviewItem:
    """A snapshot of one review item.

    Attributes:
        id: Store-assigned id (what ``chrysalis review approve ID`` takes).
        key: ``job:<job id>`` for pipeline jobs, else the key it was submitted with.
        job_id: The job, when the subject is one.
        token_id: The token (None for a genesis item before reveal).
        stage: The stage the candidate is for.
        kind: ``evolve``, ``refresh`` or ``genesis``.
        state: See :class:`ReviewState`.
        revision: 1 for the submitted candidate, +1 per regeneration.
        candidate: The current candidate.
        regenerate: The pending regeneration request (while ``regenerating``).
        reason: Why it was rejected.
        decided_by / decided_at: Who approved or rejected it, and when.
        error: Why the last regeneration failed (the previous candidate stays).
    """

    id: int
    key: str
    job_id: int | None
    token_id: int | None
    stage: int
    kind: str
    state: ReviewState
    revision: int
    candidate: Candidate
    regenerate: RegenerateRequest | None
    reason: str | None
    decided_by: str | None
    decided_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def label(self) -> str:
        if self.candidate.name:
            return self.candidate.name
        return f"token {self.token_id}" if self.token_id is not None else self.key

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> ReviewItem:
        regen = row["regenerate"]
        return cls(
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


@dataclass(frozen=True)
class ReviewEvent:
    """One entry of an item's audit trail (``submitted``, ``approved``, ``rejected``, ``regenerate``,
    ``regenerated``, ``regenerate_failed``)."""

    id: int
    review_id: int
    revision: int
    action: str
    actor: str
    detail: Mapping[str, Any]
    at: datetime


# -- decisions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """Not decided yet (awaiting a curator, or being regenerated). Ask again later."""

    review_id: int
    state: ReviewState
    revision: int


@dataclass(frozen=True)
class Approval:
    """Who approved which revision, and when. ``approved_by`` goes into the metadata (``properties.approved_by``)."""

    review_id: int
    revision: int
    approved_by: str
    approved_at: datetime
    provenance: str


@dataclass(frozen=True)
class Approved:
    """A curator approved ``candidate``: publish :attr:`generated` with ``approved_by`` in the metadata."""

    review_id: int
    revision: int
    approved_by: str
    approved_at: datetime
    candidate: Candidate

    @property
    def generated(self) -> dict[str, Any]:
        """The record to publish, in the shape of the pipeline's ``generated`` record."""
        return self.candidate.generated()

    @property
    def approval(self) -> Approval:
        return Approval(
            self.review_id, self.revision, self.approved_by, self.approved_at, self.candidate.provenance
        )


@dataclass(frozen=True)
class Rejected:
    """A curator rejected the candidate; the pipeline ends the job."""

    review_id: int
    revision: int
    rejected_by: str
    reason: str
    rejected_at: datetime

    def describe(self) -> str:
        """One line for the job's ``reason``."""
        return f"rejected in review #{self.review_id} by {self.rejected_by}: {self.reason}"


Decision = Pending | Approved | Rejected


def decision_of(item: ReviewItem) -> Decision:
    """The pipeline's view of an item."""
    if item.state == ReviewState.APPROVED:
        assert item.decided_by is not None and item.decided_at is not None
        return Approved(item.id, item.revision, item.decided_by, item.decided_at, item.candidate)
    if item.state == ReviewState.REJECTED:
        assert item.decided_by is not None and item.decided_at is not None
        return Rejected(item.id, item.revision, item.decided_by, item.reason or "", item.decided_at)
    return Pending(item.id, item.state, item.revision)


# -- the store ------------------------------------------------------------------------------------------------


def subject_key(subject: int | str) -> str:
    """``job:<id>`` for a job id; any other key as given."""
    if isinstance(subject, bool):
        raise ReviewInputError(f"{subject!r} is not a job id or key", hint="pass the job's id")
    if isinstance(subject, int):
        return f"job:{subject}"
    key = str(subject).strip()
    if not key or len(key) > 200:
        raise ReviewInputError(f"review key {subject!r} is empty or too long", hint="use 1..200 characters")
    return key


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

    def __init__(self, engine: Engine, *, clock: Any = None) -> None:
        self.engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))
        self._pg = engine.dialect.name == "postgresql"

    @classmethod
    def open(cls, url: str, *, busy_timeout_ms: int = 30_000) -> ReviewStore:
        """Open (and migrate) the database at ``url``."""
        from agent.jobs.db import open_database

        return cls(open_database(url, busy_timeout_ms=busy_timeout_ms))

    # -- plumbing -------------------------------------------------------------------------------------------

    def _begin(self) -> Any:
        try:
            return self.engine.begin()
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
        return ReviewItem.from_row(row) if row is not None else None

    # -- reading --------------------------------------------------------------------------------------------

    def get(self, review_id: int) -> ReviewItem:
        with self.engine.connect() as conn:
            item = self._row(conn, _items.c.id == review_id)
        if item is None:
            raise ReviewNotFoundError(f"#{review_id}")
        return item

    def by_key(self, subject: int | str) -> ReviewItem | None:
        """The item of a job id (or key), if it was submitted."""
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            return [ReviewItem.from_row(r) for r in conn.execute(stmt).mappings()]

    def counts(self) -> dict[ReviewState, int]:
        """Items in every state (zeros included)."""
        out = {state: 0 for state in ReviewState}
        stmt = sa.select(_items.c.state, sa.func.count()).group_by(_items.c.state)
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.limit(limit)).mappings().all()
        return [ReviewEvent(r["id"], r["review_id"], r["revision"], r["action"], r["actor"], r["detail"], r["at"])
                for r in rows]  # fmt: skip

    def version(self) -> tuple[int, int]:
        """Changes to the queue show as a change of this value (newest event id, items): for live updates."""
        with self.engine.connect() as conn:
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
        insert = (postgresql.insert if self._pg else sqlite.insert)(_items).values(**values)
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
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReviewGate:
    """The pipeline's side of review: :meth:`submit` a candidate, then read :meth:`decision` until it is final.

    See the module docstring for the exact calls and what to do with each decision.
    """

    def __init__(self, store: ReviewStore) -> None:
        self.store = store

    @classmethod
    def for_store(cls, job_store: Any) -> ReviewGate:
        """A gate on the job store's database (``SqlJobStore.engine``; migrated when the job store opened)."""
        engine = getattr(job_store, "engine", None)
        if engine is None:
            raise ReviewInputError(
                f"{type(job_store).__name__} has no SQL engine",
                hint="open the job store with JobStore.open(url)",
            )
        return cls(ReviewStore(engine))

    @classmethod
    def open(cls, url: str) -> ReviewGate:
        return cls(ReviewStore.open(url))

    def submit(
        self,
        job_id: int | str,
        token_id: int | None,
        stage: int,
        candidate: Candidate,
        *,
        kind: str = "evolve",
    ) -> None:
        """Put the job's candidate up for review. Calling it again (a retried job) changes nothing."""
        self.store.submit(job_id, token_id=token_id, stage=stage, candidate=candidate, kind=kind)

    def decision(self, job_id: int | str) -> Decision:
        """:class:`Pending`, :class:`Approved` or :class:`Rejected`.

        Raises:
            ReviewNotFoundError: the job was never submitted (call :meth:`submit` first).
        """
        item = self.store.by_key(job_id)
        if item is None:
            raise ReviewNotFoundError(f"for {subject_key(job_id)} (submit it before asking for a decision)")
        return decision_of(item)

    def approval(self, job_id: int | str) -> Approval | None:
        """Who approved the job's candidate (None while it is not approved)."""
        decision = self.decision(job_id)
        return decision.approval if isinstance(decision, Approved) else None
