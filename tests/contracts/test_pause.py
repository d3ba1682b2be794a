"""Pausing stops mint, requestEvolution and fuse; everything that settles or moves existing value keeps working."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.contracts.support import (
    EVOLUTION_FEE,
    MINT_PRICE,
    PAUSER_ROLE,
    REQUEST_TIMEOUT,
    digest_of,
    ev,
    events,
    reverts,
    seed_of,
    unauthorized,
)

PROVENANCE = hashlib.sha256(b"pause").digest()


def test_pause_and_unpause(collection: Any, admin: Any, alice: Any) -> None:
    receipt = collection.pause(sender=admin)
    assert events(receipt, collection) == [ev("Paused", account=admin)]
    assert collection.paused() is True
    with reverts(collection.EnforcedPause):
        collection.pause(sender=admin)
    receipt = collection.unpause(sender=admin)
    assert events(receipt, collection) == [ev("Unpaused", account=admin)]
    assert collection.paused() is False
    with reverts(collection.ExpectedPause):
        collection.unpause(sender=admin)
    collection.mint(1, sender=alice, value=MINT_PRICE)


def test_paused_stops_holder_actions(collection: Any, admin: Any, alice: Any, carol: Any) -> None:
    collection.pause(sender=admin)
    with reverts(collection.EnforcedPause):
        collection.mint(1, sender=carol, value=MINT_PRICE)
    with reverts(collection.EnforcedPause):
        collection.requestEvolution(1, sender=alice, value=EVOLUTION_FEE)
    with reverts(collection.EnforcedPause):
        collection.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    assert collection.totalMinted() == 5
    assert collection.escrowedFees() == 0


def test_paused_stops_airdrops_and_refreshes(collection: Any, admin: Any, agent: Any, carol: Any) -> None:
    """A pause freezes supply and every token's metadata but for fulfilments that holders paid for."""
    collection.pause(sender=admin)
    with reverts(collection.EnforcedPause):
        collection.airdrop(carol, 1, sender=admin)
    with reverts(collection.EnforcedPause):
        collection.refreshMetadata([2], [digest_of(b"2")], PROVENANCE, sender=agent)
    assert collection.totalMinted() == 5 and collection.metadataDigestOf(2) == b"\x00" * 32
    collection.unpause(sender=admin)
    collection.airdrop(carol, 1, sender=admin)
    collection.refreshMetadata([2], [digest_of(b"2")], PROVENANCE, sender=agent)
    assert collection.totalMinted() == 6 and collection.metadataDigestOf(2) == digest_of(b"2")


def test_paused_keeps_settlement_working(
    collection: Any,
    chain: Any,
    admin: Any,
    agent: Any,
    alice: Any,
    bob: Any,
    carol: Any,
    request_evolution: Any,
) -> None:
    fulfil, _ = request_evolution(1, alice)
    cancel, opened = request_evolution(4, bob)
    collection.pause(sender=admin)
    collection.fulfillEvolution(
        fulfil, seed_of(collection, fulfil), digest_of(b"f"), PROVENANCE, sender=agent
    )
    chain.pending_timestamp = opened.timestamp + REQUEST_TIMEOUT
    collection.cancelEvolution(cancel, sender=bob)
    collection.withdrawRefund(bob, sender=bob)
    collection.withdrawFees(sender=carol)
    collection.transferFrom(alice, carol, 1, sender=alice)
    assert collection.stageOf(1) == 1
    assert collection.balance == collection.escrowedFees() == collection.withdrawableFees() == 0
    assert collection.owedRefunds() == 0
    assert collection.balanceOf(carol) == 1


def test_pauser_role(collection: Any, admin: Any, agent: Any, carol: Any, stranger: Any) -> None:
    for account in (agent, stranger):
        with unauthorized(collection, account, PAUSER_ROLE):
            collection.pause(sender=account)
    collection.grantRole(PAUSER_ROLE, carol, sender=admin)
    collection.pause(sender=carol)
    with unauthorized(collection, stranger, PAUSER_ROLE):
        collection.unpause(sender=stranger)
    collection.unpause(sender=carol)
    assert collection.paused() is False
