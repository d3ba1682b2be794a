"""The genesis commit-reveal on-chain: the provenance hash and a future reveal block are committed once, before the
block exists; anyone records that block's hash afterwards; the offset is ``uint256(hash) mod N``."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.contracts.support import (
    DEFAULT_ADMIN_ROLE,
    REVEAL_DELAY,
    ZERO32,
    ev,
    events,
    reverts,
    unauthorized,
)

PROVENANCE = hashlib.sha256(b"genesis provenance").digest()


def _next_block(chain: Any) -> int:
    """The number of the block the next transaction is mined in."""
    return chain.blocks.head.number + 1


def test_commit_then_reveal(collection: Any, chain: Any, admin: Any, stranger: Any) -> None:
    assert collection.REVEAL_DELAY() == REVEAL_DELAY
    with reverts(collection.LivingCollectionNotRevealed):
        collection.revealOffset(100)
    with reverts(collection.LivingCollectionNothingToReveal):
        collection.reveal(sender=stranger)
    earliest = _next_block(chain) + REVEAL_DELAY
    with reverts(collection.LivingCollectionRevealTooSoon, revealBlock=earliest - 1, earliest=earliest):
        collection.commitReveal(PROVENANCE, earliest - 1, sender=admin)
    with unauthorized(collection, stranger, DEFAULT_ADMIN_ROLE):
        collection.commitReveal(PROVENANCE, earliest + 5, sender=stranger)
    reveal_block = _next_block(chain) + REVEAL_DELAY
    receipt = collection.commitReveal(PROVENANCE, reveal_block, sender=admin)
    assert events(receipt, collection) == [
        ev("RevealCommitted", provenanceHash=PROVENANCE, revealBlock=reveal_block)
    ]
    assert collection.revealCommitment() == (PROVENANCE, reveal_block, ZERO32)
    # Once: neither the block nor the provenance hash can be changed afterwards.
    with reverts(collection.LivingCollectionRevealCommitted):
        collection.commitReveal(PROVENANCE, reveal_block + 100, sender=admin)
    # Not before the block is mined (its hash is unknown until then).
    chain.mine(reveal_block - _next_block(chain))
    assert _next_block(chain) == reveal_block
    with reverts(collection.LivingCollectionRevealNotReady, revealBlock=reveal_block):
        collection.reveal(sender=stranger)
    receipt = collection.reveal(sender=stranger)  # anyone may record it
    block_hash = bytes(chain.provider.web3.eth.get_block(reveal_block)["hash"])
    assert events(receipt, collection) == [ev("Revealed", revealBlock=reveal_block, revealHash=block_hash)]
    assert collection.revealCommitment() == (PROVENANCE, reveal_block, block_hash)
    for n in (1, 7, 10_000):
        assert collection.revealOffset(n) == int.from_bytes(block_hash, "big") % n
    with reverts(collection.LivingCollectionNothingToReveal):
        collection.reveal(sender=admin)
    with reverts(collection.LivingCollectionRevealCommitted):
        collection.commitReveal(PROVENANCE, _next_block(chain) + 100, sender=admin)


def test_a_missed_reveal_moves_to_a_future_block(
    collection: Any, chain: Any, admin: Any, stranger: Any
) -> None:
    """The EVM keeps only 256 block hashes: a reveal recorded later moves to a new future block instead of using
    a hash someone could already see."""
    reveal_block = _next_block(chain) + REVEAL_DELAY
    collection.commitReveal(PROVENANCE, reveal_block, sender=admin)
    chain.mine(reveal_block + 257 - chain.blocks.head.number)
    moved_to = _next_block(chain) + REVEAL_DELAY
    receipt = collection.reveal(sender=stranger)
    assert events(receipt, collection) == [
        ev("RevealCommitted", provenanceHash=PROVENANCE, revealBlock=moved_to)
    ]
    assert collection.revealCommitment() == (PROVENANCE, moved_to, ZERO32)
    with reverts(collection.LivingCollectionNotRevealed):
        collection.revealOffset(10)
    chain.mine(moved_to - chain.blocks.head.number)
    collection.reveal(sender=stranger)
    assert collection.revealCommitment()[2] == bytes(chain.provider.web3.eth.get_block(moved_to)["hash"])
