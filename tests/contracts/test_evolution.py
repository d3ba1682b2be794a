"""Evolution requests: open (escrow), fulfil (once, batch), cancel after the timeout (refund)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.contracts.support import (
    AGENT_ROLE,
    BURNT_MARKER,
    DEFAULT_ADMIN_ROLE,
    EVOLUTION_FEE,
    MANIFEST_V1,
    MANIFEST_V2,
    MAX_REQUEST_TIMEOUT,
    MIN_REQUEST_TIMEOUT,
    REQUEST_TIMEOUT,
    UINT96_MAX,
    WEIGHTS_V1,
    WEIGHTS_V2,
    ZERO32,
    ZERO_ADDRESS,
    cid_of,
    cid_of_digest,
    digest_of,
    ev,
    event_names,
    events,
    gas_paid,
    metadata,
    norm,
    only_event,
    request_id,
    reverts,
    seed_of,
    seeds_of,
    unauthorized,
)

PROVENANCE = hashlib.sha256(b"inputs: wallet + ETH/USD at block n").digest()
NO_REQUEST = (0, ZERO_ADDRESS, 0, 0)


def _doc(token_id: int, stage: int) -> bytes:
    return metadata(token_id, stage, "evolved")


# --------------------------------------------------------------------------------------------------------------
# requestEvolution
# --------------------------------------------------------------------------------------------------------------


def test_request_escrows_fee_and_emits(collection: Any, alice: Any) -> None:
    before_alice, before_contract = alice.balance, collection.balance
    withdrawable = collection.withdrawableFees()
    receipt = collection.requestEvolution(1, sender=alice, value=EVOLUTION_FEE)
    rid = request_id(1, 1)
    args = only_event(receipt, "EvolutionRequested", collection)
    seed = args.pop("seed")
    assert args == norm({"requestId": rid, "tokenId": 1, "requester": alice, "stage": 0})
    assert len(seed) == 32 and seed != ZERO32
    assert event_names(receipt, collection) == ["EvolutionRequested"]
    if receipt.return_value is not None:  # providers that trace return the id too
        assert receipt.return_value == rid
    assert norm(collection.pendingRequestOf(1)) == norm((rid, alice, EVOLUTION_FEE, receipt.timestamp))
    assert collection.isPending(rid) is True
    assert collection.cancellableAt(rid) == receipt.timestamp + REQUEST_TIMEOUT
    assert collection.requestCount(1) == 1
    assert collection.stageOf(1) == 0  # unchanged until fulfilled
    assert collection.modelOf(1) == 0
    assert alice.balance == before_alice - EVOLUTION_FEE - gas_paid(receipt)
    assert collection.balance == before_contract + EVOLUTION_FEE
    assert collection.escrowedFees() == EVOLUTION_FEE
    assert collection.withdrawableFees() == withdrawable


def test_request_ids_per_token(collection: Any, alice: Any, bob: Any, request_evolution: Any) -> None:
    seeds = set()
    for token_id, holder in ((1, alice), (2, alice), (5, bob)):
        rid, receipt = request_evolution(token_id, holder)
        assert rid == token_id << 32 | 1
        seeds.add(only_event(receipt, "EvolutionRequested", collection)["seed"])
    assert len(seeds) == 3
    assert collection.escrowedFees() == 3 * EVOLUTION_FEE
    assert collection.isPending(request_id(3, 1)) is False
    assert norm(collection.pendingRequestOf(3)) == norm(NO_REQUEST)


def test_request_by_approved_and_operator(collection: Any, alice: Any, bob: Any, carol: Any) -> None:
    collection.approve(bob, 1, sender=alice)
    receipt = collection.requestEvolution(1, sender=bob, value=EVOLUTION_FEE)
    assert norm(only_event(receipt, "EvolutionRequested", collection)["requester"]) == norm(bob)
    collection.setApprovalForAll(carol, True, sender=alice)
    receipt = collection.requestEvolution(2, sender=carol, value=EVOLUTION_FEE)
    assert norm(only_event(receipt, "EvolutionRequested", collection)["requester"]) == norm(carol)
    assert norm(collection.pendingRequestOf(2)[1]) == norm(carol)


def test_request_rejections(
    collection: Any, alice: Any, bob: Any, agent: Any, request_evolution: Any
) -> None:
    with reverts(collection.LivingCollectionNotHolder, tokenId=4, caller=alice):
        collection.requestEvolution(4, sender=alice, value=EVOLUTION_FEE)
    with reverts(collection.LivingCollectionNotHolder, tokenId=1, caller=agent):
        collection.requestEvolution(1, sender=agent, value=EVOLUTION_FEE)
    for token_id in (0, 6):
        with reverts(collection.LivingCollectionUnknownToken, tokenId=token_id):
            collection.requestEvolution(token_id, sender=alice, value=EVOLUTION_FEE)
    for sent in (0, EVOLUTION_FEE - 1, EVOLUTION_FEE + 1):
        with reverts(collection.LivingCollectionWrongPayment, sent=sent, required=EVOLUTION_FEE):
            collection.requestEvolution(1, sender=alice, value=sent)
    rid, _ = request_evolution(1, alice)
    with reverts(collection.LivingCollectionRequestPending, tokenId=1, requestId=rid):
        collection.requestEvolution(1, sender=alice, value=EVOLUTION_FEE)
    # Approval of another token does not help.
    collection.approve(bob, 2, sender=alice)
    with reverts(collection.LivingCollectionNotHolder, tokenId=3, caller=bob):
        collection.requestEvolution(3, sender=bob, value=EVOLUTION_FEE)
    assert collection.escrowedFees() == EVOLUTION_FEE


def test_transfer_with_pending_request(
    collection: Any, agent: Any, alice: Any, carol: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(1, alice)
    collection.transferFrom(alice, carol, 1, sender=alice)  # allowed: only burning is blocked
    with reverts(collection.LivingCollectionRequestPending, tokenId=1, requestId=rid):
        collection.requestEvolution(1, sender=carol, value=EVOLUTION_FEE)
    collection.fulfillEvolution(
        rid, seed_of(collection, rid), digest_of(_doc(1, 1)), PROVENANCE, sender=agent
    )
    assert collection.stageOf(1) == 1
    rid2, receipt = request_evolution(1, carol)
    assert rid2 == request_id(1, 2)
    assert only_event(receipt, "EvolutionRequested", collection)["stage"] == 1


# --------------------------------------------------------------------------------------------------------------
# fulfillEvolution
# --------------------------------------------------------------------------------------------------------------


def test_fulfil(collection: Any, agent: Any, alice: Any, request_evolution: Any) -> None:
    rid, _ = request_evolution(1, alice)
    withdrawable, contract_balance = collection.withdrawableFees(), collection.balance
    doc = _doc(1, 1)
    receipt = collection.fulfillEvolution(
        rid, seed_of(collection, rid), digest_of(doc), PROVENANCE, sender=agent
    )
    assert events(receipt, collection) == [
        ev(
            "Evolved", tokenId=1, requestId=rid, stage=1, metadataDigest=digest_of(doc), provenance=PROVENANCE
        ),
        ev("MetadataUpdate", _tokenId=1),
    ]
    assert collection.stageOf(1) == 1
    assert collection.metadataDigestOf(1) == digest_of(doc)
    assert collection.tokenURI(1) == "ipfs://" + cid_of(doc)
    assert collection.modelOf(1) == 1
    assert collection.isPending(rid) is False
    assert norm(collection.pendingRequestOf(1)) == norm(NO_REQUEST)
    # Escrow moves to withdrawable; no ether moves.
    assert collection.escrowedFees() == 0
    assert collection.withdrawableFees() == withdrawable + EVOLUTION_FEE
    assert collection.balance == contract_balance
    with reverts(collection.LivingCollectionRequestNotPending, requestId=rid):
        collection.cancellableAt(rid)


def test_fulfil_exactly_once(collection: Any, agent: Any, alice: Any, request_evolution: Any) -> None:
    rid, _ = request_evolution(1, alice)
    collection.fulfillEvolution(rid, seed_of(collection, rid), digest_of(b"one"), PROVENANCE, sender=agent)
    with reverts(collection.LivingCollectionRequestNotPending, requestId=rid):
        collection.fulfillEvolution(
            rid, seed_of(collection, rid), digest_of(b"two"), PROVENANCE, sender=agent
        )
    assert collection.stageOf(1) == 1
    assert collection.metadataDigestOf(1) == digest_of(b"one")
    assert collection.withdrawableFees() == 5 * 10**16 + EVOLUTION_FEE


def test_second_evolution(collection: Any, agent: Any, alice: Any, request_evolution: Any) -> None:
    rid1, _ = request_evolution(1, alice)
    collection.fulfillEvolution(
        rid1, seed_of(collection, rid1), digest_of(_doc(1, 1)), PROVENANCE, sender=agent
    )
    rid2, receipt = request_evolution(1, alice)
    assert rid2 == request_id(1, 2)
    assert only_event(receipt, "EvolutionRequested", collection)["stage"] == 1
    assert collection.stageOf(1) == 1
    receipt = collection.fulfillEvolution(
        rid2, seed_of(collection, rid2), digest_of(_doc(1, 2)), PROVENANCE, sender=agent
    )
    assert only_event(receipt, "Evolved", collection)["stage"] == 2
    assert collection.stageOf(1) == 2
    assert collection.requestCount(1) == 2
    # The first id stays dead.
    assert collection.isPending(rid1) is False


def test_fulfil_rejections(
    collection: Any, admin: Any, agent: Any, alice: Any, bob: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(1, alice)
    good = digest_of(b"ok")
    for bad in (request_id(1, 2), request_id(1, 0), request_id(2, 1), request_id(99, 1), 0, rid + (1 << 32)):
        with reverts(collection.LivingCollectionRequestNotPending, requestId=bad):
            collection.fulfillEvolution(bad, ZERO32, good, PROVENANCE, sender=agent)
    with reverts(collection.LivingCollectionInvalidDigest, digest=ZERO32):
        collection.fulfillEvolution(rid, seed_of(collection, rid), ZERO32, PROVENANCE, sender=agent)
    with reverts(collection.LivingCollectionInvalidDigest, digest=BURNT_MARKER):
        collection.fulfillEvolution(rid, seed_of(collection, rid), BURNT_MARKER, PROVENANCE, sender=agent)
    for account in (admin, alice, bob):
        with unauthorized(collection, account, AGENT_ROLE):
            collection.fulfillEvolution(rid, seed_of(collection, rid), good, PROVENANCE, sender=account)
    assert collection.isPending(rid) is True
    assert collection.escrowedFees() == EVOLUTION_FEE


def test_requests_and_fulfilments_need_an_active_model(bare: Any, admin: Any, agent: Any, alice: Any) -> None:
    """Without an active model a request could only ever be cancelled: opening one (or fusing) reverts, and so does
    a fulfilment. A model, once active, stays active (setActiveModel rejects 0)."""
    bare.grantRole(AGENT_ROLE, agent, sender=admin)
    bare.airdrop(alice, 2, sender=admin)
    with reverts(bare.LivingCollectionNoActiveModel):
        bare.requestEvolution(1, sender=alice, value=EVOLUTION_FEE)
    with reverts(bare.LivingCollectionNoActiveModel):
        bare.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    rid = 1 << 32 | 1
    with reverts(bare.LivingCollectionNoActiveModel):
        bare.fulfillEvolution(rid, ZERO32, digest_of(b"x"), PROVENANCE, sender=agent)
    with reverts(bare.LivingCollectionNoActiveModel):
        bare.fulfillEvolutions([rid], [ZERO32], [digest_of(b"x")], [PROVENANCE], sender=agent)
    bare.registerModel(WEIGHTS_V1, MANIFEST_V1, sender=admin)
    with reverts(bare.LivingCollectionNoActiveModel):  # registered is not active
        bare.requestEvolution(1, sender=alice, value=EVOLUTION_FEE)
    assert (bare.escrowedFees(), bare.exists(2), bare.requestCount(1)) == (0, True, 0)
    bare.setActiveModel(1, sender=admin)
    receipt = bare.requestEvolution(1, sender=alice, value=EVOLUTION_FEE)
    rid = only_event(receipt, "EvolutionRequested", bare)["requestId"]
    bare.fulfillEvolution(rid, seed_of(bare, rid), digest_of(b"x"), PROVENANCE, sender=agent)
    assert bare.modelOf(1) == 1


def test_fulfil_records_model_active_at_fulfilment(
    collection: Any, admin: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(1, alice)  # opened under model 1
    collection.registerModel(WEIGHTS_V2, MANIFEST_V2, sender=admin)
    collection.setActiveModel(2, sender=admin)
    assert collection.modelOf(1) == 0  # unchanged while pending
    collection.fulfillEvolution(rid, seed_of(collection, rid), digest_of(b"v2"), PROVENANCE, sender=agent)
    assert collection.modelOf(1) == 2
    # Back to model 1 for the next evolution: modelOf follows; a pending request shows the previous one.
    collection.setActiveModel(1, sender=admin)
    rid2, _ = request_evolution(1, alice)
    assert collection.modelOf(1) == 2
    collection.fulfillEvolution(
        rid2, seed_of(collection, rid2), digest_of(b"v1 again"), PROVENANCE, sender=agent
    )
    assert collection.modelOf(1) == 1


def test_fulfil_works_while_paused(
    collection: Any, admin: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(1, alice)
    collection.pause(sender=admin)
    collection.fulfillEvolution(rid, seed_of(collection, rid), digest_of(b"paused"), PROVENANCE, sender=agent)
    assert collection.stageOf(1) == 1


def test_fee_change_keeps_pending_fee(
    collection: Any, admin: Any, agent: Any, alice: Any, stranger: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(1, alice)
    new_fee = 3 * EVOLUTION_FEE
    receipt = collection.setEvolutionFee(new_fee, sender=admin)
    assert events(receipt, collection) == [ev("EvolutionFeeChanged", previousFee=EVOLUTION_FEE, fee=new_fee)]
    assert collection.evolutionFee() == new_fee
    with reverts(collection.LivingCollectionWrongPayment, sent=EVOLUTION_FEE, required=new_fee):
        collection.requestEvolution(2, sender=alice, value=EVOLUTION_FEE)
    rid2, _ = request_evolution(2, alice, new_fee)
    assert collection.pendingRequestOf(1)[2] == EVOLUTION_FEE
    assert collection.pendingRequestOf(2)[2] == new_fee
    withdrawable = collection.withdrawableFees()
    collection.fulfillEvolution(rid, seed_of(collection, rid), digest_of(b"a"), PROVENANCE, sender=agent)
    assert collection.withdrawableFees() == withdrawable + EVOLUTION_FEE
    assert collection.escrowedFees() == new_fee
    with reverts(collection.LivingCollectionInvalidFee, fee=UINT96_MAX + 1):
        collection.setEvolutionFee(UINT96_MAX + 1, sender=admin)
    with unauthorized(collection, stranger, DEFAULT_ADMIN_ROLE):
        collection.setEvolutionFee(0, sender=stranger)
    with unauthorized(collection, agent, DEFAULT_ADMIN_ROLE):
        collection.setEvolutionFee(0, sender=agent)


def test_free_evolution(collection: Any, admin: Any, agent: Any, alice: Any) -> None:
    collection.setEvolutionFee(0, sender=admin)
    receipt = collection.requestEvolution(1, sender=alice, value=0)
    rid = only_event(receipt, "EvolutionRequested", collection)["requestId"]
    assert collection.isPending(rid) is True
    assert collection.escrowedFees() == 0
    collection.fulfillEvolution(rid, seed_of(collection, rid), digest_of(b"free"), PROVENANCE, sender=agent)
    assert collection.stageOf(1) == 1


# --------------------------------------------------------------------------------------------------------------
# fulfillEvolutions (batch)
# --------------------------------------------------------------------------------------------------------------


def test_batch_fulfil(collection: Any, agent: Any, alice: Any, bob: Any, request_evolution: Any) -> None:
    ids = [request_evolution(t, h)[0] for t, h in ((1, alice), (3, alice), (4, bob))]
    withdrawable = collection.withdrawableFees()
    digests = [digest_of(_doc(t, 1)) for t in (1, 3, 4)]
    provenances = [hashlib.sha256(bytes([t])).digest() for t in (1, 3, 4)]
    receipt = collection.fulfillEvolutions(ids, seeds_of(collection, ids), digests, provenances, sender=agent)
    expected = []
    for token_id, rid, digest, provenance in zip((1, 3, 4), ids, digests, provenances, strict=True):
        expected += [
            ev(
                "Evolved",
                tokenId=token_id,
                requestId=rid,
                stage=1,
                metadataDigest=digest,
                provenance=provenance,
            ),
            ev("MetadataUpdate", _tokenId=token_id),
        ]
    assert events(receipt, collection) == expected
    assert [collection.stageOf(t) for t in (1, 2, 3, 4, 5)] == [1, 0, 1, 1, 0]
    assert collection.escrowedFees() == 0
    assert collection.withdrawableFees() == withdrawable + 3 * EVOLUTION_FEE
    for token_id, digest in zip((1, 3, 4), digests, strict=True):
        assert collection.tokenURI(token_id) == "ipfs://" + cid_of_digest(digest)


def test_batch_rejects_bad_input_whole(
    collection: Any, agent: Any, alice: Any, bob: Any, request_evolution: Any
) -> None:
    """What only the agent can get wrong (a zero digest, arrays of different lengths, the role) reverts the whole
    batch; nothing is written."""
    a, _ = request_evolution(1, alice)
    b, _ = request_evolution(4, bob)
    d = [digest_of(b"a"), digest_of(b"b"), digest_of(b"c")]
    p = [PROVENANCE] * 3
    with reverts(collection.LivingCollectionInvalidDigest, digest=ZERO32):
        collection.fulfillEvolutions(
            [a, b], seeds_of(collection, [a, b]), [d[0], ZERO32], p[:2], sender=agent
        )
    with reverts(collection.LivingCollectionLengthMismatch, a=2, b=3):
        collection.fulfillEvolutions([a, b], seeds_of(collection, [a, b]), d, p[:2], sender=agent)
    with reverts(collection.LivingCollectionLengthMismatch, a=2, b=1):
        collection.fulfillEvolutions([a, b], seeds_of(collection, [a, b]), d[:2], p[:1], sender=agent)
    with unauthorized(collection, alice, AGENT_ROLE):
        collection.fulfillEvolutions([a, b], seeds_of(collection, [a, b]), d[:2], p[:2], sender=alice)
    assert collection.isPending(a) and collection.isPending(b)
    assert collection.escrowedFees() == 2 * EVOLUTION_FEE
    assert collection.stageOf(1) == collection.stageOf(4) == 0


def test_batch_skips_requests_no_longer_pending(
    collection: Any, agent: Any, alice: Any, bob: Any, request_evolution: Any
) -> None:
    """A request that is not pending (unknown, or listed twice) is skipped with FulfilmentSkipped; the others are
    fulfilled and only their fees settle."""
    a, _ = request_evolution(1, alice)
    b, _ = request_evolution(4, bob)
    withdrawable = collection.withdrawableFees()
    d = [digest_of(b"a"), digest_of(b"b"), digest_of(b"c"), digest_of(b"d")]
    stale = request_id(2, 1)
    receipt = collection.fulfillEvolutions(
        [a, stale, b, a],
        [seed_of(collection, a), ZERO32, seed_of(collection, b), seed_of(collection, a)],
        d,
        [PROVENANCE] * 4,
        sender=agent,
    )
    assert events(receipt, collection) == [
        ev("Evolved", tokenId=1, requestId=a, stage=1, metadataDigest=d[0], provenance=PROVENANCE),
        ev("MetadataUpdate", _tokenId=1),
        ev("FulfilmentSkipped", requestId=stale),
        ev("Evolved", tokenId=4, requestId=b, stage=1, metadataDigest=d[2], provenance=PROVENANCE),
        ev("MetadataUpdate", _tokenId=4),
        ev("FulfilmentSkipped", requestId=a),  # listed twice: the first fulfilled it
    ]
    assert collection.metadataDigestOf(1) == d[0]  # the duplicate wrote nothing
    assert collection.metadataDigestOf(2) == ZERO32
    assert collection.escrowedFees() == 0
    assert collection.withdrawableFees() == withdrawable + 2 * EVOLUTION_FEE
    # The single-request entry point still reverts.
    with reverts(collection.LivingCollectionRequestNotPending, requestId=a):
        collection.fulfillEvolution(a, seed_of(collection, a), d[3], PROVENANCE, sender=agent)


def test_a_cancel_front_running_a_batch_only_skips_that_request(
    collection: Any, chain: Any, agent: Any, alice: Any, bob: Any, request_evolution: Any
) -> None:
    """M4: a requester cancels (and re-opens) right before the agent's batch lands. The batch no longer reverts
    whole: the cancelled id is skipped, the re-opened request (a new id) stays pending, every other request is
    fulfilled and the accounting holds."""
    rids = [request_evolution(t, h)[0] for t, h in ((1, alice), (2, alice), (3, alice), (4, bob), (5, bob))]
    seeds = seeds_of(collection, rids)
    chain.pending_timestamp = chain.pending_timestamp + REQUEST_TIMEOUT
    collection.cancelEvolution(rids[1], sender=alice)  # front-runs the batch ...
    collection.cancelEvolution(rids[3], sender=bob)
    reopened, _ = request_evolution(4, bob)  # ... and opens a new request for the same token
    assert reopened == request_id(4, 2)
    digests = [digest_of(bytes([t])) for t in range(1, 6)]
    receipt = collection.fulfillEvolutions(rids, seeds, digests, [PROVENANCE] * 5, sender=agent)
    assert [
        args["requestId"] for name, args in events(receipt, collection) if name == "FulfilmentSkipped"
    ] == [
        rids[1],
        rids[3],
    ]
    assert [args["requestId"] for name, args in events(receipt, collection) if name == "Evolved"] == [
        rids[0],
        rids[2],
        rids[4],
    ]
    assert [collection.stageOf(t) for t in range(1, 6)] == [1, 0, 1, 0, 1]
    assert collection.isPending(reopened) and collection.escrowedFees() == EVOLUTION_FEE
    assert collection.refundOf(alice) == collection.refundOf(bob) == EVOLUTION_FEE
    assert collection.balance == (
        collection.escrowedFees() + collection.withdrawableFees() + collection.owedRefunds()
    )


def test_empty_batch(collection: Any, agent: Any) -> None:
    receipt = collection.fulfillEvolutions([], seeds_of(collection, []), [], [], sender=agent)
    assert events(receipt, collection) == []


# --------------------------------------------------------------------------------------------------------------
# Seed binding: a fulfilment names the seed of the request it was generated for
# --------------------------------------------------------------------------------------------------------------


def _flip(seed: bytes, index: int) -> bytes:
    return seed[:index] + bytes([seed[index] ^ 0x01]) + seed[index + 1 :]


def test_fulfil_with_the_request_seed(
    collection: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    rid, receipt = request_evolution(1, alice)
    seed = only_event(receipt, "EvolutionRequested", collection)["seed"]
    assert seed_of(collection, rid) == seed
    assert collection.isPendingWith(rid, seed) is True
    receipt = collection.fulfillEvolution(rid, seed, digest_of(b"bound"), PROVENANCE, sender=agent)
    assert only_event(receipt, "Evolved", collection)["requestId"] == rid
    assert collection.isPendingWith(rid, seed) is False  # fulfilled: no longer pending with any seed
    assert collection.metadataDigestOf(1) == digest_of(b"bound")


def test_fulfil_with_another_seed_reverts(
    collection: Any, agent: Any, alice: Any, bob: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(1, alice)
    other, _ = request_evolution(4, bob)
    seed = seed_of(collection, rid)
    # Any byte of the tag (the seed's top 96 bits), no seed, or another request's seed.
    for wrong in (_flip(seed, 0), _flip(seed, 11), ZERO32, seed_of(collection, other)):
        assert collection.isPendingWith(rid, wrong) is False
        with reverts(collection.LivingCollectionSeedMismatch, requestId=rid, seed=wrong):
            collection.fulfillEvolution(rid, wrong, digest_of(b"stale"), PROVENANCE, sender=agent)
    # Nothing changed: still pending with its own seed, fee still escrowed.
    assert collection.isPending(rid) is True and collection.isPendingWith(rid, seed) is True
    assert collection.escrowedFees() == 2 * EVOLUTION_FEE
    assert collection.stageOf(1) == 0 and collection.metadataDigestOf(1) == ZERO32
    # Not pending is reported first, whatever the seed.
    with reverts(collection.LivingCollectionRequestNotPending, requestId=request_id(2, 1)):
        collection.fulfillEvolution(request_id(2, 1), seed, digest_of(b"x"), PROVENANCE, sender=agent)
    collection.fulfillEvolution(rid, seed, digest_of(b"right"), PROVENANCE, sender=agent)
    assert collection.stageOf(1) == 1


def test_batch_skips_a_wrong_seed(
    collection: Any, agent: Any, alice: Any, bob: Any, request_evolution: Any
) -> None:
    """A request pending with another seed than the one named (metadata made from an orphaned log) is skipped
    like one that is not pending: nothing is written for it and it stays pending for its canonical seed."""
    a, _ = request_evolution(1, alice)
    b, _ = request_evolution(4, bob)
    seeds = seeds_of(collection, [a, b])
    d, p = [digest_of(b"a"), digest_of(b"b")], [PROVENANCE] * 2
    wrong = _flip(seeds[1], 3)
    with reverts(collection.LivingCollectionLengthMismatch, a=2, b=1):
        collection.fulfillEvolutions([a, b], seeds[:1], d, p, sender=agent)
    swapped = collection.fulfillEvolutions([a, b], seeds[::-1], d, p, sender=agent)
    assert event_names(swapped, collection) == ["FulfilmentSkipped", "FulfilmentSkipped"]
    assert collection.isPending(a) and collection.isPending(b)
    assert collection.escrowedFees() == 2 * EVOLUTION_FEE
    assert [collection.isPendingWith(r, s) for r, s in ((a, seeds[0]), (b, wrong))] == [True, False]
    receipt = collection.fulfillEvolutions([a, b], [seeds[0], wrong], d, p, sender=agent)
    assert events(receipt, collection)[1:] == [
        ev("MetadataUpdate", _tokenId=1),
        ev("FulfilmentSkipped", requestId=b),
    ]
    assert collection.isPendingWith(b, seeds[1]) is True
    assert collection.metadataDigestOf(4) == ZERO32
    assert collection.escrowedFees() == EVOLUTION_FEE


def test_is_pending_with_follows_the_latest_request(
    collection: Any, chain: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    assert collection.isPendingWith(request_id(1, 1), ZERO32) is False  # never opened
    rid1, _ = request_evolution(1, alice)
    seed1 = seed_of(collection, rid1)
    collection.fulfillEvolution(rid1, seed1, digest_of(b"one"), PROVENANCE, sender=agent)
    rid2, receipt = request_evolution(1, alice)
    seed2 = seed_of(collection, rid2)
    assert seed2 != seed1
    assert collection.isPendingWith(rid2, seed2) is True
    assert collection.isPendingWith(rid2, seed1) is False  # the token's previous request's seed
    assert collection.isPendingWith(rid1, seed1) is False  # that request is fulfilled
    chain.pending_timestamp = receipt.timestamp + REQUEST_TIMEOUT
    collection.cancelEvolution(rid2, sender=alice)
    assert collection.isPendingWith(rid2, seed2) is False
    rid3, _ = request_evolution(1, alice)
    assert collection.isPendingWith(rid3, seed_of(collection, rid3)) is True
    assert collection.isPendingWith(rid3, seed2) is False


def test_a_request_re_mined_after_a_reorg_needs_its_new_seed(
    collection: Any, chain: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    """The same request (same id) mined again in another block has a new seed: metadata made for the orphaned
    copy is rejected, the re-mined request's own seed is accepted."""
    # The provider's own snapshot, below Ape's isolation bookkeeping (which restores the test's start afterwards).
    snapshot = chain.provider.snapshot()
    rid, _ = request_evolution(1, alice)
    orphaned = seed_of(collection, rid)
    chain.provider.restore(snapshot)  # the request's block is gone ...
    chain.mine(2)  # ... and the chain goes on differently
    again, _ = request_evolution(1, alice)
    assert again == rid
    seed = seed_of(collection, rid)
    assert seed != orphaned
    assert collection.isPending(rid) is True  # what the old pre-send check asked: not enough
    assert collection.isPendingWith(rid, orphaned) is False
    with reverts(collection.LivingCollectionSeedMismatch, requestId=rid, seed=orphaned):
        collection.fulfillEvolution(rid, orphaned, digest_of(b"orphaned"), PROVENANCE, sender=agent)
    collection.fulfillEvolution(rid, seed, digest_of(b"canonical"), PROVENANCE, sender=agent)
    assert collection.metadataDigestOf(1) == digest_of(b"canonical")


