"""What the pipeline needs from the optional parts the composition root (:mod:`agent.app`) plugs in.

Small structural types, so the pipeline imports neither the review package nor refresh: the review gate
(:class:`agent.review.ReviewGate`), the refresh runner (:class:`agent.refresh.runner.RefreshRunner`) and the
Content Credentials signer (:class:`agent.credentials.ContentCredentials`) satisfy them as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agent.credentials import CredentialClaim, ParentImage
from agent.domain import Artwork, CuratorApproval, CuratorRejection

if TYPE_CHECKING:  # pragma: no cover
    from agent.jobs import Job


class Review(Protocol):
    """Human review between generating and publishing (``studio.review = true``)."""

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
        candidate, which may be a curator's regenerated revision) and return the decision so far: None while it
        awaits a curator."""
        ...


@dataclass(frozen=True)
class StepOutcome:
    """What the worker does with a side job (a refresh) after one bounded step.

    Attributes:
        action: ``continue`` (give it back at once: more to do), ``pause`` (give it back for ``delay_s``: a
            budget stopped it) or ``finish`` (confirm the job with ``result``).
        delay_s: Seconds until it may run again (``pause``).
        reason: Why it paused.
        result: The job's result (``finish``): counts per outcome, gas, transactions.
        gas_used: Gas of the transactions confirmed in this step.
    """

    action: Literal["continue", "pause", "finish"]
    delay_s: float = 0.0
    reason: str | None = None
    result: dict[str, Any] | None = None
    gas_used: int = 0


class SideWork(Protocol):
    """Advances the jobs the evolution stages do not (refresh jobs), one bounded step at a time, between
    evolutions."""

    def step(self, job: Job, stop: threading.Event | None = None) -> StepOutcome:
        """One bounded step of ``job``."""
        ...


class ImageCredentials(Protocol):
    """Signs C2PA Content Credentials into a generated PNG (:class:`agent.credentials.ContentCredentials`)."""

    def sign(self, png: bytes, claim: CredentialClaim, *, parent: ParentImage | None = None) -> bytes:
        """``png`` with a signed manifest for ``claim``, listing ``parent`` (an evolution's previous image) as its
        ``parentOf`` ingredient."""
        ...


class Refreshes(Protocol):
    """The refreshes the agent runs beside the evolutions (:class:`agent.refresh.service.RefreshService`)."""

    def poll(self) -> int:
        """Check the price triggers once; returns how many refreshes were queued."""
        ...

    def start(self) -> None:
        """Start the cron schedules."""
        ...

    def stop(self) -> None:
        """Stop the schedules (idempotent)."""
        ...


__all__ = ["ImageCredentials", "Refreshes", "Review", "SideWork", "StepOutcome"]
