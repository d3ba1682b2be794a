"""Ethereum's 2048-bit log bloom (yellow paper, section 4.3.1): may a block hold a log of ours?

Every block header carries ``logsBloom``, the bloom filter of the addresses and topics of all its logs. A bloom
never misses what was added (no false negatives) but may report what was not (false positives), so it can prove
that a block holds *no* log of the contract, and can make an ``eth_getLogs`` answer of ``[]`` suspicious: the
watcher asks again for a block whose bloom says it may hold one of our logs.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_utils import keccak

BLOOM_BYTES = 256


def _bits(item: bytes) -> tuple[int, int, int]:
    digest = keccak(item)
    return tuple(((digest[i] << 8) | digest[i + 1]) & 2047 for i in (0, 2, 4))  # type: ignore[return-value]


def bloom_has(bloom: bytes, item: bytes) -> bool:
    """Whether ``item`` (an address's 20 bytes or a topic's 32) may be in ``bloom`` (256 bytes)."""
    if len(bloom) != BLOOM_BYTES:
        raise ValueError(f"a logs bloom has {BLOOM_BYTES} bytes, not {len(bloom)}")
    value = int.from_bytes(bloom, "big")
    return all(value >> bit & 1 for bit in _bits(item))


def bloom_of(items: Iterable[bytes]) -> bytes:
    """The bloom holding ``items`` (for tests and tools)."""
    value = 0
    for item in items:
        for bit in _bits(item):
            value |= 1 << bit
    return value.to_bytes(BLOOM_BYTES, "big")


def may_hold(bloom: bytes, addresses: Iterable[str], topics0: Iterable[str]) -> bool:
    """Whether a block with ``bloom`` may hold a log of one of ``addresses`` whose first topic is one of
    ``topics0`` (``0x`` hex strings)."""
    return any(bloom_has(bloom, bytes.fromhex(a[2:])) for a in addresses) and any(
        bloom_has(bloom, bytes.fromhex(t[2:])) for t in topics0
    )
