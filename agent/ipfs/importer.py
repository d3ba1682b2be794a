"""The UnixFS file importer, block for block what ``ipfs add`` (Kubo) makes with its defaults.

* Fixed-size chunks of 262144 bytes (``--chunker=size-262144``); the last one may be shorter.
* Balanced DAG with at most 174 links per node: leaves are grouped 174 to a node, those nodes 174 to a node, and
  so on until one root remains. A file of one chunk is its leaf alone.
* Leaves: raw blocks (CIDv1 ``--raw-leaves``, the default for ``--cid-version=1``) or dag-pb UnixFS ``File``
  nodes (CIDv0, or CIDv1 with ``--raw-leaves=false``). An empty file is one empty leaf.
* Internal nodes: dag-pb UnixFS ``File`` nodes with ``filesize`` and one ``blocksizes`` entry per child; links
  have an empty name and the child's cumulative size as Tsize.

Streaming: input is consumed one chunk at a time and each block goes to the blockstore as soon as it is made;
only one partial chunk and the pending links of each tree level are held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, Final, Protocol

from agent.ipfs.blockstore import Blockstore, BytesLike
from agent.ipfs.cid import CID, DAG_PB, RAW, raw_cid
from agent.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs, file_leaf_parts
from agent.ipfs.errors import BlockTooLargeError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_LINKS",
    "MAX_CHUNK_SIZE",
    "MAX_METADATA_BLOCK",
    "FileImporter",
    "ImportedFile",
    "import_file",
    "metadata_block",
]

DEFAULT_CHUNK_SIZE: Final = 262144
"""Kubo's default chunker: ``size-262144``."""

DEFAULT_MAX_LINKS: Final = 174
"""Kubo's balanced layout: at most 174 links per node."""

MAX_CHUNK_SIZE: Final = 1 << 20
"""Kubo refuses chunkers above 1 MiB (blocks larger than that do not travel over bitswap)."""

MAX_METADATA_BLOCK: Final = DEFAULT_CHUNK_SIZE
"""Largest single raw block for metadata. Up to this size, ``ipfs add --cid-version=1`` of the same bytes gives
the same ``bafkrei...`` CID (one chunk, raw leaf), and the CID's digest is ``sha256(file)``."""


class _Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ImportedFile:
    """What the importer made.

    Attributes:
        cid: the root.
        size: file bytes.
        dag_size: cumulative bytes of every block in the DAG (the Tsize a parent directory records).
        blocks: blocks made (repeated chunks are counted each time).
    """

    cid: CID
    size: int
    dag_size: int
    blocks: int


# (cid, tsize, file bytes) of a finished subtree
_Entry = tuple[CID, int, int]


