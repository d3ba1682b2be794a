"""Where each token of a refresh is: :class:`ItemState` and the state sets the runner and the store decide by.

A refresh records the run (its block, its budget), one row per token, its transactions, and the price trigger's
baseline, in the tables ``refresh_runs``, ``refresh_items``, ``refresh_txs`` and ``refresh_triggers`` of
:mod:`agent.store.tables` (read and written by :class:`~agent.refresh.store.RefreshStore`), beside the jobs.

A refresh is one ``refresh`` job (:class:`~agent.jobs.JobKind`); the job says *whether* the refresh is queued,
running or finished, these tables say *how far* it got, token by token, so a refresh stopped by a budget, a
restart or a crash resumes where it was.

An item's states::

    pending --evaluate--> unchanged | deferred | oracle_skipped | skipped | failed      (terminal)
       \\--------------> changed --generate--> generated --publish--> published --send--> submitted --> confirmed
                                                                        ^   \\--pre-send check--> deferred |
                                                                        +--------(reverted / not mined)--+
    any state before submitted --a newer refresh of the token--> superseded
"""

from __future__ import annotations

from enum import StrEnum


class ItemState(StrEnum):
    """Where one token is in a refresh."""

    PENDING = "pending"
    """Not evaluated yet."""
    UNCHANGED = "unchanged"
    """Terminal: the rules give the traits the token already has; nothing is regenerated or written."""
    DEFERRED = "deferred"
    """Terminal: a holder's request for the token is pending, or its metadata changed since the refresh's
    block (it evolved). The evolution goes first; the next refresh picks the token up."""
    ORACLE_SKIPPED = "oracle_skipped"
    """Terminal: data the token's rules read was stale, missing or absurd at the block (the guard skipped it);
    the token keeps its metadata rather than get traits from defaults."""
    SKIPPED = "skipped"
    """Terminal: nothing to refresh (the token does not exist, or has no metadata yet and
    ``refresh.first_render`` is off)."""
    FAILED = "failed"
    """Terminal: a permanent problem with this token (its metadata is not in the repo, the rules refuse its
    inputs, its metadata would be too large); ``reason`` says which."""
    SUPERSEDED = "superseded"
    """Terminal: a newer refresh of the token took over before this one wrote it."""
    CHANGED = "changed"
    """Traits changed; the inputs record is stored; waiting for generation (and the ``max_tokens`` budget)."""
    GENERATED = "generated"
    """Image, lore and receipt made."""
    PUBLISHED = "published"
    """Metadata and image pinned and replicated; waiting to be written on-chain."""
    SUBMITTED = "submitted"
    """Sent in a ``refreshMetadata`` transaction (``tx_hash``); waiting for it."""
    CONFIRMED = "confirmed"
    """Terminal: written on-chain."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_ITEM_STATES


TERMINAL_ITEM_STATES = frozenset(
    {
        ItemState.UNCHANGED,
        ItemState.DEFERRED,
        ItemState.ORACLE_SKIPPED,
        ItemState.SKIPPED,
        ItemState.FAILED,
        ItemState.SUPERSEDED,
        ItemState.CONFIRMED,
    }
)
REGENERATED_STATES = frozenset(
    {ItemState.GENERATED, ItemState.PUBLISHED, ItemState.SUBMITTED, ItemState.CONFIRMED}
)
"""States that count against ``refresh.max_tokens`` (inference was spent on them)."""
UNSENT_STATES = frozenset({ItemState.PENDING, ItemState.CHANGED, ItemState.GENERATED, ItemState.PUBLISHED})
"""States a newer refresh may supersede (nothing was sent for them yet)."""
