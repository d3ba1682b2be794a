"""Errors the oracles raise. Each leaf carries structured fields; messages name the problem and the fix.

An oracle never returns a value it does not trust: stale, incomplete, future-dated, non-positive or gapped
feed data raises here instead of flowing into the rules as a garbage reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.errors import BackendUnavailableError, ConfigError, PermanentError, RetryableError

if TYPE_CHECKING:  # pragma: no cover
    from agent.domain import OracleReading


class OracleError(PermanentError):
    """An oracle could not produce a trustworthy reading at the requested block.

    Attributes:
        oracle: Name of the oracle that failed (its reading prefix).
        block_number: The block it was reading at.
    """

    def __init__(self, message: str, *, oracle: str, block_number: int, hint: str | None = None) -> None:
        self.oracle = oracle
        self.block_number = block_number
        super().__init__(f"oracle {oracle!r} at block {block_number}: {message}", hint=hint)


class StaleOracleDataError(OracleError):
    """The feed's latest answer at the block is older than the configured maximum age.

    Attributes:
        updated_at: When the answer was last updated (unix seconds).
        block_timestamp: The block's timestamp.
        age_s: ``block_timestamp - updated_at``.
        max_age_s: The configured limit.
    """

    def __init__(
        self, *, oracle: str, block_number: int, updated_at: int, block_timestamp: int, max_age_s: int
    ) -> None:
        self.updated_at = updated_at
        self.block_timestamp = block_timestamp
        self.age_s = block_timestamp - updated_at
        self.max_age_s = max_age_s
        super().__init__(
            f"answer is stale: updated {self.age_s} s before the block (updatedAt={updated_at}), "
            f"the limit is {max_age_s} s",
            oracle=oracle,
            block_number=block_number,
            hint="wait for the feed to update and retry the job, or raise max_age_s if the feed's heartbeat "
            "is longer than the limit",
        )


class InvalidOracleDataError(OracleError, ValueError):
    """The feed returned data that cannot be right (non-positive answer, incomplete or future-dated round).

    Attributes:
        round_id: The round that holds the bad data.
        reason: What is wrong, in words.
    """

    def __init__(
        self, reason: str, *, oracle: str, block_number: int, round_id: int, hint: str | None = None
    ) -> None:
        self.round_id = round_id
        self.reason = reason
        super().__init__(
            f"round {round_id}: {reason}",
            oracle=oracle,
            block_number=block_number,
            hint=hint or "check the feed address and that the feed is healthy; never trust this round",
        )


class RoundGapError(InvalidOracleDataError):
    """A round between the latest round and the window's start has no data (the feed's history has a hole).

    Attributes:
        missing_round: The round id that has no data.
    """

    def __init__(self, *, oracle: str, block_number: int, round_id: int, missing_round: int) -> None:
        self.missing_round = missing_round
        super().__init__(
            f"round {missing_round} has no data while walking back from round {round_id} (gap in round ids)",
            oracle=oracle,
            block_number=block_number,
            round_id=round_id,
            hint="the feed's history is not contiguous; shorten window_s so the walk stays above the gap, "
            "or use a feed with complete history",
        )


class OracleHistoryError(OracleError, LookupError):
    """The feed's history does not reach back to the start of the change window.

    The latest round itself may be fine: :attr:`available` then holds the readings that do not depend on the
    window (the answer, its age, its round), already checked, so that a guard can keep them and leave only the
    change out (:meth:`oracles.guard.OracleGuard.screen`).

    Attributes:
        round_id: The earliest round reached.
        target_timestamp: The time the window starts at (``block timestamp - window_s``).
        available: The oracle's readings that the missing history does not affect (may be empty).
    """

    def __init__(
        self,
        message: str,
        *,
        oracle: str,
        block_number: int,
        round_id: int,
        target_timestamp: int,
        hint: str,
        available: tuple[OracleReading, ...] = (),
    ) -> None:
        self.round_id = round_id
        self.target_timestamp = target_timestamp
        self.available = tuple(available)
        super().__init__(message, oracle=oracle, block_number=block_number, hint=hint)


class HolderMismatchError(OracleError, LookupError):
    """The address the context names as the holder does not own the token at the block.

    Attributes:
        token_id: The token.
        holder: The address the context names.
        owner: The token's owner at the block (None when it does not exist there).
    """

    def __init__(
        self, *, oracle: str, block_number: int, token_id: int, holder: str, owner: str | None
    ) -> None:
        self.token_id = token_id
        self.holder = holder
        self.owner = owner
        found = f"it is owned by {owner}" if owner else "it does not exist at that block"
        super().__init__(
            f"{holder} does not hold token {token_id}: {found}",
            oracle=oracle,
            block_number=block_number,
            hint="build the ReadContext at the event's block with the token's owner at that block "
            "(ReadContext.at looks it up when holder is omitted)",
        )


class OracleCallError(OracleError):
    """A contract call at the block reverted or returned nothing: wrong address, wrong contract, pruned state.

    Attributes:
        address: The contract called.
        function: The function called.
        reason: What the node said.
    """

    def __init__(
        self,
        *,
        oracle: str,
        block_number: int,
        address: str,
        function: str,
        reason: str,
        hint: str | None = None,
    ) -> None:
        self.address = address
        self.function = function
        self.reason = reason
        super().__init__(
            f"{function} on {address} failed: {reason}",
            oracle=oracle,
            block_number=block_number,
            hint=hint
            or "check that the address is the right contract on this chain and that the node keeps state at "
            "this block (an archive node is needed for old blocks)",
        )


class OracleUnavailableError(BackendUnavailableError):
    """The RPC node could not be reached or timed out while an oracle was reading. Retry later.

    Attributes:
        oracle: Name of the oracle.
        block_number: The block it was reading at.
        block_unknown: The node said it does not know the block: a backend behind its peers, or a block a reorg
            replaced (the snapshot then checks which, :class:`SnapshotReorgError` for a reorg).
    """

    def __init__(self, message: str, *, oracle: str, block_number: int, block_unknown: bool = False) -> None:
        self.oracle = oracle
        self.block_number = block_number
        self.block_unknown = block_unknown
        super().__init__(
            f"oracle {oracle!r} at block {block_number}: {message}",
            hint="check the RPC URL and that the node is up; the job may be retried",
        )


class SnapshotReorgError(RetryableError):
    """The block a snapshot was read at is no longer canonical: a reorg happened while reading.

    Attributes:
        block_number: The block height.
        expected_hash: The hash the snapshot was read at.
        actual_hash: The hash now canonical at that height (None when the height is gone).
    """

    def __init__(self, *, block_number: int, expected_hash: str, actual_hash: str | None) -> None:
        self.block_number = block_number
        self.expected_hash = expected_hash
        self.actual_hash = actual_hash
        super().__init__(
            f"block {block_number} changed from {expected_hash} to {actual_hash} while the snapshot was read",
            hint="the chain reorganised; re-read the event and take the snapshot again at its new block",
        )


class SnapshotConfigError(ConfigError):
    """The oracles given to a snapshot conflict (two readings with one name) or misbehave (wrong block)."""