class FileImporter:
    """Push-style importer: :meth:`write` bytes as they arrive, then :meth:`finish` for the root.

    Args:
        store: where blocks go; ``None`` computes the CID only (nothing is kept).
        cid_version: 0 or 1.
        raw_leaves: raw leaf blocks; ``None`` means Kubo's default (True for CIDv1, False for CIDv0).
        chunk_size: bytes per leaf, 1..1048576.
        max_links: children per internal node (Kubo: 174).
    """

    def __init__(
        self,
        store: Blockstore | None = None,
        *,
        cid_version: int = 1,
        raw_leaves: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_links: int = DEFAULT_MAX_LINKS,
    ) -> None:
        if cid_version not in (0, 1):
            raise ValueError(f"cid_version must be 0 or 1, got {cid_version!r}")
        if raw_leaves is None:
            raw_leaves = cid_version == 1
        if raw_leaves and cid_version == 0:
            raise ValueError("raw leaves need CIDv1 (a CIDv0 can only name dag-pb); pass cid_version=1")
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes, got {chunk_size}")
        if max_links < 2:
            raise ValueError(f"max_links must be at least 2, got {max_links}")
        self._store = store
        self._version = cid_version
        self._raw = raw_leaves
        self._chunk = chunk_size
        self._max_links = max_links
        self._pending = bytearray()
        self._levels: list[list[_Entry]] = [[]]
        self._leaves = 0
        self._blocks = 0
        self._size = 0
        self._finished = False
        self._full_parts = file_leaf_parts(chunk_size)

    def write(self, data: BytesLike) -> None:
        """Feed the next bytes of the file (any length)."""
        if self._finished:
            raise ValueError("write() after finish()")
        view = memoryview(data).cast("B")
        size = self._chunk
        if self._pending:
            need = size - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) < size:
                return
            self._leaf(self._pending)
            self._pending = bytearray()
        end = len(view) - len(view) % size
        for start in range(0, end, size):
            self._leaf(view[start : start + size])
        if end < len(view):
            self._pending += view[end:]

    def finish(self) -> ImportedFile:
        """Flush the last chunk and the tree; returns the root."""
        if self._finished:
            raise ValueError("finish() called twice")
        self._finished = True
        if self._pending or self._leaves == 0:
            self._leaf(self._pending)
            self._pending = bytearray()
        levels = self._levels
        i = 0
        while True:
            top = i == len(levels) - 1
            if top and len(levels[i]) == 1:
                cid, tsize, size = levels[i][0]
                return ImportedFile(cid, size, tsize, self._blocks)
            if levels[i]:
                entry = self._node(levels[i])
                levels[i] = []
                if top:
                    levels.append([])
                levels[i + 1].append(entry)
            i += 1

    # -- blocks --

    def _leaf(self, chunk: BytesLike) -> None:
        n = len(chunk)
        store = self._store
        if self._raw:
            cid = CID(1, RAW, b"\x12\x20" + hashlib.sha256(chunk).digest())
            if store is not None:
                store.put(cid, chunk)
            tsize = n
        else:
            prefix, suffix = self._full_parts if n == self._chunk else file_leaf_parts(n)
            h = hashlib.sha256(prefix)
            h.update(chunk)
            h.update(suffix)
            cid = CID(self._version, DAG_PB, b"\x12\x20" + h.digest())
            if store is not None:
                store.put(cid, prefix, chunk, suffix)
            tsize = len(prefix) + n + len(suffix)
        self._leaves += 1
        self._blocks += 1
        self._size += n
        self._push((cid, tsize, n))

    def _push(self, entry: _Entry) -> None:
        levels = self._levels
        levels[0].append(entry)
        i = 0
        while len(levels[i]) == self._max_links:
            node = self._node(levels[i])
            levels[i] = []
            if i + 1 == len(levels):
                levels.append([])
            levels[i + 1].append(node)
            i += 1

    def _node(self, children: list[_Entry]) -> _Entry:
        sizes = tuple(size for _, _, size in children)
        filesize = sum(sizes)
        data = encode_unixfs(UnixFSData(DataType.FILE, filesize=filesize, blocksizes=sizes))
        links = tuple(PBLink(cid, "", tsize) for cid, tsize, _ in children)
        block = encode_node(PBNode(links, data), sort_links=False)
        cid = CID(self._version, DAG_PB, b"\x12\x20" + hashlib.sha256(block).digest())
        if self._store is not None:
            self._store.put(cid, block)
        self._blocks += 1
        return cid, len(block) + sum(tsize for _, tsize, _ in children), filesize


def import_file(
    source: BytesLike | BinaryIO | _Source | Iterable[BytesLike],
    store: Blockstore | None = None,
    *,
    cid_version: int = 1,
    raw_leaves: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_links: int = DEFAULT_MAX_LINKS,
) -> ImportedFile:
    """Import one file as ``ipfs add`` does.

    Args:
        source: the content: bytes (sliced without copying), a binary stream (read one chunk at a time) or an
            iterable of byte strings.
        store: where blocks go; ``None`` computes the CID only.
        cid_version: 0 or 1.
        raw_leaves: ``None`` means True for CIDv1, False for CIDv0 (Kubo's defaults).
        chunk_size: bytes per leaf.
        max_links: children per internal node.
    """
    importer = FileImporter(
        store, cid_version=cid_version, raw_leaves=raw_leaves, chunk_size=chunk_size, max_links=max_links
    )
    if isinstance(source, (bytes, bytearray, memoryview)):
        importer.write(source)
    elif hasattr(source, "read"):
        read = source.read
        while True:
            piece = read(chunk_size)
            if not piece:
                break
            importer.write(piece)
    else:
        for piece in source:
            importer.write(piece)
    return importer.finish()


def metadata_block(data: BytesLike, *, limit: int = MAX_METADATA_BLOCK) -> CID:
    """The CID of ``data`` stored as ONE raw block (CIDv1, raw codec): its digest is ``sha256(data)``.

    This is what a contract that keeps a bytes32 digest per token rebuilds into ``ipfs://bafkrei...``.

    Raises:
        BlockTooLargeError: ``data`` is over ``limit`` (256 KiB by default).
    """
    if len(data) > limit:
        raise BlockTooLargeError(
            len(data),
            limit,
            what="metadata block",
            hint="keep token metadata small (put images in their own files and link them by CID); "
            "a larger file must be added with add(), and its CID is then not sha256(file)",
        )
    return raw_cid(data)
