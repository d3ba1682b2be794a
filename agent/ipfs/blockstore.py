"""Where blocks live: the :class:`Blockstore` boundary, an on-disk store laid out like Kubo's flatfs, and an
in-memory one.

Blocks are keyed by multihash (as Kubo does since 0.12), so a CIDv0 and a CIDv1 of the same bytes are one block.
Every read from disk is hashed and compared with the CID; bytes that do not match raise
:class:`~agent.ipfs.errors.CorruptBlockError` and are never returned.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from agent.ipfs.cid import CID, RAW, hash_matches
from agent.ipfs.errors import BlockNotFoundError, CorruptBlockError, InvalidCIDError

__all__ = ["Blockstore", "BytesLike", "FsBlockstore", "MemoryBlockstore", "atomic_write", "flatfs_key"]

BytesLike = bytes | bytearray | memoryview

SHARDING: Final = "/repo/flatfs/shard/v1/next-to-last/2\n"
_SUFFIX: Final = ".data"
_TMP_PREFIX: Final = ".put-"


@runtime_checkable
class Blockstore(Protocol):
    """Content-addressed block storage.

    ``put`` trusts that ``cid`` addresses the bytes: callers (the importer, the CAR reader) have hashed them
    already. Implementations are safe to call from several threads.
    """

    def put(self, cid: CID, *parts: BytesLike) -> None:
        """Store the block made of ``parts`` (concatenated) under ``cid``; replaces an existing copy."""

    def get(self, cid: CID) -> bytes:
        """The block's bytes, verified against ``cid``.

        Raises:
            BlockNotFoundError: not stored.
            CorruptBlockError: stored bytes do not match ``cid``.
        """

    def has(self, cid: CID) -> bool:
        """Whether a block with ``cid``'s multihash is stored (not verified)."""

    def size(self, cid: CID) -> int:
        """The stored block's length in bytes (not verified).

        Raises:
            BlockNotFoundError: not stored.
        """

    def delete(self, cid: CID) -> bool:
        """Remove the block; returns whether it was there."""

    def iterate(self) -> Iterator[CID]:
        """Every stored block, as a CIDv1 with the raw codec (the store keeps no codec, like Kubo's)."""

    def batch(self) -> AbstractContextManager[None]:
        """A context in which puts may be written in the background; leaving it waits for all of them (and
        raises the first failure). Callers that put many blocks (imports) use it."""


class MemoryBlockstore:
    """Blocks in a dict: for CID-only computation (``IpfsRepo(None)``) and tests."""

    def __init__(self) -> None:
        self._blocks: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def put(self, cid: CID, *parts: BytesLike) -> None:
        data = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        with self._lock:
            self._blocks[cid.multihash] = data

    def get(self, cid: CID) -> bytes:
        try:
            return self._blocks[cid.multihash]
        except KeyError:
            raise BlockNotFoundError(cid) from None

    def has(self, cid: CID) -> bool:
        return cid.multihash in self._blocks

    def size(self, cid: CID) -> int:
        return len(self.get(cid))

    def delete(self, cid: CID) -> bool:
        with self._lock:
            return self._blocks.pop(cid.multihash, None) is not None

    def iterate(self) -> Iterator[CID]:
        with self._lock:
            keys = list(self._blocks)
        for mh in keys:
            yield CID(1, RAW, mh)

    def batch(self) -> AbstractContextManager[None]:
        """Nothing to batch in memory."""
        return nullcontext()

    def __len__(self) -> int:
        return len(self._blocks)

    def __repr__(self) -> str:
        return f"<MemoryBlockstore {len(self._blocks)} blocks>"


def flatfs_key(cid: CID) -> str:
    """Kubo's datastore key for a block: base32 (upper case, no padding) of its multihash (``CIQ...``)."""
    return _multihash_key(cid.multihash)


@lru_cache(maxsize=1 << 16)
def _multihash_key(multihash: bytes) -> str:
    return base64.b32encode(multihash).decode("ascii").rstrip("=")


