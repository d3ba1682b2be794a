"""The IPFS repo facade: add, read, pin, collect garbage, exchange CARs. Everything else in Chrysalis talks to
IPFS content through :class:`IpfsRepo`.

On disk (``IpfsRepo(path)``)::

    <path>/CHRYSALIS_REPO   marker
    <path>/blocks/          flatfs, next-to-last/2 (see blockstore.py)
    <path>/pins.json        {"recursive": [...], "direct": [...]}, replaced atomically
    <path>/gc.lock          flock: writers hold it shared, gc exclusive (across threads and processes)
    <path>/tmp/             staging for CAR imports

``IpfsRepo(None)`` keeps blocks and pins in memory: for computing CIDs and for tests.

Thread-safety: every method may be called from several threads. Writes (add, put, import) hold the gc lock
shared, so a concurrent :meth:`IpfsRepo.gc` never removes blocks of a DAG that is still being written and not
yet pinned; pin-set updates are serialised by a lock (a file lock on disk) and written atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import IO, BinaryIO, Final, Literal

from agent.errors import ConfigError
from agent.ipfs.blockstore import Blockstore, FsBlockstore, MemoryBlockstore, atomic_write
from agent.ipfs.car import CarReader, car_chunks, car_length, write_car
from agent.ipfs.cid import CID, DAG_PB, RAW, raw_cid
from agent.ipfs.dagpb import PBLink, decode_node
from agent.ipfs.directory import HAMT_SHARDING_SIZE, build_directory
from agent.ipfs.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    DagLimitError,
    NotPinnedError,
    TooManyLinksError,
    UnsupportedCodecError,
)
from agent.ipfs.importer import DEFAULT_CHUNK_SIZE, import_file, metadata_block
from agent.ipfs.reader import DagLimits, DagReader

__all__ = ["MAX_BLOCK_SIZE", "AddResult", "DirEntry", "IpfsRepo", "NodeStat", "PinMode"]

MAX_BLOCK_SIZE: Final = 1 << 20
"""``block_put`` limit: Kubo refuses blocks over 1 MiB (bitswap cannot carry them)."""

PinMode = Literal["recursive", "direct"]

_MARKER: Final = "CHRYSALIS_REPO"
_MARKER_TEXT: Final = "chrysalis ipfs repo v1\n"
_SPOOL_IN_MEMORY: Final = 32 << 20
_STALE_TEMP_S: Final = 3600.0


@dataclass(frozen=True)
class AddResult:
    """A file added: its root CID and its size in bytes (file content, not DAG)."""

    cid: CID
    size: int


@dataclass(frozen=True)
class DirEntry:
    """A directory entry: name, target and the link's Tsize (cumulative bytes of the target's DAG)."""

    name: str
    cid: CID
    size: int


@dataclass(frozen=True)
class NodeStat:
    """What a CID is.

    Attributes:
        cid: the node.
        kind: ``"raw"`` (a raw block), ``"file"`` (UnixFS file) or ``"directory"`` (basic or HAMT).
        size: file bytes for ``raw`` and ``file``; cumulative DAG bytes for ``directory`` (Kubo's add ``Size``).
        cumulative_size: bytes of every block in the DAG (what a parent link's Tsize records).
        sharded: a HAMT directory.
    """

    cid: CID
    kind: str
    size: int
    cumulative_size: int = 0
    sharded: bool = False


class IpfsRepo:
    """Blocks, pins and UnixFS operations over a blockstore on disk (``path``) or in memory (``None``).

    Args:
        path: the repo directory (created if missing); ``None`` keeps everything in memory.
        sync: fsync block and pin writes (turn off only for throwaway repos).
        limits: how much a listing or a file read may cost (``ipfs.max_listing_entries``,
            ``ipfs.max_file_expansion``; see :class:`DagLimits`).
    """

    blockstore: Blockstore

    def __init__(
        self, path: Path | str | None, *, sync: bool = True, limits: DagLimits | None = None
    ) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is None:
            self.blockstore = MemoryBlockstore()
            self._tmp: Path | None = None
        else:
            _open_repo_dir(self.path)
            self.blockstore = FsBlockstore(self.path / "blocks", sync=sync)
            self._tmp = self.path / "tmp"
            self._tmp.mkdir(exist_ok=True)
        self._sync = sync
        self.reader = DagReader(self.blockstore, limits)
        self._gc_lock = _GcLock(self.path / "gc.lock" if self.path else None)
        self._pins = _PinSet(self.path / "pins.json" if self.path else None, sync=sync)

    def __repr__(self) -> str:
        return f"<IpfsRepo {self.path or 'in memory'}>"

    # -- adding --

    def add(
        self,
        data: bytes | bytearray | memoryview | IO[bytes],
        *,
        cid_version: int = 1,
        raw_leaves: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        pin: bool = True,
    ) -> AddResult:
        """Add a file as ``ipfs add`` does (see :mod:`agent.ipfs.importer`); streams from a binary file.

        Args:
            data: bytes, or a binary stream read one chunk at a time.
            cid_version: 1 (project default, raw leaves) or 0 (dag-pb leaves).
            raw_leaves: ``None``: True for CIDv1, False for CIDv0.
            chunk_size: bytes per leaf (Kubo's default 262144).
            pin: pin the root recursively.
        """
        if isinstance(data, str):
            raise TypeError("add() takes bytes or a binary stream; encode text first (e.g. text.encode())")
        with self._gc_lock.shared():
            with self.blockstore.batch():
                imported = import_file(
                    data,
                    self.blockstore,
                    cid_version=cid_version,
                    raw_leaves=raw_leaves,
                    chunk_size=chunk_size,
                )
            if pin:
                self._pins.add(imported.cid, "recursive")
        return AddResult(imported.cid, imported.size)

    def add_raw_block(self, data: bytes, *, pin: bool = True) -> CID:
        """Store ``data`` as ONE raw block (CIDv1, raw codec): the CID's digest is ``sha256(data)``.

        For token metadata, whose CID a contract rebuilds from a bytes32 digest. Up to 256 KiB this is also the CID
        ``ipfs add --cid-version=1`` gives for the same bytes.

        Raises:
            BlockTooLargeError: over 256 KiB.
        """
        cid = metadata_block(data)
        with self._gc_lock.shared():
            self.blockstore.put(cid, data)
            if pin:
                self._pins.add(cid, "recursive")
        return cid

    def add_directory(
        self,
        entries: Mapping[str, CID | AddResult | DirEntry],
        *,
        pin: bool = True,
        cid_version: int | None = None,
        shard_threshold: int | None = HAMT_SHARDING_SIZE,
    ) -> CID:
        """Make a UnixFS directory of ``entries`` (name -> content); a HAMT when Kubo would shard it.

        Each entry's root block must be in the repo (its Tsize is read from it); a :class:`DirEntry` whose root
        is absent contributes its ``size`` as Tsize.

        Args:
            entries: names (no ``/``, not ``.``/``..``) to CIDs, add results or entries.
            pin: pin the directory recursively (its whole DAG must then be in the repo).
            cid_version: of the directory node(s); ``None``: 0 if every entry is a CIDv0, else 1.
            shard_threshold: see :func:`agent.ipfs.directory.build_directory` (``None``: never shard).

        Raises:
            InvalidPathError: a bad name.
            BlockNotFoundError: an entry's root block is missing (or, with ``pin``, any block of its DAG).
        """
        links: list[PBLink] = []
        present: set[bytes] = set()  # raw entries seen in the store just now
        for name, value in entries.items():
            cid = value if isinstance(value, CID) else value.cid
            if not isinstance(cid, CID):
                raise TypeError(
                    f"entry {name!r}: expected CID, AddResult or DirEntry, got {type(value).__name__}"
                )
            try:
                tsize = self._tsize(cid)
                if cid.codec == RAW:
                    present.add(cid.multihash)
            except BlockNotFoundError:
                if not isinstance(value, DirEntry):
                    raise BlockNotFoundError(
                        cid, hint=f"add the content of {name!r} to this repo before making the directory"
                    ) from None
                tsize = value.size
            links.append(PBLink(cid, name, tsize))
        if cid_version is None:
            cid_version = 0 if links and all(link.cid.version == 0 for link in links) else 1
        with self._gc_lock.shared():
            with self.blockstore.batch():
                root, _, _ = build_directory(
                    links, self.blockstore, cid_version=cid_version, shard_threshold=shard_threshold
                )
            if pin:
                self._check_complete(root, known_present=present)
                self._pins.add(root, "recursive")
        return root

    def _tsize(self, cid: CID) -> int:
        if cid.codec not in (RAW, DAG_PB):
            raise UnsupportedCodecError(cid, f"codec {cid.codec_name} in a UnixFS directory")
        return self.reader.cumulative_size(cid)

    # -- reading --

    def cat(self, cid: CID | str, *, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The bytes of a file (or raw block), optionally a range; one piece per leaf.

        Raises:
            NodeKindError: ``cid`` is a directory.
            BlockNotFoundError: a block is missing.
            CorruptBlockError: a block on disk does not match its CID.
        """
        return self.reader.read(self._cid(cid), offset, length)

    def stat(self, cid: CID | str) -> NodeStat:
        """Kind and size of ``cid`` (reads its root block only)."""
        info = self.reader.info(self._cid(cid))
        return NodeStat(info.cid, info.kind, info.size, info.cumulative_size, info.sharded)

    def resolve(self, path: str) -> CID:
        """The CID at ``"<cid>"``, ``"<cid>/a/b"`` or ``"/ipfs/<cid>/a"``, through basic and HAMT directories.

        Raises:
            InvalidPathError: ``..``, ``.`` or empty segments (a ``ValueError``).
            PathNotFoundError: no such name.
        """
        return self.reader.resolve(path)

    def file_size(self, cid: CID | str) -> int:
        """A file's size once its whole DAG is checked (see :meth:`DagReader.file_size`): what to announce.

        Raises:
            NodeKindError: a directory. InvalidBlockError: sizes that do not add up.
            DagLimitError: the file declares over ``ipfs.max_file_expansion`` times the bytes it stores.
        """
        return self.reader.file_size(self._cid(cid))

    def iter_ls(self, cid: CID | str) -> Iterator[DirEntry]:
        """The entries of a directory, lazily and without a limit (take what you need with ``islice``).

        Raises:
            NodeKindError: not a directory.
            InvalidBlockError: a malformed HAMT (checked as it is read: see :func:`hamt_entries`).
        """
        for link in self.reader.entries(self._cid(cid)):
            yield DirEntry(link.name, link.cid, link.tsize)

    def ls(self, cid: CID | str, *, limit: int | None = None) -> list[DirEntry]:
        """The entries of a directory (basic: by name; HAMT: in shard order); ``size`` is each link's Tsize.

        Args:
            limit: the most entries to return; default ``limits.max_listing_entries`` (10,000).

        Raises:
            NodeKindError: not a directory.
            InvalidBlockError: a malformed HAMT.
            DagLimitError: more than ``limit`` entries (:meth:`iter_ls` pages through any number).
        """
        root = self._cid(cid)
        cap = self.reader.limits.max_listing_entries if limit is None else limit
        entries = list(islice(self.iter_ls(root), cap + 1))
        if len(entries) > cap:
            raise DagLimitError(
                f"directory {root} has more than {cap} entries",
                cid=root,
                setting="ipfs.max_listing_entries",
                limit=cap,
                hint=f"look names up directly ({root}/<name>), page with iter_ls(), "
                "or raise ipfs.max_listing_entries",
            )
        return entries

    def block_get(self, cid: CID | str) -> bytes:
        """One block's bytes, verified."""
        return self.blockstore.get(self._cid(cid))

    def block_put(self, data: bytes, *, codec: int = RAW, pin: bool = False) -> CID:
        """Store one block (CIDv1 with ``codec``); dag-pb blocks must decode.

        Raises:
            BlockTooLargeError: over 1 MiB.
            InvalidBlockError: ``codec`` is dag-pb and ``data`` is not.
            UnsupportedCodecError: a codec other than raw or dag-pb.
        """
        if len(data) > MAX_BLOCK_SIZE:
            raise BlockTooLargeError(
                len(data),
                MAX_BLOCK_SIZE,
                hint="blocks over 1 MiB do not travel over bitswap; use add() to chunk",
            )
        if codec == DAG_PB:
            decode_node(data)
            cid = CID(1, DAG_PB, raw_cid(data).multihash)
        elif codec == RAW:
            cid = raw_cid(data)
        else:
            raise UnsupportedCodecError(f"codec {codec:#x}", "storing blocks of this codec")
        with self._gc_lock.shared():
            self.blockstore.put(cid, data)
            if pin:
                self._pins.add(cid, "recursive")
        return cid

    # -- pins --

    def pin_add(self, cid: CID | str, *, recursive: bool = True) -> None:
        """Pin ``cid``: recursively (its whole DAG) or directly (the block alone). Idempotent.

        A direct pin on a CID already pinned recursively leaves the recursive pin.

        Raises:
            BlockNotFoundError: a block of the DAG (or, direct, the block) is not in the repo.
        """
        target = self._cid(cid)
        with self._gc_lock.shared():
            if recursive:
                self._check_complete(target)
                self._pins.add(target, "recursive")
            else:
                if not self.blockstore.has(target):
                    raise BlockNotFoundError(target)
                self._pins.add(target, "direct")

    def pin_rm(self, cid: CID | str) -> None:
        """Remove the recursive or direct pin on ``cid``.

        Raises:
            NotPinnedError: ``cid`` has no such pin (indirect pins go with their root).
        """
        target = self._cid(cid)
        if not self._pins.remove(target):
            raise NotPinnedError(target)

    def pin_ls(self) -> dict[CID, str]:
        """Every explicit pin: CID -> ``"recursive"`` or ``"direct"``."""
        return self._pins.all()

    def is_pinned(self, cid: CID | str) -> bool:
        """Whether ``cid`` carries a recursive or direct pin (a CIDv0 and CIDv1 of one node count as one)."""
        return self._pins.mode(self._cid(cid)) is not None

    def pinned_indirectly(self, cid: CID | str) -> bool:
        """Whether ``cid`` lies inside the DAG of a recursive pin (walks the pinned DAGs)."""
        target = self._cid(cid).multihash
        return target in self._reachable(include_direct=False)

    def gc(self) -> int:
        """Delete every block that no pin keeps (recursive pins keep their whole DAG); returns blocks removed.

        Raises:
            BlockNotFoundError / CorruptBlockError: a pinned DAG cannot be walked; nothing was removed.
        """
        with self._gc_lock.exclusive():
            try:
                keep = self._reachable(include_direct=True)
            except BlockNotFoundError as exc:
                raise BlockNotFoundError(
                    exc.cid,
                    root=exc.root,
                    hint=f"gc removed nothing: the pinned DAG under {exc.root} is incomplete; "
                    "import its missing blocks again, or unpin it",
                ) from None
            removed = 0
            for cid in list(self.blockstore.iterate()):
                if cid.multihash not in keep and self.blockstore.delete(cid):
                    removed += 1
            self.reader.clear_cache()
            if isinstance(self.blockstore, FsBlockstore):
                for stale in self.blockstore.stale_temp_files(_STALE_TEMP_S):
                    stale.unlink(missing_ok=True)
            if self._tmp is not None:
                _clean_tmp(self._tmp, _STALE_TEMP_S)
            return removed

    def _reachable(self, *, include_direct: bool) -> set[bytes]:
        keep: set[bytes] = set()
        for cid, mode in self._pins.all().items():
            if mode == "direct":
                if include_direct:
                    keep.add(cid.multihash)
                continue
            if cid.multihash in keep:
                continue
            for block_cid, _ in self.reader.walk(cid, read_leaves=False):
                keep.add(block_cid.multihash)
        return keep

    def _recursively_pinned(self) -> set[bytes]:
        """Multihashes of recursive pins: DAGs known to be complete (checked when pinned, kept by gc)."""
        return {cid.multihash for cid, mode in self._pins.all().items() if mode == "recursive"}

    def _check_complete(self, root: CID, *, known_present: set[bytes] | None = None) -> None:
        """Raise :class:`BlockNotFoundError` unless every block under ``root`` is here.

        Subtrees rooted at a recursive pin are known complete and not walked again, nor are the raw blocks in
        ``known_present``.
        """
        complete = self._recursively_pinned() | (known_present or set())
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.multihash in seen:
                continue
            seen.add(cid.multihash)
            if cid != root and cid.multihash in complete:
                continue
            if cid.codec == RAW:
                if not self.blockstore.has(cid):
                    raise BlockNotFoundError(cid, root=root)
                continue
            try:
                stack.extend(link.cid for link in self.reader.links(cid))
            except BlockNotFoundError:
                raise BlockNotFoundError(cid, root=root) from None

    # -- CAR --

    def export_car(self, cid: CID | str, out: BinaryIO) -> None:
        """Write the DAG under ``cid`` to ``out`` as a CARv1 (depth-first, each block once).

        Raises:
            BlockNotFoundError: the DAG is incomplete (``out`` then holds a partial CAR: discard it).
        """
        root = self._cid(cid)
        blocks = ((block_cid, data) for block_cid, data in self.reader.walk(root) if data is not None)
        write_car(out, [root], blocks)

    def car_stream(self, cid: CID | str) -> tuple[int, Iterator[bytes]]:
        """The DAG under ``cid`` as a CARv1: its length and a lazy stream of its bytes (depth-first, each block
        once). Nothing is spooled: a first walk reads the DAG's dag-pb blocks and stats its raw leaves (so a
        missing block fails here, before any byte goes out, and the length is known); the stream walks again.
        Memory is the walks' seen-sets, never the blocks.

        Raises:
            BlockNotFoundError: the DAG is incomplete.
        """
        root = self._cid(cid)
        sizes = (
            (block_cid, len(data) if data is not None else self.blockstore.size(block_cid))
            for block_cid, data in self.reader.walk(root, read_leaves=False)
        )
        try:
            length = car_length([root], sizes)
        except BlockNotFoundError as exc:
            raise BlockNotFoundError(exc.cid, root=root) from None
        blocks = ((block_cid, data) for block_cid, data in self.reader.walk(root) if data is not None)
        return length, car_chunks([root], blocks)

    def import_car(self, src: BinaryIO, *, pin: bool = True, max_links: int | None = None) -> list[CID]:
        """Import a CARv1; returns its roots. All or nothing: every block is read and verified before any is
        stored, and with ``pin`` the roots' DAGs must be complete (from the CAR and the repo together).

        ``max_links`` caps the blocks plus dag-pb links held in memory meanwhile (None: no cap).

        Raises:
            CarFormatError: malformed or truncated CAR.
            CorruptBlockError: a block does not match its CID.
            BlockNotFoundError: ``pin`` and a root's DAG is incomplete.
            TooManyLinksError: more than ``max_links`` blocks and links.
        """
        staged: dict[CID, tuple[int, int]] = {}
        staged_links: dict[bytes, tuple[CID, ...]] = {}
        held = 0
        with SpooledTemporaryFile(
            max_size=_SPOOL_IN_MEMORY, dir=str(self._tmp) if self._tmp else None
        ) as spool:
            reader = CarReader(src)
            roots = reader.roots
            for cid, data in reader.blocks():
                if cid in staged:
                    continue
                if cid.codec == DAG_PB:
                    node = decode_node(data, cid=cid)
                    staged_links[cid.multihash] = tuple(link.cid for link in node.links)
                    held += len(node.links)
                held += 1
                if max_links is not None and held > max_links:
                    raise TooManyLinksError(max_links)
                staged[cid] = (spool.tell(), len(data))
                spool.write(data)
            staged_mh = {cid.multihash for cid in staged}
            with self._gc_lock.shared():
                if pin:
                    for root in roots:
                        self._check_complete_with(root, staged_mh, staged_links)
                with self.blockstore.batch():
                    for cid, (offset, length) in staged.items():
                        spool.seek(offset)
                        self.blockstore.put(cid, spool.read(length))
                if pin:
                    for root in roots:
                        self._pins.add(root, "recursive")
        return roots

    def _check_complete_with(
        self, root: CID, staged: set[bytes], staged_links: Mapping[bytes, tuple[CID, ...]]
    ) -> None:
        complete = self._recursively_pinned()
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            mh = cid.multihash
            if mh in seen:
                continue
            seen.add(mh)
            if mh in staged:
                stack.extend(staged_links.get(mh, ()))
                continue
            if cid != root and mh in complete:
                continue
            if cid.codec == RAW:
                if not self.blockstore.has(cid):
                    raise BlockNotFoundError(
                        cid, root=root, hint="the CAR does not hold the whole DAG: nothing was stored"
                    )
                continue
            try:
                stack.extend(link.cid for link in self.reader.links(cid))
            except BlockNotFoundError:
                raise BlockNotFoundError(
                    cid, root=root, hint="the CAR does not hold the whole DAG: nothing was stored"
                ) from None

    # -- helpers --

    @staticmethod
    def _cid(value: CID | str) -> CID:
        return CID.parse(value)


# -- pins --


class _PinSet:
    """Explicit pins, keyed by (codec, multihash) so a CIDv0 and its CIDv1 are one pin; persisted as JSON."""

    def __init__(self, path: Path | None, *, sync: bool) -> None:
        self._path = path
        self._sync = sync
        self._lock = threading.RLock()
        self._pins: dict[tuple[int, bytes], tuple[CID, str]] = {}
        self._stamp: tuple[int, int] | None = None
        if path is not None:
            self._reload()

    @staticmethod
    def _key(cid: CID) -> tuple[int, bytes]:
        return cid.codec, cid.multihash

    def _reload(self) -> None:
        assert self._path is not None
        try:
            st = self._path.stat()
        except FileNotFoundError:
            self._pins, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            raw = json.loads(self._path.read_text())
            pins: dict[tuple[int, bytes], tuple[CID, str]] = {}
            for mode in ("recursive", "direct"):
                for text in raw.get(mode, []):
                    cid = CID.parse(text)
                    if pins.get(self._key(cid), (None, ""))[1] != "recursive":
                        pins[self._key(cid)] = (cid, mode)
        except (ValueError, AttributeError) as exc:
            raise ConfigError(
                f"the pin set {self._path} is unreadable: {exc}",
                hint="restore it from a backup; pins.json holds {'recursive': [CIDs], 'direct': [CIDs]}",
            ) from None
        self._pins, self._stamp = pins, stamp

    def _save(self) -> None:
        assert self._path is not None
        doc = {
            "recursive": sorted(str(c) for c, m in self._pins.values() if m == "recursive"),
            "direct": sorted(str(c) for c, m in self._pins.values() if m == "direct"),
        }
        atomic_write(self._path, (json.dumps(doc, indent=1) + "\n").encode(), sync=self._sync)
        st = self._path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._path is None:
                yield
                return
            with open(self._path.with_suffix(".lock"), "a+b") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    self._reload()
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def add(self, cid: CID, mode: str) -> None:
        with self._locked():
            current = self._pins.get(self._key(cid))
            if current is not None and (current[1] == "recursive" or current[1] == mode):
                return
            self._pins[self._key(cid)] = (cid, mode)
            if self._path is not None:
                self._save()

    def remove(self, cid: CID) -> bool:
        with self._locked():
            if self._pins.pop(self._key(cid), None) is None:
                return False
            if self._path is not None:
                self._save()
            return True

    def mode(self, cid: CID) -> str | None:
        with self._lock:
            if self._path is not None:
                self._reload()
            hit = self._pins.get(self._key(cid))
            return hit[1] if hit else None

    def all(self) -> dict[CID, str]:
        with self._lock:
            if self._path is not None:
                self._reload()
            return {cid: mode for cid, mode in self._pins.values()}


# -- the gc lock --


class _GcLock:
    """Shared for writers, exclusive for gc. On disk a ``flock`` per acquisition (so it holds across threads and
    processes); in memory a readers-writer lock."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._hold(fcntl.LOCK_SH, exclusive=False):
            yield

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._hold(fcntl.LOCK_EX, exclusive=True):
            yield

    @contextmanager
    def _hold(self, flag: int, *, exclusive: bool) -> Iterator[None]:
        if self._path is not None:
            with open(self._path, "a+b") as handle:
                fcntl.flock(handle, flag)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        with self._cond:
            if exclusive:
                self._cond.wait_for(lambda: not self._writer and self._readers == 0)
                self._writer = True
            else:
                self._cond.wait_for(lambda: not self._writer)
                self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                if exclusive:
                    self._writer = False
                else:
                    self._readers -= 1
                self._cond.notify_all()


# -- the directory --


def is_repo(path: Path) -> bool:
    """Whether ``path`` holds a Chrysalis IPFS repo (its marker file), without creating anything."""
    return (Path(path) / _MARKER).is_file()


def _open_repo_dir(path: Path) -> None:
    marker = path / _MARKER
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"the IPFS repo path {path} is a file", hint="point the repo at a directory")
        if not marker.exists() and any(path.iterdir()):
            raise ConfigError(
                f"{path} is not empty and is not a Chrysalis IPFS repo (no {_MARKER} file)",
                hint="use an empty or new directory for the repo",
            )
    path.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        atomic_write(marker, _MARKER_TEXT.encode())


def _clean_tmp(tmp: Path, older_than_s: float) -> None:
    cutoff = time.time() - older_than_s
    for entry in os.scandir(tmp):
        try:
            if entry.stat().st_mtime < cutoff:
                if entry.is_dir():
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
        except FileNotFoundError:
            continue
