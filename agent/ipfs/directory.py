"""UnixFS directories: a basic dag-pb ``Directory`` node, or a HAMT when it would be too large (as Kubo decides).

Kubo (boxo ``BasicDirectory.needsToSwitchToHAMTDir``, default ``links`` size estimation) shards a directory when
``sum(len(name in UTF-8) + len(CID bytes))`` over its entries reaches ``HAMTShardingSize`` = 256 KiB (``>=``).
With CIDv1 raw entries (36 bytes) and names like ``"1234.json"`` that is about 5,800 entries; with CIDv0 and
10-byte names, 5,958 (Kubo's own sharness test adds 5,960 to trigger it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

from agent.ipfs.blockstore import Blockstore
from agent.ipfs.cid import CID, DAG_PB
from agent.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs
from agent.ipfs.errors import InvalidPathError
from agent.ipfs.hamt import build_shard

__all__ = ["HAMT_SHARDING_SIZE", "build_directory", "estimated_size", "validate_name"]

HAMT_SHARDING_SIZE: Final = 256 * 1024
"""Kubo's ``Import.UnixFSHAMTDirectorySizeThreshold`` default."""


def validate_name(name: str) -> str:
    """Return ``name`` if it can be a directory entry name.

    Raises:
        InvalidPathError: empty, ``.``/``..``, or containing ``/`` or NUL.
    """
    if not isinstance(name, str):
        raise InvalidPathError(repr(name), f"entry names are str, got {type(name).__name__}")
    if not name:
        raise InvalidPathError(name, "entry name is empty", hint="give every entry a non-empty name")
    if name in (".", ".."):
        raise InvalidPathError(name, "'.' and '..' cannot be entry names", hint="rename the entry")
    if "/" in name or "\0" in name:
        raise InvalidPathError(
            name,
            "entry names cannot contain '/' or NUL",
            hint="build nested directories with one call per level",
        )
    return name


def estimated_size(links: Iterable[PBLink]) -> int:
    """Kubo's estimate of a basic directory's size: names plus CID bytes."""
    return sum(len(link.name.encode("utf-8")) + len(link.cid.to_bytes()) for link in links)


def build_directory(
    links: Sequence[PBLink],
    store: Blockstore | None,
    *,
    cid_version: int = 1,
    shard_threshold: int | None = HAMT_SHARDING_SIZE,
) -> tuple[CID, int, bool]:
    """Build a directory over ``links`` (entry name, target CID, target Tsize).

    Args:
        links: the entries; names must be unique and valid.
        store: where the directory blocks go (``None``: CID only).
        cid_version: CID version of the directory node(s).
        shard_threshold: shard when the estimate reaches this many bytes; ``None`` never shards, ``1`` always
            does (Kubo's ``UnixFSShardingSizeThreshold`` of ``1B``).

    Returns:
        ``(cid, tsize, sharded)``.
    """
    seen: set[str] = set()
    for link in links:
        validate_name(link.name)
        if link.name in seen:
            raise InvalidPathError(
                link.name, "two entries have this name", hint="names in a directory are unique"
            )
        seen.add(link.name)
    if shard_threshold is not None and estimated_size(links) >= shard_threshold:
        cid, tsize = build_shard(links, store, cid_version=cid_version)
        return cid, tsize, True
    data = encode_unixfs(UnixFSData(DataType.DIRECTORY))
    block = encode_node(PBNode(tuple(links), data))
    cid = CID(cid_version, DAG_PB, b"\x12\x20" + hashlib.sha256(block).digest())
    if store is not None:
        store.put(cid, block)
    return cid, len(block) + sum(link.tsize for link in links), False