class FsBlockstore:
    """Blocks as files: ``<root>/<next-to-last 2 chars of key>/<key>.data`` (Kubo's flatfs ``next-to-last/2``).

    Writes are atomic: a temporary file in the same directory, written, fsynced, then ``os.replace``d into
    place, and the directory fsynced (``sync=False`` skips both fsyncs, for throwaway stores). Inside
    :meth:`batch`, writes run on ``writers`` threads.
    """

    def __init__(
        self, root: Path | str, *, sync: bool = True, writers: int = 16, max_inflight: int = 32
    ) -> None:
        self.root = Path(root)
        self.sync = sync
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / "SHARDING"
        if not marker.exists():
            atomic_write(marker, SHARDING.encode(), sync=sync)
        elif marker.read_text() != SHARDING:
            raise ValueError(
                f"{self.root} uses a different flatfs sharding ({marker.read_text().strip()!r}); "
                "open it with the tool that made it, or use a new repo directory"
            )
        self._known_dirs: set[str] = set()
        self.writers = writers
        self.max_inflight = max_inflight
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def path(self, cid: CID) -> Path:
        """Where the block for ``cid`` lives (whether or not it is there)."""
        key = flatfs_key(cid)
        return self.root / key[-3:-1] / (key + _SUFFIX)

    def put(self, cid: CID, *parts: BytesLike) -> None:
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is None:
            self._write(cid, parts)
        else:
            batch.submit(self._write_in_batch, cid, parts)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within the block, this thread's puts are written by a pool of threads, so that their fsyncs overlap
        (one at a time, a 100 MB import spends most of its time waiting on them). At most
        ``max_inflight`` blocks wait in memory. Each file is fsynced before its rename; the directories are
        fsynced once each when the block ends, so everything is durable when ``batch()`` returns. Leaving the
        block waits for every write and raises the first failure; a batch inside a batch is the outer one.
        """
        if getattr(self._local, "batch", None) is not None:
            yield
            return
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.writers, thread_name_prefix="blockstore-put")
        batch = _Batch(self._pool, self.max_inflight)
        self._local.batch = batch
        try:
            yield
        except BaseException:
            self._local.batch = None
            batch.wait(raise_error=False)
            raise
        self._local.batch = None
        batch.wait(raise_error=True)
        if self.sync:  # make the renames durable: each directory written to, once, before the batch ends
            list(self._pool.map(_fsync_dir, sorted(batch.directories)))

    def _write_in_batch(self, cid: CID, parts: tuple[BytesLike, ...]) -> str:
        return self._write(cid, parts, sync_dir=False)

    def _write(self, cid: CID, parts: tuple[BytesLike, ...], *, sync_dir: bool = True) -> str:
        """Write one block atomically; returns its directory."""
        key = flatfs_key(cid)
        shard = key[-3:-1]
        directory = os.path.join(self.root, shard)
        if shard not in self._known_dirs:
            self._make_shard(directory)
            self._known_dirs.add(shard)
        final = os.path.join(directory, key + _SUFFIX)
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{secrets.token_hex(8)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # the shard directory was removed behind our back
            self._make_shard(directory)
            fd = os.open(tmp, flags, 0o644)
        try:
            _write_all(fd, parts)
            if self.sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        if self.sync and sync_dir:
            _fsync_dir(directory)
        return directory

    def _make_shard(self, directory: str) -> None:
        try:
            os.mkdir(directory)
        except FileExistsError:
            return
        if self.sync:
            _fsync_dir(str(self.root))

    def get(self, cid: CID) -> bytes:
        path = self.path(cid)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise BlockNotFoundError(cid) from None
        if not hash_matches(cid, data):
            raise CorruptBlockError(cid, path)
        return data

    def has(self, cid: CID) -> bool:
        key = flatfs_key(cid)
        return os.path.isfile(os.path.join(self.root, key[-3:-1], key + _SUFFIX))

    def size(self, cid: CID) -> int:
        key = flatfs_key(cid)
        try:
            return os.stat(os.path.join(self.root, key[-3:-1], key + _SUFFIX)).st_size
        except FileNotFoundError:
            raise BlockNotFoundError(cid) from None

    def delete(self, cid: CID) -> bool:
        try:
            os.unlink(self.path(cid))
        except FileNotFoundError:
            return False
        return True

    def iterate(self) -> Iterator[CID]:
        for shard in sorted(os.scandir(self.root), key=lambda e: e.name):
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for entry in os.scandir(shard.path):
                name = entry.name
                if not name.endswith(_SUFFIX):
                    continue
                key = name[: -len(_SUFFIX)]
                try:
                    mh = base64.b32decode(key + "=" * (-len(key) % 8))
                    yield CID(1, RAW, mh)
                except (binascii.Error, ValueError, InvalidCIDError):
                    continue  # not ours: leave it alone

    def stale_temp_files(self, older_than_s: float) -> Iterator[Path]:
        """Temporary files left by interrupted writes (older than ``older_than_s``), for cleanup."""
        import time

        cutoff = time.time() - older_than_s
        for shard in os.scandir(self.root):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.startswith(_TMP_PREFIX):
                    try:
                        if entry.stat().st_mtime < cutoff:
                            yield Path(entry.path)
                    except FileNotFoundError:
                        continue

    def __repr__(self) -> str:
        return f"<FsBlockstore {self.root}>"


class _Batch:
    """Writes submitted to a pool, at most ``limit`` in flight; remembers the first failure."""

    def __init__(self, pool: ThreadPoolExecutor, limit: int) -> None:
        self._pool = pool
        self._slots = threading.Semaphore(limit)
        self._futures: list[Future[str]] = []
        self._error: BaseException | None = None
        self.directories: set[str] = set()

    def submit(
        self, fn: Callable[[CID, tuple[BytesLike, ...]], str], cid: CID, parts: tuple[BytesLike, ...]
    ) -> None:
        if self._error is not None:
            raise self._error
        self._slots.acquire()
        future = self._pool.submit(fn, cid, parts)
        future.add_done_callback(self._done)
        self._futures.append(future)

    def _done(self, future: Future[str]) -> None:
        self._slots.release()
        error = future.exception()
        if error is None:
            self.directories.add(future.result())
        elif self._error is None:
            self._error = error

    def wait(self, *, raise_error: bool) -> None:
        wait(self._futures)
        for future in self._futures:  # read from the futures: _done may not have run yet
            error = future.exception()
            if error is None:
                self.directories.add(future.result())
            elif raise_error:
                raise error


def _write_all(fd: int, parts: tuple[BytesLike, ...]) -> None:
    buffers = [memoryview(p).cast("B") for p in parts if len(p)]
    while buffers:
        written = os.writev(fd, buffers)
        while buffers and written >= len(buffers[0]):
            written -= len(buffers[0])
            buffers.pop(0)
        if written and buffers:
            buffers[0] = buffers[0][written:]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, replace, fsync the directory)."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, (data,))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(str(tmp))
        raise
    if sync:
        _fsync_dir(str(path.parent))
