"""The broadcast journal: every signed transaction is recorded BEFORE it is sent.

A restarted agent settles what it sent from these records, not from the node's pending state (many hosted
providers evaluate ``"pending"`` as ``"latest"``, which hides a transaction still in the pool): for each
recorded nonce it asks whether the chain has passed it and which recorded hash was mined, re-broadcasts the
signed transaction the node forgot, keeps the nonce from being handed out again meanwhile, and counts the
fee-bumped replacements already sent for it (the cap holds across restarts).
:class:`~agent.submit.journal_sql.SqlBroadcastJournal` keeps it in the agent's database (table ``broadcasts``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from agent.domain import Submission

KINDS = ("send", "replace", "rebroadcast")
"""What a recorded broadcast was: a first send, a fee-bumped replacement, or the same signed tx sent again."""


@dataclass(frozen=True)
class Recorded:
    """The latest recorded version of one nonce.

    Attributes:
        submission: The newest version; its ``replaced`` lists every earlier recorded hash of the nonce.
        keys: What it does (for fulfilments: the request ids of the batch).
        replacements: Fee-bumped replacements recorded for the nonce.
        outcome: ``None`` while unsettled; ``mined`` (by ``mined_hash``), ``consumed`` (another
            transaction took the nonce) or ``abandoned`` (the records do not match the node's chain).
        mined_hash: Which recorded hash was mined.
    """

    submission: Submission
    keys: tuple[str, ...]
    replacements: int
    outcome: str | None = None
    mined_hash: str | None = None


class BroadcastJournal(ABC):
    """Durable records of the agent's broadcasts; safe to use from many threads and processes."""

    @abstractmethod
    def record(self, submission: Submission, kind: str, keys: Sequence[str] = ()) -> None:
        """Record ``submission`` before it is sent. Recording a hash already recorded does nothing; a
        replacement with no ``keys`` inherits those of its nonce."""

    @abstractmethod
    def discard(self, tx_hash: str) -> None:
        """The node refused ``tx_hash`` outright (never in any pool): forget it."""

    @abstractmethod
    def latest(self, sender: str, nonce: int) -> Recorded | None:
        """The newest recorded version of ``nonce`` (``None``: nothing recorded)."""

    @abstractmethod
    def for_key(self, key: str) -> Recorded | None:
        """The newest recorded broadcast whose keys include ``key``, as its nonce's latest version."""

    @abstractmethod
    def open(self, sender: str) -> list[Recorded]:
        """Every unsettled nonce of ``sender``, by nonce."""

    @abstractmethod
    def settle(self, sender: str, nonce: int, outcome: str, mined_hash: str | None = None) -> None:
        """Mark ``nonce`` settled: ``mined`` (by ``mined_hash``), ``consumed`` or ``abandoned``."""

    @abstractmethod
    def highest_mined(self, sender: str) -> int | None:
        """The highest nonce of ``sender`` recorded as mined (``None``: none)."""

    def replacements(self, sender: str, nonce: int) -> int:
        """Fee-bumped replacements recorded for ``nonce``."""
        found = self.latest(sender, nonce)
        return found.replacements if found is not None else 0
