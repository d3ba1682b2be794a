"""UnixFS HAMT-sharded directories (``HAMTShard``), as go-unixfs/boxo writes and reads them.

* Fanout 256: each level consumes one byte of the key hash, most significant first.
* Hash: murmur3 x64 128 (seed 0) of the entry name, of which the first 64 bits (``h1``) are used, big-endian:
  ``hashType`` 0x22. Hand-written here; :func:`murmur3_x64_64` is cross-checked against ``mmh3`` in the tests.
* Node: dag-pb with UnixFS ``Data{Type: HAMTShard, Data: bitfield, hashType: 0x22, fanout: 256}``; the bitfield
  marks used buckets, bit ``i`` counting from the least significant bit of a big-endian byte string with leading
  zero bytes trimmed (go-bitfield ``Bytes()``).
* Links, in bucket order: ``"%02X" % index + name`` for an entry, ``"%02X" % index`` alone for a sub-shard.
  A bucket holding one entry links it; a bucket where two or more names collide holds a sub-shard. Building from
  the full set of names gives the same tree as Kubo's inserts, whatever their order.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from agent.ipfs.blockstore import Blockstore
from agent.ipfs.cid import CID, DAG_PB
from agent.ipfs.dagpb import (
    HAMT_FANOUT,
    HAMT_HASH_MURMUR3,
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    decode_unixfs,
    encode_node,
    encode_unixfs,
)
from agent.ipfs.errors import InvalidBlockError

__all__ = [
    "PREFIX_LEN",
    "build_shard",
    "check_shard",
    "hamt_entries",
    "hamt_lookup",
    "murmur3_x64_64",
    "murmur3_x64_128",
    "name_hash",
    "shard_index",
    "shard_links",
]

PREFIX_LEN: Final = 2  # len("%X" % (256 - 1))
_MAX_DEPTH: Final = 8  # 64 bits of hash, 8 bits per level
_HEX_UPPER: Final = frozenset("0123456789ABCDEF")

_M: Final = 0xFFFFFFFFFFFFFFFF
_C1: Final = 0x87C37B91114253D5
_C2: Final = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M
    k ^= k >> 33
    return k


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3 x64 128-bit; returns ``(h1, h2)`` as unsigned 64-bit integers."""
    length = len(data)
    h1 = h2 = seed & _M
    nblocks = length // 16
    for k1, k2 in struct.iter_unpack("<QQ", data[: nblocks * 16]):
        k1 = (k1 * _C1) & _M
        k1 = _rotl(k1, 31)
        h1 ^= (k1 * _C2) & _M
        h1 = _rotl(h1, 27)
        h1 = (h1 + h2) & _M
        h1 = (h1 * 5 + 0x52DCE729) & _M
        k2 = (k2 * _C2) & _M
        k2 = _rotl(k2, 33)
        h2 ^= (k2 * _C1) & _M
        h2 = _rotl(h2, 31)
        h2 = (h2 + h1) & _M
        h2 = (h2 * 5 + 0x38495AB5) & _M
    tail = data[nblocks * 16 :]
    if len(tail) > 8:
        k2 = int.from_bytes(tail[8:], "little")
        k2 = (k2 * _C2) & _M
        k2 = _rotl(k2, 33)
        h2 ^= (k2 * _C1) & _M
    if tail:
        k1 = int.from_bytes(tail[:8], "little")
        k1 = (k1 * _C1) & _M
        k1 = _rotl(k1, 31)
        h1 ^= (k1 * _C2) & _M
    h1 ^= length
    h2 ^= length
    h1 = (h1 + h2) & _M
    h2 = (h2 + h1) & _M
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = (h1 + h2) & _M
    h2 = (h2 + h1) & _M
    return h1, h2


def murmur3_x64_64(data: bytes) -> int:
    """The 64-bit murmur3 go-unixfs uses (spaolacci ``murmur3.New64``): ``h1`` of the 128-bit hash."""
    return murmur3_x64_128(data)[0]


