"""What human review is about: the candidate a curator decides on, its states and the decisions, the review
errors, and the reroll seeds that let a regenerated candidate still verify.

Review sits between "generated" and "published" (review mode: ``studio.review = true``): a generated result
(image, lore, receipt) waits as a :class:`Candidate` in the state ``awaiting_review`` until a curator approves
it, rejects it with a reason, or asks for it to be regenerated with a new seed or strength. The items live in
the agent's database (:class:`~agent.review.store.ReviewStore`); the pipeline asks through
:class:`~agent.review.gate.ReviewGate`.

A new seed is a *reroll* of the request's on-chain seed (:func:`reroll_seed`), so anyone can recompute it and
the receipt still verifies. Nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from agent.domain import Artwork
from agent.errors import NotFoundError, PermanentError
from agent.gates.reroll import MAX_REROLLS as MAX_REROLLS  # re-exported: the rule lives in agent.gates
from agent.gates.reroll import REROLL_DOMAIN as REROLL_DOMAIN
from agent.gates.reroll import RerollError
from agent.gates.reroll import find_reroll as find_reroll
from agent.gates.reroll import reroll_seed as _reroll_seed


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


# -- values ---------------------------------------------------------------------------------------------------


def reroll_seed(onchain_seed: str | bytes, n: int) -> str:
    """The ``n``-th reroll of a request's on-chain seed: ``sha256(REROLL_DOMAIN || seed || n as 4 bytes)``.

    Reroll 0 is the seed itself. A regenerated candidate's receipt records the rerolled value as its
    ``seed.onchain_seed``; anyone holding the request's seed can recompute it (:func:`find_reroll`).
    """
    try:
        return _reroll_seed(onchain_seed, n)
    except RerollError as exc:
        raise ReviewInputError(exc.message, hint=exc.hint) from None


@dataclass(frozen=True)
class Candidate:
    """An artwork waiting for review, with what its metadata will carry.

    Attributes:
        artwork: What the models made (image, lore, receipt): the generate stage's
            :class:`~agent.domain.Artwork`, or a curator's regenerated revision.
        traits: The traits the metadata will carry.
        name: The token's name.
        request_seed: The request's on-chain seed (the base of rerolls); taken from the receipt when omitted.
        reroll: Which reroll of ``request_seed`` this candidate was generated with (0: the seed itself).
    """

    artwork: Artwork
    traits: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    request_seed: str | None = None
    reroll: int = 0

    def __post_init__(self) -> None:
        if self.request_seed is None:
            seed = (self.receipt.get("seed") or {}).get("onchain_seed")
            object.__setattr__(self, "request_seed", seed)

    @property
    def image_cid(self) -> str:
        """The PNG's CID in the embedded IPFS repo (where the studio shows it from)."""
        return self.artwork.image_cid

    @property
    def png_sha256(self) -> str:
        return self.artwork.png_sha256

    @property
    def lore(self) -> str:
        return self.artwork.lore

    @property
    def receipt(self) -> Mapping[str, Any]:
        """The inference receipt (``InferenceReceipt.to_json()``)."""
        return self.artwork.receipt

    @property
    def receipt_sha256(self) -> str:
        return self.artwork.receipt_sha256

    @property
    def provenance(self) -> str:
        """What the contract will store: ``0x`` + :attr:`receipt_sha256`."""
        return self.artwork.provenance

    @property
    def strength(self) -> float | None:
        image = self.receipt.get("image") or {}
        value = (image.get("request") or {}).get("strength")
        return float(value) if value is not None else None

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
        } | ({"gates": dict(self.gates)} if self.gates is not None else {})

    @property
    def gates(self) -> Mapping[str, Any] | None:
        """The quality gates' report (``agent.gates.GateReport.to_json()``), when gates ran."""
        return self.artwork.gates

    @property
    def flagged(self) -> bool:
        """Whether the candidate failed a quality gate on its last try (it reached review flagged)."""
        return self.gates is not None and not bool(self.gates.get("passed", True))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        """From :meth:`to_json` (as the review table stores it).

        Raises:
            ReviewInputError: a field the studio needs is missing.
        """
        missing = [k for k in ("image_cid", "png_sha256", "lore", "receipt") if k not in data]
        if missing:
            raise ReviewInputError(
                f"the candidate record lacks {', '.join(missing)}",
                hint="the review table holds candidates as Candidate.to_json() writes them",
            )
        return cls(
            artwork=Artwork.from_json(data),
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

    def to_json(self, *, published: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The item as JSON: the one shape of ``/api/review`` (and its actions' replies) and of
        ``chrysalis review list --json``.

        Args:
            published: Where the approved candidate was written on-chain (``tx_hash``, ``block_number``, ``cid``,
                ``stage``), when the caller looked it up: the studio does, from its chain index; the command line
                reads only the database and leaves it None.
        """
        return {
            "id": self.id,
            "key": self.key,
            "job_id": self.job_id,
            "token_id": self.token_id,
            "stage": self.stage,
            "kind": self.kind,
            "state": self.state.value,
            "revision": self.revision,
            "image": f"ipfs://{self.candidate.image_cid}",
            "image_cid": self.candidate.image_cid,
            "lore": self.candidate.lore,
            "traits": dict(self.candidate.traits),
            "provenance": self.candidate.provenance,
            "reroll": self.candidate.reroll,
            "strength": self.candidate.strength,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "error": self.error,
            "published": dict(published) if published is not None else None,
            "gates": dict(self.candidate.gates) if self.candidate.gates is not None else None,
            "flagged": self.candidate.flagged,
        }


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
    """A curator approved ``candidate``: publish :attr:`artwork` with ``approved_by`` in the metadata."""

    review_id: int
    revision: int
    approved_by: str
    approved_at: datetime
    candidate: Candidate

    @property
    def artwork(self) -> Artwork:
        """The artwork to publish (maybe a regenerated revision)."""
        return self.candidate.artwork

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


# -- subjects -------------------------------------------------------------------------------------------------


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
