"""Fee accounting: mint proceeds and fulfilled fees are withdrawable to the treasury; escrow stays put.

The treasury never sends a transaction, so its balance changes by exactly what the contract pays it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tests.contracts.support import (
    DEFAULT_ADMIN_ROLE,
    EVOLUTION_FEE,
    MINT_PRICE,
    REQUEST_TIMEOUT,
    ROYALTY_BPS,
    ZERO_ADDRESS,
    digest_of,
    ev,
    events,
    gas_paid,
    norm,
    reverts,
    seed_of,
    seeds_of,
    unauthorized,
)

PROVENANCE = hashlib.sha256(b"fees").digest()


def _accounted(collection: Any) -> None:
    """balance == escrowed + withdrawable + refunds owed to requesters."""
    assert collection.balance == (
        collection.escrowedFees() + collection.withdrawableFees() + collection.owedRefunds()
    )


def test_withdraw_pays_treasury_exactly(
    collection: Any, agent: Any, alice: Any, bob: Any, treasury: Any, stranger: Any, request_evolution: Any
) -> None:
    done, _ = request_evolution(1, alice)
    request_evolution(4, bob)  # stays pending
    collection.fulfillEvolution(done, seed_of(collection, done), digest_of(b"done"), PROVENANCE, sender=agent)
    expected = 5 * MINT_PRICE + EVOLUTION_FEE
    assert collection.withdrawableFees() == expected
    assert collection.escrowedFees() == EVOLUTION_FEE
    _accounted(collection)
    before_treasury, before_stranger = treasury.balance, stranger.balance
    receipt = collection.withdrawFees(sender=stranger)  # anyone may trigger it; only the treasury is paid
    assert events(receipt, collection) == [ev("FeesWithdrawn", treasury=treasury, amount=expected)]
    assert treasury.balance == before_treasury + expected
    assert stranger.balance == before_stranger - gas_paid(receipt)
    assert collection.withdrawableFees() == 0
    # The pending fee is still escrowed, and still backed by ether.
    assert collection.escrowedFees() == EVOLUTION_FEE
    assert collection.balance == EVOLUTION_FEE
    _accounted(collection)


def test_withdraw_again_pays_nothing(collection: Any, treasury: Any, stranger: Any) -> None:
    collection.withdrawFees(sender=stranger)
    before = treasury.balance
    receipt = collection.withdrawFees(sender=stranger)
    assert events(receipt, collection) == [ev("FeesWithdrawn", treasury=treasury, amount=0)]
    assert treasury.balance == before


def test_agent_withdraw_still_pays_treasury(collection: Any, agent: Any, treasury: Any) -> None:
    before_treasury, before_agent = treasury.balance, agent.balance
    receipt = collection.withdrawFees(sender=agent)
    assert treasury.balance == before_treasury + 5 * MINT_PRICE
    assert agent.balance == before_agent - gas_paid(receipt)


def test_cancelled_fee_never_becomes_withdrawable(
    collection: Any, chain: Any, alice: Any, treasury: Any, stranger: Any, request_evolution: Any
) -> None:
    rid, receipt = request_evolution(1, alice)
    chain.pending_timestamp = receipt.timestamp + REQUEST_TIMEOUT
    collection.cancelEvolution(rid, sender=alice)
    assert collection.withdrawableFees() == 5 * MINT_PRICE
    before = treasury.balance
    collection.withdrawFees(sender=stranger)
    assert treasury.balance == before + 5 * MINT_PRICE
    assert collection.balance == collection.owedRefunds() == collection.refundOf(alice) == EVOLUTION_FEE
    _accounted(collection)
    collection.withdrawRefund(alice, sender=alice)
    assert collection.balance == 0
    _accounted(collection)


def test_set_treasury(
    collection: Any, admin: Any, treasury: Any, carol: Any, stranger: Any, agent: Any
) -> None:
    receipt = collection.setTreasury(carol, sender=admin)
    assert events(receipt, collection) == [ev("TreasuryChanged", previousTreasury=treasury, treasury=carol)]
    assert norm(collection.treasury()) == norm(carol)
    before_carol, before_treasury = carol.balance, treasury.balance
    collection.withdrawFees(sender=stranger)
    assert carol.balance == before_carol + 5 * MINT_PRICE
    assert treasury.balance == before_treasury
    # The royalty receiver is separate.
    assert norm(collection.royaltyInfo(1, 10_000)) == norm((treasury, ROYALTY_BPS))
    with reverts(collection.LivingCollectionZeroAddress):
        collection.setTreasury(ZERO_ADDRESS, sender=admin)
    for account in (agent, stranger, treasury):
        with unauthorized(collection, account, DEFAULT_ADMIN_ROLE):
            collection.setTreasury(account, sender=account)


def test_withdraw_to_rejecting_treasury(collection: Any, admin: Any, feed: Any, stranger: Any) -> None:
    # DevPriceFeed has no receive function: the payment fails and nothing is lost.
    collection.setTreasury(feed, sender=admin)
    with reverts(collection.LivingCollectionTransferFailed, to=feed, amount=5 * MINT_PRICE):
        collection.withdrawFees(sender=stranger)
    assert collection.withdrawableFees() == 5 * MINT_PRICE
    _accounted(collection)


def test_withdraw_works_while_paused(collection: Any, admin: Any, treasury: Any, stranger: Any) -> None:
    collection.pause(sender=admin)
    before = treasury.balance
    collection.withdrawFees(sender=stranger)
    assert treasury.balance == before + 5 * MINT_PRICE


def test_accounting_through_a_lifecycle(
    collection: Any, chain: Any, agent: Any, alice: Any, bob: Any, carol: Any, stranger: Any, treasury: Any
) -> None:
    """Escrow + withdrawable == balance after every step, and the treasury ends with exactly mints + fulfilled."""
    start_treasury = treasury.balance
    expected_treasury = 0
    collection.withdrawFees(sender=stranger)
    expected_treasury += 5 * MINT_PRICE
    _accounted(collection)
    collection.mint(1, sender=carol, value=MINT_PRICE)  # token 6
    _accounted(collection)
    r1 = collection.requestEvolution(1, sender=alice, value=EVOLUTION_FEE)
    r4 = collection.requestEvolution(4, sender=bob, value=EVOLUTION_FEE)
    collection.requestEvolution(6, sender=carol, value=EVOLUTION_FEE)
    _accounted(collection)
    assert collection.escrowedFees() == 3 * EVOLUTION_FEE
    ids = [next(x for x in r.events if x.event_name == "EvolutionRequested").requestId for r in (r1, r4)]
    collection.fulfillEvolutions(
        ids, seeds_of(collection, ids), [digest_of(b"1"), digest_of(b"4")], [PROVENANCE] * 2, sender=agent
    )
    _accounted(collection)
    chain.pending_timestamp = chain.pending_timestamp + REQUEST_TIMEOUT
    collection.cancelEvolution((6 << 32) | 1, sender=carol)
    _accounted(collection)
    assert collection.escrowedFees() == 0
    collection.withdrawFees(sender=stranger)
    expected_treasury += MINT_PRICE + 2 * EVOLUTION_FEE
    assert treasury.balance == start_treasury + expected_treasury
    assert collection.balance == collection.refundOf(carol) == EVOLUTION_FEE
    collection.withdrawRefund(carol, sender=carol)
    _accounted(collection)
    assert collection.balance == 0