def name_hash(name: str) -> bytes:
    """The 8 hash bytes that place ``name`` in the shard tree (byte ``d`` is its bucket at depth ``d``)."""
    return murmur3_x64_64(name.encode("utf-8")).to_bytes(8, "big")


def _prefix(index: int) -> str:
    return f"{index:02X}"


def _bitfield_bytes(bits: int) -> bytes | None:
    if bits == 0:
        return None  # go-bitfield Bytes() of an empty field is nil: the Data field is left out
    return bits.to_bytes((bits.bit_length() + 7) // 8, "big")


def build_shard(
    entries: Sequence[PBLink], store: Blockstore | None, *, cid_version: int = 1
) -> tuple[CID, int]:
    """Build the HAMT for ``entries`` (unique names); returns the root CID and its cumulative size (Tsize).

    Raises:
        ValueError: two names share all 64 hash bits (cannot be placed; go-unixfs fails the same way).
    """
    hashed = [(name_hash(link.name), link) for link in entries]
    return _build(hashed, 0, store, cid_version)


def _build(
    hashed: list[tuple[bytes, PBLink]], depth: int, store: Blockstore | None, cid_version: int
) -> tuple[CID, int]:
    if depth >= _MAX_DEPTH:
        names = ", ".join(repr(link.name) for _, link in hashed[:4])
        raise ValueError(f"HAMT: names {names} collide on all 64 hash bits; rename one of them")
    buckets: dict[int, list[tuple[bytes, PBLink]]] = {}
    for item in hashed:
        buckets.setdefault(item[0][depth], []).append(item)
    bits = 0
    links: list[PBLink] = []
    for index in sorted(buckets):
        bits |= 1 << index
        members = buckets[index]
        if len(members) == 1:
            link = members[0][1]
            links.append(PBLink(link.cid, _prefix(index) + link.name, link.tsize))
        else:
            child, tsize = _build(members, depth + 1, store, cid_version)
            links.append(PBLink(child, _prefix(index), tsize))
    data = encode_unixfs(
        UnixFSData(
            DataType.HAMT_SHARD, data=_bitfield_bytes(bits), hash_type=HAMT_HASH_MURMUR3, fanout=HAMT_FANOUT
        )
    )
    block = encode_node(PBNode(tuple(links), data))
    cid = CID(cid_version, DAG_PB, b"\x12\x20" + hashlib.sha256(block).digest())
    if store is not None:
        store.put(cid, block)
    return cid, len(block) + sum(link.tsize for link in links)


# -- reading --

GetNode = Callable[[CID], PBNode]
"""Returns the decoded dag-pb node for a CID (a reader's cache)."""

ShardIndex = dict[str, list[PBLink]]
"""A shard node's links by their 2-character bucket prefix."""

GetShard = Callable[[CID], ShardIndex]
"""Returns the (cached) :func:`shard_index` of a shard node."""


def check_shard(cid: CID, node: PBNode) -> UnixFSData:
    """The node's UnixFS data, if it is a HAMT shard this reader understands.

    Raises:
        InvalidBlockError: not a shard, or another hash function or fanout.
    """
    fs = decode_unixfs(node.data, cid=cid)
    if fs.type != DataType.HAMT_SHARD:
        raise InvalidBlockError(f"expected a HAMT shard, found UnixFS {fs.type.name}", cid=cid)
    if fs.hash_type != HAMT_HASH_MURMUR3 or fs.fanout != HAMT_FANOUT:
        raise InvalidBlockError(
            f"HAMT with hashType {fs.hash_type} and fanout {fs.fanout} is not supported (only murmur3 0x22, 256)",
            cid=cid,
        )
    return fs


def shard_links(cid: CID, node: PBNode) -> list[tuple[int, PBLink]]:
    """The node's links with their bucket indices, checked against the shard's own bookkeeping.

    A shard written by go-unixfs (or :func:`build_shard`) has one link per used bucket, in bucket order, each
    named with its bucket's 2-digit uppercase hex prefix, and its bitfield marks exactly those buckets. Anything
    else (more links than the fanout, repeated or unsorted prefixes, links the bitfield does not mark) is refused:
    such a node can only make a listing repeat itself.

    Raises:
        InvalidBlockError: not a shard, another hash or fanout, or links that break the rules above.
    """
    fs = check_shard(cid, node)
    if len(node.links) > HAMT_FANOUT:
        raise InvalidBlockError(
            f"HAMT shard has {len(node.links)} links, more than its fanout of {HAMT_FANOUT}", cid=cid
        )
    out: list[tuple[int, PBLink]] = []
    used = 0
    previous = -1
    for link in node.links:
        prefix = link.name[:PREFIX_LEN]
        if len(prefix) < PREFIX_LEN or not all(c in _HEX_UPPER for c in prefix):
            raise InvalidBlockError(
                f"HAMT link name {link.name!r} does not start with a 2-digit uppercase hex bucket", cid=cid
            )
        index = int(prefix, 16)
        if index <= previous:
            raise InvalidBlockError(
                f"HAMT bucket {prefix} is out of order or repeated (after {previous:02X})", cid=cid
            )
        previous = index
        used |= 1 << index
        out.append((index, link))
    bits = int.from_bytes(fs.data or b"", "big")
    if bits != used:
        raise InvalidBlockError(
            f"HAMT bitfield does not match the links (it marks {bits.bit_count()} buckets, "
            f"the {len(out)} links use {used.bit_count()}, {(bits ^ used).bit_count()} differ)",
            cid=cid,
        )
    return out


def shard_index(cid: CID, node: PBNode) -> ShardIndex:
    """Index a shard node's links by bucket prefix (checks the node with :func:`shard_links`)."""
    return {link.name[:PREFIX_LEN]: [link] for _, link in shard_links(cid, node)}


def hamt_lookup(get_shard: GetShard, root: CID, name: str) -> PBLink | None:
    """The link (with the bare entry ``name``) for ``name`` in the shard tree at ``root``, or ``None``."""
    digest = name_hash(name)
    cid = root
    for depth in range(_MAX_DEPTH):
        prefix = _prefix(digest[depth])
        child: PBLink | None = None
        for link in get_shard(cid).get(prefix, ()):
            if len(link.name) == PREFIX_LEN:
                child = link
                break
            if link.name[PREFIX_LEN:] == name:
                return PBLink(link.cid, name, link.tsize)
        if child is None:
            return None
        cid = child.cid
    return None


def hamt_entries(get: GetNode, root: CID) -> Iterator[PBLink]:
    """Every entry under the shard tree at ``root``, in shard order, with bare names; lazily.

    Bounded by the blocks actually stored: every node is checked (:func:`shard_links`), the tree may be at most
    8 levels deep (64 hash bits, as :func:`hamt_lookup` reads it), and a sub-shard reached twice (a
    "DAG bomb" whose buckets all point at one child) is refused instead of being listed again.

    Raises:
        InvalidBlockError: a malformed shard, too deep, or a sub-shard linked twice.
    """
    seen = {root.multihash}
    stack = [(root, 0, iter(shard_links(root, get(root))))]
    while stack:
        parent, depth, links = stack[-1]
        item = next(links, None)
        if item is None:
            stack.pop()
            continue
        link = item[1]
        if len(link.name) > PREFIX_LEN:
            yield PBLink(link.cid, link.name[PREFIX_LEN:], link.tsize)
            continue
        if depth + 1 >= _MAX_DEPTH:
            raise InvalidBlockError(
                f"HAMT is deeper than {_MAX_DEPTH} levels (a 64-bit hash has no more buckets)", cid=parent
            )
        if link.cid.multihash in seen:
            raise InvalidBlockError(
                f"HAMT sub-shard {link.cid} is linked more than once in the same directory", cid=parent
            )
        seen.add(link.cid.multihash)
        stack.append((link.cid, depth + 1, iter(shard_links(link.cid, get(link.cid)))))
