"""Reading UnixFS DAGs out of a blockstore: node kinds, byte ranges of files, directory listings (basic and
HAMT), path resolution and DAG walks.

Every block comes through :meth:`Blockstore.get`, which verifies it against its CID. Decoded directory and
internal nodes are cached (they are immutable: content-addressed); the cache is cleared when blocks are deleted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from agent.ipfs.blockstore import Blockstore
from agent.ipfs.cid import CID, DAG_PB, RAW
from agent.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, decode_node, decode_unixfs
from agent.ipfs.errors import (
    BlockNotFoundError,
    DagLimitError,
    InvalidBlockError,
    InvalidPathError,
    NodeKindError,
    PathNotFoundError,
    UnsupportedCodecError,
)
from agent.ipfs.hamt import ShardIndex, hamt_entries, hamt_lookup, shard_index

if TYPE_CHECKING:
    from agent.settings import IpfsSettings

__all__ = [
    "DEFAULT_MAX_FILE_EXPANSION",
    "DEFAULT_MAX_LISTING_ENTRIES",
    "DagLimits",
    "DagReader",
    "Kind",
    "NodeInfo",
    "split_path",
]

Kind = Literal["raw", "file", "directory"]

_CACHE_NODES: Final = 4096
_CACHE_MAX_BLOCK: Final = 64 * 1024  # cache structure nodes, not data leaves
_CACHE_SIZES: Final = 1024  # checked file sizes, by root
_MAX_FILE_DEPTH: Final = 64  # Kubo's balanced DAGs are ~7 levels deep for an exabyte; trickle DAGs a few more

DEFAULT_MAX_LISTING_ENTRIES: Final = 10_000
"""``ipfs.max_listing_entries``: the most entries a directory listing holds."""

DEFAULT_MAX_FILE_EXPANSION: Final = 1024
"""``ipfs.max_file_expansion``: a file may declare at most this many times the bytes its distinct blocks hold."""


@dataclass(frozen=True, slots=True)
class DagLimits:
    """What a reader refuses to serve whole, so that a few stored bytes cannot make it work without end.

    Attributes:
        max_listing_entries: directory listings stop (``ls`` fails) past this many entries.
        max_file_expansion: a file's declared size may be at most this multiple of the bytes of its distinct
            blocks. Repeating links to one leaf costs nothing to store (a 1 MiB DAG can declare an exabyte), and
            the bytes served are what costs: this bounds the work of one read by the storage it uses. Honest
            files are about 1x; only long runs of identical chunks (all-zero files of hundreds of MiB) go past
            1024x.
    """

    max_listing_entries: int = DEFAULT_MAX_LISTING_ENTRIES
    max_file_expansion: int = DEFAULT_MAX_FILE_EXPANSION

    @classmethod
    def from_settings(cls, ipfs: IpfsSettings) -> DagLimits:
        """``ipfs.max_listing_entries`` and ``ipfs.max_file_expansion``."""
        return cls(ipfs.max_listing_entries, ipfs.max_file_expansion)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node, decoded.

    Attributes:
        cid: the node.
        kind: ``"raw"`` (a raw block), ``"file"`` or ``"directory"`` (basic or HAMT).
        size: file bytes (raw, file) or cumulative DAG bytes (directory).
        cumulative_size: bytes of every block in the DAG, as a parent link's Tsize records it.
        sharded: a HAMT directory.
        links: the node's own links (dag-pb), as stored.
    """

    cid: CID
    kind: Kind
    size: int
    cumulative_size: int
    sharded: bool = False
    links: tuple[PBLink, ...] = ()


def split_path(path: str) -> tuple[CID, list[str]]:
    """Split ``"<cid>[/a/b]"`` or ``"/ipfs/<cid>[/a/b]"`` into the root CID and the names.

    A single trailing ``/`` is accepted (URLs carry one); empty segments, ``.`` and ``..`` are not.

    Raises:
        InvalidPathError: a malformed path.
        InvalidCIDError: the root is not a CID.
    """
    if not isinstance(path, str):
        raise InvalidPathError(repr(path), f"expected str, got {type(path).__name__}")
    rest = path
    if rest.startswith("/ipfs/"):
        rest = rest[len("/ipfs/") :]
    elif rest.startswith("/ipns/"):
        raise InvalidPathError(
            path, "IPNS names are not resolved here", hint="resolve the name to a CID first"
        )
    elif rest.startswith("/"):
        raise InvalidPathError(path, "a path starting with '/' must start with '/ipfs/'")
    rest = rest.removesuffix("/")
    segments = rest.split("/")
    if not segments[0]:
        raise InvalidPathError(path, "no CID at the start")
    for name in segments[1:]:
        if not name:
            raise InvalidPathError(path, "empty path segment ('//')")
        if name in (".", ".."):
            raise InvalidPathError(path, f"{name!r} segments are not allowed")
    return CID.parse(segments[0]), segments[1:]


