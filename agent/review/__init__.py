"""Human review between "generated" and "published" (review mode: ``studio.review = true``).

::

    pipeline / refresh --ReviewGate.review(artwork)--> ReviewStore (review_items, review_events) <-- curators
                                                                                  (studio pages, `chrysalis review`)

:mod:`agent.review.model` holds what a candidate, an item and a decision are (and the reroll seeds),
:mod:`agent.review.store` the queue in the agent's database, :mod:`agent.review.gate` the pipeline's side.
The studio only renders the queue and runs regenerations (:mod:`agent.studio.regenerate`).
"""

from agent.review.gate import ReviewGate
from agent.review.model import (
    MAX_REROLLS,
    OPEN_STATES,
    REROLL_DOMAIN,
    Approval,
    Approved,
    Candidate,
    Decision,
    Pending,
    RegenerateRequest,
    Rejected,
    ReviewConflictError,
    ReviewEvent,
    ReviewInputError,
    ReviewItem,
    ReviewNotFoundError,
    ReviewState,
    decision_of,
    find_reroll,
    reroll_seed,
    subject_key,
)
from agent.review.store import ReviewStore

__all__ = [
    "MAX_REROLLS",
    "OPEN_STATES",
    "REROLL_DOMAIN",
    "Approval",
    "Approved",
    "Candidate",
    "Decision",
    "Pending",
    "RegenerateRequest",
    "Rejected",
    "ReviewConflictError",
    "ReviewEvent",
    "ReviewGate",
    "ReviewInputError",
    "ReviewItem",
    "ReviewNotFoundError",
    "ReviewState",
    "ReviewStore",
    "decision_of",
    "find_reroll",
    "reroll_seed",
    "subject_key",
]
