"""fuse(keepId, burnId): burn one token to open an evolution request for another."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.contracts.support import (
    EVOLUTION_FEE,
    REFRESHER_ROLE,
    ZERO32,
    ZERO_ADDRESS,
    digest_of,
    ev,
    events,
    gas_paid,
    norm,
    only_event,
    request_id,
    reverts,
    seed_of,
    unauthorized,
)

PROVENANCE = hashlib.sha256(b"fusion").digest()


def test_fuse(collection: Any, agent: Any, alice: Any) -> None:
    before_alice, before_contract = alice.balance, collection.balance
    receipt = collection.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    rid = request_id(1, 1)
    logged = events(receipt, collection)
    # The burn, then the request, then Fused naming both.
    assert [name for name, _ in logged] == ["Transfer", "EvolutionRequested", "Fused"]
    assert logged[0] == ev("Transfer", **{"from": alice, "to": ZERO_ADDRESS, "tokenId": 2})
    requested = dict(logged[1][1])
    assert requested.pop("seed") != ZERO32
    assert requested == norm({"requestId": rid, "tokenId": 1, "requester": alice, "stage": 0})
    assert logged[2] == ev("Fused", keepId=1, burnId=2, requestId=rid)
    # Token 2 is gone; token 1 has an escrowed request.
    assert collection.exists(2) is False
    with reverts(collection.ERC721NonexistentToken, tokenId=2):
        collection.ownerOf(2)
    assert collection.balanceOf(alice) == 2
    assert collection.totalSupply() == 4
    assert collection.totalMinted() == 5
    assert norm(collection.pendingRequestOf(1)) == norm((rid, alice, EVOLUTION_FEE, receipt.timestamp))
    assert norm(collection.pendingRequestOf(2)) == norm((0, ZERO_ADDRESS, 0, 0))
    assert collection.escrowedFees() == EVOLUTION_FEE
    assert alice.balance == before_alice - EVOLUTION_FEE - gas_paid(receipt)
    assert collection.balance == before_contract + EVOLUTION_FEE
    # The agent fulfils it like any request.
    collection.fulfillEvolution(rid, seed_of(collection, rid), digest_of(b"fused"), PROVENANCE, sender=agent)
    assert collection.stageOf(1) == 1
    assert collection.escrowedFees() == 0


def test_fuse_evolved_tokens(collection: Any, agent: Any, alice: Any, request_evolution: Any) -> None:
    # Burning an evolved token is fine; the kept token's next request has the next nonce and its stage.
    for token_id in (1, 2):
        rid, _ = request_evolution(token_id, alice)
        collection.fulfillEvolution(
            rid, seed_of(collection, rid), digest_of(bytes([token_id])), PROVENANCE, sender=agent
        )
    receipt = collection.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    assert only_event(receipt, "Fused", collection) == norm(
        {"keepId": 1, "burnId": 2, "requestId": request_id(1, 2)}
    )
    assert only_event(receipt, "EvolutionRequested", collection)["stage"] == 1
    # The burnt token's metadata is gone with it.
    with reverts(collection.LivingCollectionUnknownToken, tokenId=2):
        collection.tokenURI(2)
    with reverts(collection.LivingCollectionUnknownToken, tokenId=2):
        collection.refreshMetadata([2], [digest_of(b"x")], PROVENANCE, sender=agent)
    with reverts(collection.LivingCollectionUnknownToken, tokenId=2):
        collection.requestEvolution(2, sender=alice, value=EVOLUTION_FEE)


def test_fuse_by_operator(collection: Any, alice: Any, carol: Any) -> None:
    collection.setApprovalForAll(carol, True, sender=alice)
    receipt = collection.fuse(3, 1, sender=carol, value=EVOLUTION_FEE)
    assert norm(only_event(receipt, "EvolutionRequested", collection)["requester"]) == norm(carol)
    assert norm(collection.ownerOf(3)) == norm(alice)


def test_fuse_with_per_token_approvals(collection: Any, alice: Any, bob: Any, carol: Any) -> None:
    # carol is approved for alice's token 1 and bob's token 4: she may fuse them across owners.
    collection.approve(carol, 1, sender=alice)
    collection.approve(carol, 4, sender=bob)
    collection.fuse(1, 4, sender=carol, value=EVOLUTION_FEE)
    assert collection.exists(4) is False
    assert norm(collection.pendingRequestOf(1)[1]) == norm(carol)


def test_fuse_rejections(collection: Any, alice: Any, bob: Any, agent: Any) -> None:
    with reverts(collection.LivingCollectionSelfFuse, tokenId=1):
        collection.fuse(1, 1, sender=alice, value=EVOLUTION_FEE)
    with reverts(collection.LivingCollectionNotHolder, tokenId=4, caller=alice):
        collection.fuse(1, 4, sender=alice, value=EVOLUTION_FEE)  # burn someone else's
    with reverts(collection.LivingCollectionNotHolder, tokenId=4, caller=alice):
        collection.fuse(4, 1, sender=alice, value=EVOLUTION_FEE)  # keep someone else's
    with reverts(collection.LivingCollectionNotHolder, tokenId=1, caller=agent):
        collection.fuse(1, 2, sender=agent, value=EVOLUTION_FEE)
    with reverts(collection.LivingCollectionUnknownToken, tokenId=9):
        collection.fuse(1, 9, sender=alice, value=EVOLUTION_FEE)
    with reverts(collection.LivingCollectionUnknownToken, tokenId=0):
        collection.fuse(0, 1, sender=alice, value=EVOLUTION_FEE)
    for sent in (0, EVOLUTION_FEE - 1, EVOLUTION_FEE + 1):
        with reverts(collection.LivingCollectionWrongPayment, sent=sent, required=EVOLUTION_FEE):
            collection.fuse(1, 2, sender=alice, value=sent)
    # An approval for one of the two is not enough.
    collection.approve(bob, 1, sender=alice)
    with reverts(collection.LivingCollectionNotHolder, tokenId=2, caller=bob):
        collection.fuse(1, 2, sender=bob, value=EVOLUTION_FEE)
    assert collection.totalSupply() == 5
    assert collection.escrowedFees() == 0


def test_fuse_pending_tokens(collection: Any, agent: Any, alice: Any, request_evolution: Any) -> None:
    rid2, _ = request_evolution(2, alice)
    # A token with a pending request cannot be burnt (its fee would be stranded)...
    with reverts(collection.LivingCollectionRequestPending, tokenId=2, requestId=rid2):
        collection.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    # ...nor kept: it already has a request.
    with reverts(collection.LivingCollectionRequestPending, tokenId=2, requestId=rid2):
        collection.fuse(2, 3, sender=alice, value=EVOLUTION_FEE)
    assert collection.exists(3) is True
    # Once fulfilled, it may be burnt.
    collection.fulfillEvolution(rid2, seed_of(collection, rid2), digest_of(b"2"), PROVENANCE, sender=agent)
    collection.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    assert collection.exists(2) is False
    assert collection.escrowedFees() == EVOLUTION_FEE


def test_fuse_when_paused_and_role_free(collection: Any, admin: Any, alice: Any) -> None:
    collection.pause(sender=admin)
    with reverts(collection.EnforcedPause):
        collection.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    collection.unpause(sender=admin)
    # fuse needs no role: the admin holding every role but the tokens cannot fuse them.
    with reverts(collection.LivingCollectionNotHolder, tokenId=1, caller=admin):
        collection.fuse(1, 2, sender=admin, value=EVOLUTION_FEE)
    with unauthorized(collection, alice, REFRESHER_ROLE):
        collection.refreshMetadata([1], [digest_of(b"x")], PROVENANCE, sender=alice)