@dataclass(slots=True)
class _Decoded:
    node: PBNode
    fs: UnixFSData | None
    block_len: int
    cumulative: int
    shard: ShardIndex | None = None


class DagReader:
    """Reads UnixFS DAGs from ``store``, within ``limits``."""

    def __init__(self, store: Blockstore, limits: DagLimits | None = None) -> None:
        self.store = store
        self.limits = limits or DagLimits()
        self._cache: OrderedDict[CID, _Decoded] = OrderedDict()
        self._sizes: OrderedDict[CID, int] = OrderedDict()
        self._lock = threading.Lock()

    def clear_cache(self) -> None:
        """Forget decoded nodes and checked sizes (after blocks were deleted)."""
        with self._lock:
            self._cache.clear()
            self._sizes.clear()

    # -- nodes --

    def _decoded(self, cid: CID) -> _Decoded:
        with self._lock:
            hit = self._cache.get(cid)
            if hit is not None:
                self._cache.move_to_end(cid)
                return hit
        block = self.store.get(cid)
        node = decode_node(block, cid=cid)
        fs = decode_unixfs(node.data, cid=cid) if node.data is not None else None
        entry = _Decoded(node, fs, len(block), len(block) + sum(link.tsize for link in node.links))
        if len(block) <= _CACHE_MAX_BLOCK:
            with self._lock:
                self._cache[cid] = entry
                if len(self._cache) > _CACHE_NODES:
                    self._cache.popitem(last=False)
        return entry

    def pb(self, cid: CID) -> tuple[PBNode, UnixFSData | None, int]:
        """The decoded dag-pb node, its UnixFS data (``None`` if it carries none) and the block length."""
        entry = self._decoded(cid)
        return entry.node, entry.fs, entry.block_len

    def cumulative_size(self, cid: CID) -> int:
        """Bytes of every block under ``cid``, as a parent link's Tsize records it (reads the root block only)."""
        if cid.codec == RAW:
            return self.store.size(cid)
        if cid.codec != DAG_PB:
            raise UnsupportedCodecError(cid, f"codec {cid.codec_name}")
        return self._decoded(cid).cumulative

    def info(self, cid: CID) -> NodeInfo:
        """What ``cid`` is and how big.

        Raises:
            BlockNotFoundError: the block is missing.
            UnsupportedCodecError: neither raw nor dag-pb.
            InvalidBlockError: not UnixFS, or a UnixFS type other than file/directory.
        """
        if cid.codec == RAW:
            size = len(self.store.get(cid))
            return NodeInfo(cid, "raw", size, size)
        if cid.codec != DAG_PB:
            raise UnsupportedCodecError(cid, f"codec {cid.codec_name}")
        entry = self._decoded(cid)
        fs, cumulative, links = entry.fs, entry.cumulative, entry.node.links
        if fs is None:
            raise InvalidBlockError("dag-pb node has no UnixFS Data", cid=cid)
        if fs.type in (DataType.FILE, DataType.RAW):
            return NodeInfo(cid, "file", fs.file_size(), cumulative, links=links)
        if fs.type in (DataType.DIRECTORY, DataType.HAMT_SHARD):
            sharded = fs.type == DataType.HAMT_SHARD
            return NodeInfo(cid, "directory", cumulative, cumulative, sharded=sharded, links=links)
        raise InvalidBlockError(f"UnixFS {fs.type.name} nodes are not supported here", cid=cid)

    def links(self, cid: CID) -> tuple[PBLink, ...]:
        """The links of any block (none for raw).

        Raises:
            UnsupportedCodecError: a codec whose links cannot be read here.
        """
        if cid.codec == RAW:
            return ()
        if cid.codec != DAG_PB:
            raise UnsupportedCodecError(cid, f"codec {cid.codec_name}")
        return self._decoded(cid).node.links

    # -- files --

    def read(self, cid: CID, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The bytes ``[offset, offset + length)`` of the file at ``cid``, in pieces (one per leaf).

        Raises:
            NodeKindError: ``cid`` is a directory.
            ValueError: negative offset or length.
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if length == 0:
            return iter(())
        end = None if length is None else offset + length
        if cid.codec == DAG_PB:
            kind = self.info(cid).kind  # refuse directories before the first byte goes out
            if kind != "file":
                raise NodeKindError(cid, kind, "file")
            self.file_size(cid)  # and malformed or bomb DAGs
        return self._read(cid, offset, end, None)

    def file_size(self, cid: CID) -> int:
        """The size of the file at ``cid``, once its whole DAG has been checked: the size to announce.

        Walks the file's distinct internal nodes (each once; checked results are cached by root) and stats its
        raw leaves. Every node must be a UnixFS file whose ``filesize`` equals its data plus its ``blocksizes``,
        and each child must hold what its parent's ``blocksizes`` says (a leaf is measured on disk). The declared
        size may be at most :attr:`DagLimits.max_file_expansion` times the bytes of the distinct blocks.

        Raises:
            NodeKindError: a directory.
            InvalidBlockError: sizes that do not add up, a node that is not a file, a DAG too deep.
            DagLimitError: the file declares far more bytes than it stores (links repeated to one leaf).
            BlockNotFoundError: a block of the file is missing (names ``cid``).
        """
        if cid.codec == RAW:
            return self.store.size(cid)
        with self._lock:
            hit = self._sizes.get(cid)
            if hit is not None:
                self._sizes.move_to_end(cid)
                return hit
        try:
            size = self._check_file(cid)
        except BlockNotFoundError as exc:
            raise BlockNotFoundError(exc.cid, root=cid) from None
        with self._lock:
            self._sizes[cid] = size
            if len(self._sizes) > _CACHE_SIZES:
                self._sizes.popitem(last=False)
        return size

    def _check_file(self, root: CID) -> int:
        expected: dict[tuple[int, bytes], int] = {}
        stored = 0
        total: int | None = None
        stack: list[tuple[CID, int | None, int]] = [(root, None, 0)]
        while stack:
            cid, size, depth = stack.pop()
            if cid.codec == RAW:
                held = self.store.size(cid)
                if held != size:
                    raise InvalidBlockError(f"leaf is {held} bytes, its parent says {size}", cid=cid)
                stored += held
                continue
            if cid.codec != DAG_PB:
                raise UnsupportedCodecError(cid, f"codec {cid.codec_name} in a UnixFS file")
            entry = self._decoded(cid)
            fs = entry.fs
            if fs is None:
                raise InvalidBlockError("dag-pb node has no UnixFS Data", cid=cid)
            if fs.type not in (DataType.FILE, DataType.RAW):
                if cid == root and fs.type in (DataType.DIRECTORY, DataType.HAMT_SHARD):
                    raise NodeKindError(cid, "directory", "file")
                raise InvalidBlockError(f"a file DAG holds a UnixFS {fs.type.name} node", cid=cid)
            links = entry.node.links
            if len(fs.blocksizes) != len(links):
                raise InvalidBlockError(f"{len(links)} links but {len(fs.blocksizes)} blocksizes", cid=cid)
            held = len(fs.data or b"") + sum(fs.blocksizes)
            if fs.filesize is not None and fs.filesize != held:
                raise InvalidBlockError(
                    f"declares a filesize of {fs.filesize} bytes, its data and blocksizes add up to {held}",
                    cid=cid,
                )
            if size is not None and held != size:
                raise InvalidBlockError(f"holds {held} bytes, its parent says {size}", cid=cid)
            if total is None:
                total = held
            stored += entry.block_len
            if links and depth + 1 > _MAX_FILE_DEPTH:
                raise InvalidBlockError(f"file DAG is more than {_MAX_FILE_DEPTH} levels deep", cid=root)
            children = []
            for link, child_size in zip(links, fs.blocksizes, strict=True):
                key = (link.cid.codec, link.cid.multihash)
                seen = expected.get(key)
                if seen is None:
                    expected[key] = child_size
                    children.append((link.cid, child_size, depth + 1))
                elif seen != child_size:
                    raise InvalidBlockError(
                        f"block {link.cid} is linked as {seen} bytes and as {child_size} bytes", cid=cid
                    )
            stack.extend(reversed(children))  # depth-first, in file order
        assert total is not None  # the root is a dag-pb file node
        limit = self.limits.max_file_expansion
        if total > limit * max(stored, 1):
            raise DagLimitError(
                f"file {root} declares {total} bytes but its distinct blocks hold only {stored} "
                f"(more than {limit}x: its links repeat the same blocks)",
                cid=root,
                setting="ipfs.max_file_expansion",
                limit=limit,
            )
        return total

    def _read(self, cid: CID, start: int, end: int | None, expected: int | None) -> Iterator[bytes]:
        if cid.codec == RAW:
            block = self.store.get(cid)
            if expected is not None and len(block) != expected:
                raise InvalidBlockError(f"leaf is {len(block)} bytes, its parent says {expected}", cid=cid)
            if start == 0 and (end is None or end >= len(block)):
                if block:
                    yield block
            elif start < len(block):
                yield block[start:end]
            return
        if cid.codec != DAG_PB:
            raise UnsupportedCodecError(cid, f"codec {cid.codec_name}")
        if expected is not None and expected > _CACHE_MAX_BLOCK:
            block = self.store.get(cid)  # a large leaf: skip the cache
            node = decode_node(block, cid=cid)
            fs = decode_unixfs(node.data, cid=cid)
        else:
            node, maybe_fs, _ = self.pb(cid)
            if maybe_fs is None:
                raise InvalidBlockError("dag-pb node has no UnixFS Data", cid=cid)
            fs = maybe_fs
        if fs.type not in (DataType.FILE, DataType.RAW):
            raise NodeKindError(cid, "directory" if fs.type != DataType.SYMLINK else "symlink", "file")
        if len(fs.blocksizes) != len(node.links):
            raise InvalidBlockError(f"{len(node.links)} links but {len(fs.blocksizes)} blocksizes", cid=cid)
        if expected is not None and fs.file_size() != expected:
            raise InvalidBlockError(f"holds {fs.file_size()} bytes, its parent says {expected}", cid=cid)
        data = fs.data or b""
        if data and start < len(data) and (end is None or end > 0):
            yield data[start:end]
        pos = len(data)
        for link, size in zip(node.links, fs.blocksizes, strict=True):
            child_end = pos + size
            if end is not None and pos >= end:
                break
            if child_end > start and size:
                sub_start = max(start - pos, 0)
                sub_end = None if end is None or end >= child_end else end - pos
                yield from self._read(link.cid, sub_start, sub_end, size)
            pos = child_end

    # -- directories --

    def entries(self, cid: CID) -> Iterator[PBLink]:
        """The entries of the directory at ``cid`` (basic: sorted by name; HAMT: in shard order).

        Raises:
            NodeKindError: ``cid`` is not a directory.
        """
        info = self.info(cid)
        if info.kind != "directory":
            raise NodeKindError(cid, info.kind, "directory", hint=f"read it with cat({cid})")
        if info.sharded:
            return hamt_entries(self._get_structure, cid)
        return iter(info.links)

    def lookup(self, cid: CID, name: str) -> PBLink | None:
        """The entry ``name`` in the directory at ``cid``, or ``None``."""
        info = self.info(cid)
        if info.kind != "directory":
            raise NodeKindError(cid, info.kind, "directory")
        return self._lookup(info, name)

    def _lookup(self, info: NodeInfo, name: str) -> PBLink | None:
        if info.sharded:
            return hamt_lookup(self._shard, info.cid, name)
        for link in info.links:
            if link.name == name:
                return link
        return None

    def resolve(self, path: str) -> CID:
        """The CID at ``path`` (``"<cid>/a/b"`` or ``"/ipfs/<cid>/a/b"``), through basic and HAMT directories.

        Raises:
            InvalidPathError: malformed path (``..``, empty segments).
            PathNotFoundError: a name is missing, or a segment goes through a file.
        """
        cid, names = split_path(path)
        for depth, name in enumerate(names):
            info = self.info(cid)
            if info.kind != "directory":
                walked = "/".join([str(cid), *names[:depth]]) if depth else str(cid)
                raise PathNotFoundError(
                    path,
                    name,
                    cid,
                    reason=f"{walked} is a {info.kind}, not a directory: cannot look up {name!r}",
                )
            link = self._lookup(info, name)
            if link is None:
                raise PathNotFoundError(path, name, cid, reason=f"no link named {name!r} under {cid}")
            cid = link.cid
        return cid

    def _get_structure(self, cid: CID) -> PBNode:
        """Decoded (cached) nodes for the HAMT helpers."""
        if cid.codec != DAG_PB:
            raise InvalidBlockError(f"a HAMT links to {cid.codec_name} block {cid} as a shard")
        return self._decoded(cid).node

    def _shard(self, cid: CID) -> ShardIndex:
        """The (cached) bucket index of a shard node."""
        if cid.codec != DAG_PB:
            raise InvalidBlockError(f"a HAMT links to {cid.codec_name} block {cid} as a shard")
        entry = self._decoded(cid)
        if entry.shard is None:
            entry.shard = shard_index(cid, entry.node)
        return entry.shard

    # -- walks --

    def walk(self, root: CID, *, read_leaves: bool = True) -> Iterator[tuple[CID, bytes | None]]:
        """Every block of the DAG under ``root``, depth-first in link order, each CID once.

        Args:
            root: where to start.
            read_leaves: read raw blocks too (``False`` yields ``None`` for them and only checks they exist).

        Raises:
            BlockNotFoundError: a block is missing (names ``root``).
        """
        seen: set[CID] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            try:
                if cid.codec == RAW and not read_leaves:
                    if not self.store.has(cid):
                        raise BlockNotFoundError(cid)
                    yield cid, None
                    continue
                block = self.store.get(cid)
            except BlockNotFoundError:
                raise BlockNotFoundError(cid, root=root) from None
            yield cid, block
            if cid.codec == DAG_PB:
                node = decode_node(block, cid=cid)
                stack.extend(link.cid for link in reversed(node.links))
            elif cid.codec != RAW:
                raise UnsupportedCodecError(cid, f"codec {cid.codec_name} (cannot follow its links)")
