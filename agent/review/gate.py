"""The pipeline's side of review (review mode: ``studio.review = true``), between recording ``generated`` and
publishing, on the same database as the jobs.

What the pipeline and refresh call::

    gate = ReviewGate.for_database(db)          # once, when settings.studio.review is true
    ...
    decision = gate.review(job.id, token_id=..., stage=..., artwork=job.artwork, traits=..., name=...)
    if decision is None:                        # not decided yet: give the job back, ask again later
        job_store.release(job.id, worker_id, delay_s=...)
    elif isinstance(decision, Rejection):       # final: end the job with the curator's reason
        job_store.cancel(job.id, decision.reason)
    else:                                       # Approval: publish THIS artwork (it may be a regenerated one)
        publish(..., decision.artwork, approved_by=decision.approved_by)

:meth:`ReviewGate.review` is idempotent per subject: a retried job finds its item as it is now. The lower-level
:meth:`ReviewGate.submit` / :meth:`ReviewGate.decision` speak :class:`~agent.review.model.Candidate` and
:class:`~agent.review.model.Pending` / :class:`~agent.review.model.Approved` / :class:`~agent.review.model.Rejected`
(whose ``generated`` has the shape of the pipeline's ``generated`` record); :meth:`ReviewGate.approval` returns
the approval record alone (who, when, which revision).
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.domain import Artwork, CuratorApproval, CuratorRejection
from agent.review.model import (
    Approval,
    Approved,
    Candidate,
    Decision,
    Rejected,
    ReviewNotFoundError,
    decision_of,
    subject_key,
)
from agent.review.store import ReviewStore
from agent.store.db import Database


class ReviewGate:
    """The pipeline's side of review: :meth:`review` an artwork (or :meth:`submit` a candidate, then read
    :meth:`decision`) until the decision is final.

    See the module docstring for the exact calls and what to do with each decision.

    Args:
        store: The review items (on the agent's database).
    """

    def __init__(self, store: ReviewStore) -> None:
        self.store = store

    @classmethod
    def for_database(cls, db: Database) -> ReviewGate:
        """A gate on the agent's database (the job store's, migrated)."""
        return cls(ReviewStore(db))

    def review(
        self,
        subject: int | str,
        *,
        token_id: int,
        stage: int,
        artwork: Artwork,
        traits: Mapping[str, str],
        name: str,
        kind: str = "evolve",
    ) -> CuratorApproval | CuratorRejection | None:
        """Put ``artwork`` up for review under ``subject`` (idempotent: a subject already up keeps its
        candidate, which may be a curator's regenerated revision) and return the decision so far.

        Args:
            subject: A job id, or another key (``refresh:<job>:<token>``).
            token_id: The token.
            stage: The stage the artwork is for.
            artwork: What the models made.
            traits: The traits its metadata will carry.
            name: The token's name.
            kind: ``evolve``, ``refresh`` or ``genesis``.

        Returns:
            The approved artwork (maybe a regenerated revision) and its curator; the rejection, whose reason
            names the item, the curator and their reason; or None while it awaits a curator.
        """
        # When the quality gates rerolled it, the base of its rerolls is the request's seed, not the receipt's.
        gates = artwork.gates or {}
        request_seed = str(gates["request_seed"]) if gates.get("request_seed") else None
        reroll = int(gates.get("reroll") or 0) if request_seed else 0
        candidate = Candidate(
            artwork, traits=dict(traits), name=name, request_seed=request_seed, reroll=reroll
        )
        self.submit(subject, token_id, stage, candidate, kind=kind)
        decision = self.decision(subject)
        if isinstance(decision, Rejected):
            return CuratorRejection(decision.describe())
        if isinstance(decision, Approved):
            return CuratorApproval(decision.artwork, decision.approved_by)
        return None

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
