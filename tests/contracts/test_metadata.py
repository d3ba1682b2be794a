"""tokenURI (baseURI before the first digest, then ipfs://CIDv1), refreshMetadata and its ERC-4906 events.

Every CID here is computed in Python (hashlib + base64) from the same metadata bytes, and the Python side is
itself pinned to Kubo's CIDs for two literal inputs.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contracts.support import (
    BASE_URI,
    BURNT_MARKER,
    DEFAULT_ADMIN_ROLE,
    EVOLUTION_FEE,
    KUBO_VECTORS,
    REFRESHER_ROLE,
    ZERO32,
    b32,
    cid_of,
    cid_of_digest,
    digest_of,
    ev,
    event_names,
    events,
    metadata,
    reverts,
    seed_of,
    unauthorized,
)

PROVENANCE = hashlib.sha256(b"scheduled refresh 2026-11-01").digest()


@pytest.mark.parametrize("data", list(KUBO_VECTORS), ids=["hello-world", "empty"])
def test_python_cid_matches_kubo(data: bytes) -> None:
    assert cid_of(data) == KUBO_VECTORS[data]


@pytest.mark.parametrize("data", list(KUBO_VECTORS), ids=["hello-world", "empty"])
def test_token_uri_matches_kubo_vectors(collection: Any, agent: Any, data: bytes) -> None:
    collection.refreshMetadata([1], [hashlib.sha256(data).digest()], PROVENANCE, sender=agent)
    assert collection.tokenURI(1) == "ipfs://" + KUBO_VECTORS[data]


def test_token_uri_before_first_digest_is_base_uri(collection: Any) -> None:
    for token_id in (1, 5):
        assert collection.metadataDigestOf(token_id) == ZERO32
        assert collection.tokenURI(token_id) == f"{BASE_URI}{token_id}"


def test_token_uri_after_fulfilment_is_python_cid(
    collection: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(2, alice)
    doc = metadata(2, 1, "first evolution")
    collection.fulfillEvolution(rid, seed_of(collection, rid), digest_of(doc), PROVENANCE, sender=agent)
    uri = collection.tokenURI(2)
    assert uri == "ipfs://" + cid_of(doc)
    assert len(uri) == 66 and uri.startswith("ipfs://bafkrei")
    assert collection.metadataDigestOf(2) == digest_of(doc)
    # Other tokens keep their genesis URI.
    assert collection.tokenURI(1) == f"{BASE_URI}1"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(digest=st.binary(min_size=32, max_size=32))
def test_cid_library_matches_python(harness: Any, digest: bytes) -> None:
    expected = cid_of_digest(digest)
    assert harness.toCID(digest) == expected
    assert harness.toIpfsURI(digest) == "ipfs://" + expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=80))
def test_base32_matches_python(harness: Any, data: bytes) -> None:
    assert harness.base32(data) == b32(data)


@pytest.mark.parametrize(
    "digest",
    [b"\x00" * 31 + b"\x01", b"\xfe" + b"\xff" * 31, bytes(range(32)), b"\x80" + b"\x00" * 31],
    ids=["one", "almost-all-ones", "ramp", "top-bit"],
)
def test_token_uri_edge_digests(collection: Any, agent: Any, digest: bytes) -> None:
    collection.refreshMetadata([3], [digest], PROVENANCE, sender=agent)
    assert collection.tokenURI(3) == "ipfs://" + cid_of_digest(digest)


def test_unknown_and_burnt_tokens(collection: Any, alice: Any) -> None:
    collection.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    for token_id in (0, 2, 6, 2**32):
        with reverts(collection.LivingCollectionUnknownToken, tokenId=token_id):
            collection.tokenURI(token_id)
        with reverts(collection.LivingCollectionUnknownToken, tokenId=token_id):
            collection.metadataDigestOf(token_id)
        with reverts(collection.LivingCollectionUnknownToken, tokenId=token_id):
            collection.stageOf(token_id)
        with reverts(collection.LivingCollectionUnknownToken, tokenId=token_id):
            collection.modelOf(token_id)


def test_set_base_uri(collection: Any, admin: Any, agent: Any, stranger: Any) -> None:
    collection.refreshMetadata([4], [digest_of(b"four")], PROVENANCE, sender=agent)
    receipt = collection.setBaseURI("ar://genesis/", sender=admin)
    # Every minted token may have changed: one BatchMetadataUpdate over 1..totalMinted.
    assert events(receipt, collection) == [
        ev("BaseURIChanged", baseURI="ar://genesis/"),
        ev("BatchMetadataUpdate", _fromTokenId=1, _toTokenId=5),
    ]
    assert collection.baseURI() == "ar://genesis/"
    assert collection.tokenURI(1) == "ar://genesis/1"
    assert collection.tokenURI(4) == "ipfs://" + cid_of(b"four")  # a digest wins over the base URI
    collection.setBaseURI("", sender=admin)
    assert collection.tokenURI(1) == ""
    with unauthorized(collection, stranger, DEFAULT_ADMIN_ROLE):
        collection.setBaseURI("x", sender=stranger)
    with unauthorized(collection, agent, DEFAULT_ADMIN_ROLE):
        collection.setBaseURI("x", sender=agent)


def test_set_base_uri_events_by_supply(bare: Any, admin: Any, alice: Any) -> None:
    # No tokens: nothing to update.
    assert event_names(bare.setBaseURI("a/", sender=admin), bare) == ["BaseURIChanged"]
    bare.airdrop(alice, 1, sender=admin)
    assert events(bare.setBaseURI("b/", sender=admin), bare) == [
        ev("BaseURIChanged", baseURI="b/"),
        ev("MetadataUpdate", _tokenId=1),
    ]


# --------------------------------------------------------------------------------------------------------------
# refreshMetadata
# --------------------------------------------------------------------------------------------------------------


def _digests(ids: list[int], note: str = "refresh") -> list[bytes]:
    return [digest_of(metadata(i, 0, note)) for i in ids]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([1, 2, 3, 4, 5], [("BatchMetadataUpdate", 1, 5)]),
        ([3], [("MetadataUpdate", 3)]),
        (
            [1, 2, 4, 5, 3],
            [("BatchMetadataUpdate", 1, 2), ("BatchMetadataUpdate", 4, 5), ("MetadataUpdate", 3)],
        ),
        ([5, 1, 3], [("MetadataUpdate", 5), ("MetadataUpdate", 1), ("MetadataUpdate", 3)]),
        ([3, 2, 1], [("MetadataUpdate", 3), ("MetadataUpdate", 2), ("MetadataUpdate", 1)]),
        ([2, 3, 3, 4], [("BatchMetadataUpdate", 2, 3), ("BatchMetadataUpdate", 3, 4)]),
        ([], []),
    ],
    ids=["contiguous", "single", "two-runs-and-one", "scattered", "descending", "duplicate", "empty"],
)
def test_refresh_events(collection: Any, agent: Any, ids: list[int], expected: list[tuple]) -> None:
    digests = _digests(ids)
    receipt = collection.refreshMetadata(ids, digests, PROVENANCE, sender=agent)
    erc4906 = []
    for name, *args in expected:
        if name == "MetadataUpdate":
            erc4906.append(ev(name, _tokenId=args[0]))
        else:
            erc4906.append(ev(name, _fromTokenId=args[0], _toTokenId=args[1]))
    # The ERC-4906 events, then one MetadataRefreshed.
    assert events(receipt, collection) == [
        *erc4906,
        ev("MetadataRefreshed", count=len(ids), provenance=PROVENANCE),
    ]
    final = dict(zip(ids, digests, strict=True))  # the last digest written for a duplicated id wins
    for token_id, digest in final.items():
        assert collection.metadataDigestOf(token_id) == digest
        assert collection.tokenURI(token_id) == "ipfs://" + cid_of_digest(digest)


def test_refresh_keeps_stage_and_model(
    collection: Any, admin: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    from tests.contracts.support import MANIFEST_V2, WEIGHTS_V2

    rid, _ = request_evolution(1, alice)
    collection.fulfillEvolution(
        rid, seed_of(collection, rid), digest_of(b"stage 1"), PROVENANCE, sender=agent
    )
    collection.registerModel(WEIGHTS_V2, MANIFEST_V2, sender=admin)
    collection.setActiveModel(2, sender=admin)
    collection.refreshMetadata([1, 2], _digests([1, 2]), PROVENANCE, sender=agent)
    assert (collection.stageOf(1), collection.modelOf(1)) == (1, 1)
    assert (collection.stageOf(2), collection.modelOf(2)) == (0, 0)


def test_refresh_needs_no_active_model(bare: Any, admin: Any, agent: Any, alice: Any) -> None:
    bare.grantRole(REFRESHER_ROLE, agent, sender=admin)
    bare.airdrop(alice, 2, sender=admin)
    assert bare.activeModel() == 0
    bare.refreshMetadata([1, 2], _digests([1, 2]), PROVENANCE, sender=agent)
    assert bare.tokenURI(2) == "ipfs://" + cid_of_digest(_digests([2])[0])


def test_refresh_with_pending_request(
    collection: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    rid, _ = request_evolution(1, alice)
    collection.refreshMetadata([1], [digest_of(b"refreshed")], PROVENANCE, sender=agent)
    assert collection.isPending(rid) is True
    assert collection.tokenURI(1) == "ipfs://" + cid_of(b"refreshed")
    collection.fulfillEvolution(
        rid, seed_of(collection, rid), digest_of(b"evolved"), PROVENANCE, sender=agent
    )
    assert collection.tokenURI(1) == "ipfs://" + cid_of(b"evolved")
    assert collection.stageOf(1) == 1


def test_refresh_rejections(collection: Any, admin: Any, agent: Any, alice: Any, stranger: Any) -> None:
    good = _digests([1, 2])
    with reverts(collection.LivingCollectionLengthMismatch, a=2, b=1):
        collection.refreshMetadata([1, 2], good[:1], PROVENANCE, sender=agent)
    with reverts(collection.LivingCollectionLengthMismatch, a=1, b=2):
        collection.refreshMetadata([1], good, PROVENANCE, sender=agent)
    with reverts(collection.LivingCollectionInvalidDigest, digest=ZERO32):
        collection.refreshMetadata([1, 2], [good[0], ZERO32], PROVENANCE, sender=agent)
    with reverts(collection.LivingCollectionInvalidDigest, digest=BURNT_MARKER):
        collection.refreshMetadata([1], [BURNT_MARKER], PROVENANCE, sender=agent)
    for token_id in (0, 6, 2**64):
        with reverts(collection.LivingCollectionUnknownToken, tokenId=token_id):
            collection.refreshMetadata([1, token_id], good, PROVENANCE, sender=agent)
    collection.fuse(1, 2, sender=alice, value=EVOLUTION_FEE)
    with reverts(collection.LivingCollectionUnknownToken, tokenId=2):
        collection.refreshMetadata([3, 2], good, PROVENANCE, sender=agent)
    for account in (admin, alice, stranger):
        with unauthorized(collection, account, REFRESHER_ROLE):
            collection.refreshMetadata([1], good[:1], PROVENANCE, sender=account)
    # Nothing was written by any of the failed calls.
    assert collection.metadataDigestOf(1) == ZERO32
    assert collection.metadataDigestOf(3) == ZERO32
