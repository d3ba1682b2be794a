"""The commit-reveal scheme of a genesis: a provenance hash published before reveal, an offset from a later block.

This is the practice of large PFP launches (Bored Ape Yacht Club's ``PROVENANCE`` and ``startingIndex``), spelled
out so that anyone can check it:

1. **Order.** The trait assignment (:mod:`agent.genesis.assign`) fixes an *item order* ``0 .. N-1`` from the
   operator's seed. Item ``i`` is generated with seed ``derive_seed(genesis_seed, i)``
   (:func:`agent.generate.seed.derive_seed`), so its image and lore depend only on the table, the seed and ``i``.
   An item the quality gates regenerated uses the ``n``-th public reroll instead,
   ``derive_seed(reroll_seed(genesis_seed, n), i)`` (:func:`agent.genesis.assign.item_seed`).
2. **Records.** Each item has a record (:func:`item_record`): its index, traits, seed and the hashes of what was
   generated (image PNG sha256 and CID, lore text sha256, the inference receipt's sha256), and ``reroll: n`` when
   ``n > 0`` (so a record of an item made on its first try is what it was before the gates rerolled; a verifier
   recomputes the seed from ``n``; ``provenance.json`` lists the rerolled items). Its digest is
   ``sha256(canonical_json(record))`` (sorted keys, compact, UTF-8: :func:`agent.domain.canonical_json`).
3. **Commit.** The provenance hash is ``sha256(d_0 || d_1 || ... || d_{N-1})`` over the 32-byte record digests in
   item order (:func:`provenance_hash`). It is published before reveal (``provenance.json``; put it on your site,
   in a tweet, in the contract's description): from then on no item can be changed or reordered unnoticed.
4. **Reveal.** A block chosen *after* the commit (``reveal block``) decides the offset:
   ``offset = uint256(blockhash(reveal block)) mod N`` (:func:`reveal_offset`). Nobody knows that hash when
   committing, so nobody can place a rare item on a chosen token id. With a deployed collection both are
   committed on-chain, once (``commitReveal(provenanceHash, revealBlock)``, at least ``REVEAL_DELAY`` blocks
   ahead), the contract records the hash itself (``reveal()``) and ``revealOffset(N)`` is the offset, so the
   operator can neither pick among past blocks nor swap the provenance hash (``reveal.json``'s ``contract``
   names that collection). Before a deployment the block is only announced with the provenance hash.
5. **Mapping.** Token id ``t`` (``1 .. N``, the collection's ids) shows item ``(t - 1 + offset) mod N``
   (:func:`token_to_item`); item ``i`` is token ``(i - offset) mod N + 1`` (:func:`item_to_token`).

A revealed collection's IPFS directory holds ``provenance.json`` (records, hash, reveal block and offset) next to
the token files, so a collector can recompute every step from the published data alone. Once a reveal is
recorded, the same output directory refuses another reveal block (no re-rolling the offset).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.domain import canonical_json, sha256_hex
from agent.errors import ConfigError

SCHEME = "chrysalis.genesis.provenance/1"
"""Names the rules above; stored in ``provenance.json``."""


def record_sha256(record: Mapping[str, Any]) -> str:
    """Hex sha256 of a record's canonical JSON."""
    return sha256_hex(canonical_json(dict(record)))


def provenance_hash(record_digests: Iterable[str]) -> str:
    """Hex sha256 over the concatenated 32-byte record digests, in item order."""
    h = hashlib.sha256()
    for i, digest in enumerate(record_digests):
        raw = bytes.fromhex(digest)
        if len(raw) != 32:
            raise ValueError(f"record digest #{i} is {len(raw)} bytes, not 32")
        h.update(raw)
    return h.hexdigest()


def item_record(
    *,
    item: int,
    traits: Mapping[str, str],
    seed: int,
    image_cid: str,
    png_sha256: str,
    lore_sha256: str,
    receipt_sha256: str,
    reroll: int = 0,
) -> dict[str, Any]:
    """The committed record of one generated item (see step 2 of the module docstring); ``reroll``: which public
    reroll of the genesis seed made it (recorded only when above 0)."""
    return {
        "item": item,
        "traits": dict(sorted(traits.items())),
        "seed": str(seed),
        "image": {"cid": image_cid, "png_sha256": png_sha256},
        "lore_sha256": lore_sha256,
        "receipt_sha256": receipt_sha256,
    } | ({"reroll": reroll} if reroll else {})


def reveal_offset(block_hash: str | bytes, size: int) -> int:
    """``uint256(block_hash) mod size``."""
    raw = bytes.fromhex(block_hash.removeprefix("0x")) if isinstance(block_hash, str) else bytes(block_hash)
    if len(raw) != 32:
        raise ConfigError(
            f"reveal block hash has {len(raw)} bytes, not 32",
            hint="pass the block's hash as 0x + 64 hex digits",
        )
    return int.from_bytes(raw, "big") % size


def token_to_item(token_id: int, offset: int, size: int) -> int:
    """The item token ``token_id`` (1-based) shows."""
    if not 1 <= token_id <= size:
        raise ConfigError(f"token id {token_id} is outside 1..{size}", hint="genesis token ids start at 1")
    return (token_id - 1 + offset) % size


def item_to_token(item: int, offset: int, size: int) -> int:
    """The token id (1-based) that shows ``item``."""
    return (item - offset) % size + 1


@dataclass(frozen=True)
class Reveal:
    """The block that fixed the offset, and the offset.

    Attributes:
        block_number: The reveal block. block_hash: Its hash (``0x`` hex). chain_id: The chain (0 when unknown).
        offset: ``uint256(block_hash) mod size``. size: The collection size.
        provenance_sha256: The provenance hash the reveal applies to.
        contract: The collection whose on-chain commitment (``commitReveal`` / ``reveal``) fixed the block, or
            None when the block was only announced off-chain.
    """

    block_number: int
    block_hash: str
    chain_id: int
    offset: int
    size: int
    provenance_sha256: str
    contract: str | None = None

    @classmethod
    def of(
        cls,
        *,
        block_number: int,
        block_hash: str,
        chain_id: int,
        size: int,
        provenance_sha256: str,
        contract: str | None = None,
    ) -> Reveal:
        block_hash = "0x" + block_hash.lower().removeprefix("0x")
        return cls(
            block_number=block_number,
            block_hash=block_hash,
            chain_id=chain_id,
            offset=reveal_offset(block_hash, size),
            size=size,
            provenance_sha256=provenance_sha256,
            contract=contract,
        )

    def to_json(self) -> dict[str, Any]:
        bound = {} if self.contract is None else {"contract": self.contract}
        return {
            **bound,
            "scheme": SCHEME,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "chain_id": self.chain_id,
            "offset": self.offset,
            "size": self.size,
            "provenance_sha256": self.provenance_sha256,
            "rule": "offset = uint256(block_hash) mod size; token t shows item (t - 1 + offset) mod size",
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reveal:
        reveal = cls.of(
            block_number=int(data["block_number"]),
            block_hash=str(data["block_hash"]),
            chain_id=int(data.get("chain_id", 0)),
            size=int(data["size"]),
            provenance_sha256=str(data["provenance_sha256"]),
            contract=str(data["contract"]) if data.get("contract") else None,
        )
        if int(data["offset"]) != reveal.offset:
            raise ConfigError(
                f"reveal record says offset {data['offset']} but its block hash gives {reveal.offset}",
                hint="the reveal record was edited; restore it (the offset is never chosen by hand)",
            )
        return reveal