# --------------------------------------------------------------------------------------------------------------
# cancelEvolution
# --------------------------------------------------------------------------------------------------------------


def test_cancel_after_timeout_refunds_requester(
    collection: Any, chain: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    rid, receipt = request_evolution(1, alice)
    opened = receipt.timestamp
    # Before the timeout: refused, with the time it becomes possible.
    chain.pending_timestamp = opened + REQUEST_TIMEOUT - 1
    with reverts(
        collection.LivingCollectionRequestNotExpired, requestId=rid, cancellableAt=opened + REQUEST_TIMEOUT
    ):
        collection.cancelEvolution(rid, sender=alice)
    # From cancellableAt on (inclusive).
    chain.pending_timestamp = opened + REQUEST_TIMEOUT
    before_alice, before_contract = alice.balance, collection.balance
    withdrawable = collection.withdrawableFees()
    receipt = collection.cancelEvolution(rid, sender=alice)
    assert receipt.timestamp == opened + REQUEST_TIMEOUT
    assert events(receipt, collection) == [
        ev("EvolutionCancelled", requestId=rid, tokenId=1, requester=alice, refund=EVOLUTION_FEE)
    ]
    # Credited, not sent (pull refunds): the fee stays in the contract until alice withdraws it.
    assert alice.balance == before_alice - gas_paid(receipt)
    assert collection.balance == before_contract
    assert collection.refundOf(alice) == collection.owedRefunds() == EVOLUTION_FEE
    before_alice = alice.balance
    receipt = collection.withdrawRefund(alice, sender=alice)
    assert events(receipt, collection) == [
        ev("RefundWithdrawn", account=alice, to=alice, amount=EVOLUTION_FEE)
    ]
    assert alice.balance == before_alice + EVOLUTION_FEE - gas_paid(receipt)
    assert collection.balance == before_contract - EVOLUTION_FEE
    assert collection.refundOf(alice) == collection.owedRefunds() == 0
    with reverts(collection.LivingCollectionNoRefund, account=alice):
        collection.withdrawRefund(alice, sender=alice)
    assert collection.escrowedFees() == 0
    assert collection.withdrawableFees() == withdrawable
    assert collection.isPending(rid) is False
    assert norm(collection.pendingRequestOf(1)) == norm(NO_REQUEST)
    assert collection.stageOf(1) == 0
    # A cancelled id is dead for good, and the next request gets a new nonce.
    with reverts(collection.LivingCollectionRequestNotPending, requestId=rid):
        collection.cancelEvolution(rid, sender=alice)
    with reverts(collection.LivingCollectionRequestNotPending, requestId=rid):
        collection.fulfillEvolution(
            rid, seed_of(collection, rid), digest_of(b"late"), PROVENANCE, sender=agent
        )
    rid2, _ = request_evolution(1, alice)
    assert rid2 == request_id(1, 2)


def test_cancel_by_holder_refunds_requester(
    collection: Any, chain: Any, alice: Any, bob: Any, carol: Any, stranger: Any, agent: Any
) -> None:
    # bob, approved for alice's token, opens the request; the token then goes to carol.
    collection.approve(bob, 1, sender=alice)
    receipt = collection.requestEvolution(1, sender=bob, value=EVOLUTION_FEE)
    rid = only_event(receipt, "EvolutionRequested", collection)["requestId"]
    collection.transferFrom(alice, carol, 1, sender=alice)
    chain.pending_timestamp = receipt.timestamp + REQUEST_TIMEOUT + 1000
    # Only the requester (bob) or the current holder (carol) may cancel.
    for account in (alice, stranger, agent):
        with reverts(collection.LivingCollectionNotRequester, requestId=rid, caller=account):
            collection.cancelEvolution(rid, sender=account)
    before_bob = bob.balance
    receipt = collection.cancelEvolution(rid, sender=carol)
    assert only_event(receipt, "EvolutionCancelled", collection) == norm(
        {"requestId": rid, "tokenId": 1, "requester": bob, "refund": EVOLUTION_FEE}
    )
    assert bob.balance == before_bob  # bob sent nothing, paid no gas
    assert (collection.refundOf(bob), collection.refundOf(carol)) == (EVOLUTION_FEE, 0)
    with reverts(collection.LivingCollectionNoRefund, account=carol):
        collection.withdrawRefund(carol, sender=carol)
    with reverts(collection.LivingCollectionZeroAddress):
        collection.withdrawRefund(ZERO_ADDRESS, sender=bob)
    before_stranger = stranger.balance
    collection.withdrawRefund(stranger, sender=bob)  # bob may send it anywhere
    assert stranger.balance == before_stranger + EVOLUTION_FEE
    assert collection.refundOf(bob) == 0


def test_cancel_never_reverts_because_the_requester_rejects_eth(
    project: Any, collection: Any, chain: Any, admin: Any, alice: Any, carol: Any
) -> None:
    """L1: the requester is a contract without a receive function (an approved helper). Cancelling no longer
    pushes the refund, so the holder's cancel succeeds and unlocks the token; the helper collects elsewhere."""
    helper = admin.deploy(project.RejectingRequester)
    collection.approve(helper, 1, sender=alice)
    receipt = helper.request(collection, 1, sender=alice, value=EVOLUTION_FEE)
    rid = request_id(1, 1)
    assert collection.isPending(rid)
    chain.pending_timestamp = receipt.timestamp + REQUEST_TIMEOUT
    collection.cancelEvolution(rid, sender=alice)
    assert collection.refundOf(helper) == EVOLUTION_FEE
    collection.transferFrom(alice, carol, 1, sender=alice)  # the token is free again
    with reverts(collection.LivingCollectionTransferFailed, to=helper, amount=EVOLUTION_FEE):
        helper.withdrawRefund(collection, helper, sender=alice)
    before = carol.balance
    helper.withdrawRefund(collection, carol, sender=alice)
    assert carol.balance == before + EVOLUTION_FEE
    assert collection.balance == collection.escrowedFees() + collection.withdrawableFees()


def test_cancel_not_pending(collection: Any, alice: Any) -> None:
    for rid in (request_id(1, 1), request_id(1, 0), 0, request_id(99, 1)):
        with reverts(collection.LivingCollectionRequestNotPending, requestId=rid):
            collection.cancelEvolution(rid, sender=alice)


def test_cancel_works_while_paused(
    collection: Any, chain: Any, admin: Any, alice: Any, request_evolution: Any
) -> None:
    rid, receipt = request_evolution(1, alice)
    collection.pause(sender=admin)
    chain.pending_timestamp = receipt.timestamp + REQUEST_TIMEOUT
    collection.cancelEvolution(rid, sender=alice)
    assert collection.escrowedFees() == 0


def test_cancel_rolls_back_model_prediction(
    collection: Any, chain: Any, admin: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(1, alice)
    collection.fulfillEvolution(
        rid, seed_of(collection, rid), digest_of(b"stage 1"), PROVENANCE, sender=agent
    )
    collection.registerModel(WEIGHTS_V2, MANIFEST_V2, sender=admin)
    collection.setActiveModel(2, sender=admin)
    rid2, receipt = request_evolution(1, alice)  # predicts model 2 for stage 2
    chain.pending_timestamp = receipt.timestamp + REQUEST_TIMEOUT
    collection.cancelEvolution(rid2, sender=alice)
    assert (collection.stageOf(1), collection.modelOf(1)) == (1, 1)
    # The next request and its fulfilment build on the rolled-back state.
    collection.setActiveModel(1, sender=admin)
    rid3, receipt = request_evolution(1, alice)
    assert only_event(receipt, "EvolutionRequested", collection)["stage"] == 1
    receipt = collection.fulfillEvolution(
        rid3, seed_of(collection, rid3), digest_of(b"stage 2"), PROVENANCE, sender=agent
    )
    assert only_event(receipt, "Evolved", collection)["stage"] == 2
    assert (collection.stageOf(1), collection.modelOf(1)) == (2, 1)


def test_timeout_change_keeps_pending_timeout(
    collection: Any, chain: Any, admin: Any, alice: Any, stranger: Any, request_evolution: Any
) -> None:
    rid, receipt = request_evolution(1, alice)
    opened = receipt.timestamp
    longer = 2 * REQUEST_TIMEOUT
    change = collection.setRequestTimeout(longer, sender=admin)
    assert events(change, collection) == [
        ev("RequestTimeoutChanged", previousTimeout=REQUEST_TIMEOUT, timeout=longer)
    ]
    assert collection.cancellableAt(rid) == opened + REQUEST_TIMEOUT
    rid2, receipt2 = request_evolution(2, alice)
    assert collection.cancellableAt(rid2) == receipt2.timestamp + longer
    chain.pending_timestamp = max(opened + REQUEST_TIMEOUT, chain.pending_timestamp)
    with reverts(
        collection.LivingCollectionRequestNotExpired,
        requestId=rid2,
        cancellableAt=receipt2.timestamp + longer,
    ):
        collection.cancelEvolution(rid2, sender=alice)
    collection.cancelEvolution(rid, sender=alice)
    with unauthorized(collection, stranger, DEFAULT_ADMIN_ROLE):
        collection.setRequestTimeout(longer, sender=stranger)


def test_timeout_bounds(collection: Any, deploy: Any, admin: Any) -> None:
    """L2: at least MIN_REQUEST_TIMEOUT (1 hour), so a request is never cancellable in the block that opened it;
    at most MAX_REQUEST_TIMEOUT. Enforced by the setter and by the constructor."""
    assert collection.MIN_REQUEST_TIMEOUT() == MIN_REQUEST_TIMEOUT == 3600
    for bad in (0, 60, MIN_REQUEST_TIMEOUT - 1, MAX_REQUEST_TIMEOUT + 1):
        with reverts(collection.LivingCollectionInvalidTimeout, timeout=bad):
            collection.setRequestTimeout(bad, sender=admin)
        with reverts(collection.LivingCollectionInvalidTimeout, timeout=bad):
            deploy(requestTimeout_=bad)
    for good in (MIN_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT):
        collection.setRequestTimeout(good, sender=admin)
        assert collection.requestTimeout() == good


@pytest.mark.parametrize("token_id", [1, 2**200])
def test_is_pending_of_foreign_ids(collection: Any, token_id: int) -> None:
    # No request anywhere: every id is not pending, including huge token ids.
    assert collection.isPending(request_id(token_id, 1)) is False
    assert norm(collection.pendingRequestOf(token_id)) == norm(NO_REQUEST)
