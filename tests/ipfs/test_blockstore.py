"""Blockstores: the same behaviour in memory and on disk; on disk, Kubo's layout, atomic writes, and corrupt
blocks that are reported and never served."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent.errors import IntegrityError, NotFoundError
from agent.ipfs.blockstore import Blockstore, FsBlockstore, MemoryBlockstore, flatfs_key
from agent.ipfs.cid import RAW, raw_cid
from agent.ipfs.dagpb import decode_node
from agent.ipfs.errors import BlockNotFoundError, CorruptBlockError
from agent.ipfs.repo import IpfsRepo


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Blockstore:
    return MemoryBlockstore() if request.param == "memory" else FsBlockstore(tmp_path / "blocks")


def test_put_get_has_size_delete_iterate(store: Blockstore) -> None:
    assert isinstance(store, Blockstore)
    a, b = b"block a", b"block b" * 100
    ca, cb = raw_cid(a), raw_cid(b)
    assert not store.has(ca)
    store.put(ca, a)
    store.put(cb, b[:10], memoryview(b)[10:])  # scattered parts are one block
    assert store.get(ca) == a and store.get(cb) == b
    assert store.has(ca) and store.size(cb) == len(b)
    assert {c.multihash for c in store.iterate()} == {ca.multihash, cb.multihash}
    assert all(c.codec == RAW and c.version == 1 for c in store.iterate())
    assert store.delete(ca) and not store.delete(ca)
    with pytest.raises(BlockNotFoundError) as caught:
        store.get(ca)
    assert isinstance(caught.value, NotFoundError) and caught.value.cid == ca
    with pytest.raises(BlockNotFoundError):
        store.size(ca)


def test_cidv0_and_cidv1_of_one_node_are_one_block(store: Blockstore) -> None:
    repo = IpfsRepo(None)
    v0 = repo.add(b"hello world\n", cid_version=0).cid
    store.put(v0, repo.block_get(v0))
    assert store.has(v0.to_v1()) and store.get(v0.to_v1()) == repo.block_get(v0)


def test_batched_puts_land_and_are_readable(store: Blockstore) -> None:
    blocks = [os.urandom(1000 + i) for i in range(100)]
    with store.batch():
        for data in blocks:
            store.put(raw_cid(data), data)
    assert all(store.get(raw_cid(data)) == data for data in blocks)


def test_puts_from_many_threads(store: Blockstore) -> None:
    blocks = [os.urandom(5000) for _ in range(200)]

    def worker(part: list[bytes]) -> None:
        for data in part:
            store.put(raw_cid(data), data)

    threads = [threading.Thread(target=worker, args=(blocks[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.multihash for c in store.iterate()) == sorted(raw_cid(d).multihash for d in blocks)


def test_disk_layout_is_kubo_flatfs_next_to_last_2(tmp_path: Path) -> None:
    store = FsBlockstore(tmp_path / "blocks")
    data = b"hello world\n"
    cid = raw_cid(data)
    store.put(cid, data)
    key = flatfs_key(cid)
    assert key.startswith("CIQ")  # base32 of a sha2-256 multihash (0x12 0x20 ...)
    path = tmp_path / "blocks" / key[-3:-1] / f"{key}.data"
    assert store.path(cid) == path and path.read_bytes() == data
    assert (tmp_path / "blocks" / "SHARDING").read_text() == "/repo/flatfs/shard/v1/next-to-last/2\n"
    leftovers = [p for p in (tmp_path / "blocks").rglob("*") if p.is_file() and not p.name.endswith(".data")]
    assert [p.name for p in leftovers] == ["SHARDING"]  # no temporary files left behind


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = FsBlockstore(tmp_path / "blocks")
    cid = raw_cid(b"never written")
    with pytest.raises(TypeError):
        store.put(cid, b"never ", object())  # type: ignore[arg-type]
    assert not store.has(cid)
    assert [p for p in (tmp_path / "blocks").rglob("*") if p.is_file() and p.name != "SHARDING"] == []


def test_a_failed_write_in_a_batch_is_raised_when_the_batch_ends(tmp_path: Path) -> None:
    store = FsBlockstore(tmp_path / "blocks")
    data = b"blocked"
    cid = raw_cid(data)
    shard = tmp_path / "blocks" / flatfs_key(cid)[-3:-1]
    shard.write_bytes(b"a file where the shard directory should be")
    with pytest.raises(NotADirectoryError), store.batch():
        store.put(cid, data)
    assert not store.has(cid)


@pytest.mark.parametrize("damage", ["flip", "truncate", "append"])
def test_a_corrupt_block_on_disk_is_an_error_never_served(damage: str, tmp_path: Path) -> None:
    repo = IpfsRepo(tmp_path / "repo")
    meta = repo.add_raw_block(b'{"name": "Chrysalis #7", "image": "ipfs://bafy..."}')
    path = repo.blockstore.path(meta)  # type: ignore[attr-defined]
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[5] ^= 0x01
    elif damage == "truncate":
        raw = raw[:-1]
    else:
        raw += b" "
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptBlockError) as caught:
        repo.block_get(meta)
    error = caught.value
    assert isinstance(error, IntegrityError)
    assert error.cid == meta and error.path == path
    assert str(meta) in str(error) and str(path) in str(error)
    assert error.hint and "delete" in error.hint
    with pytest.raises(CorruptBlockError):
        b"".join(repo.cat(meta))


def test_a_corrupt_leaf_inside_a_file_stops_the_read(tmp_path: Path) -> None:
    repo = IpfsRepo(tmp_path / "repo")
    data = os.urandom(3 * 262144)
    root = repo.add(data).cid
    leaf = decode_node(repo.block_get(root)).links[1].cid
    path = repo.blockstore.path(leaf)  # type: ignore[attr-defined]
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    pieces = repo.cat(root)
    assert next(pieces) == data[:262144]  # the good first leaf
    with pytest.raises(CorruptBlockError) as caught:
        next(pieces)
    assert caught.value.cid == leaf
    assert b"".join(repo.cat(root, length=262144)) == data[:262144]  # ranges avoiding the bad leaf still work
    repo.add(data)  # adding the content again heals the block
    assert b"".join(repo.cat(root)) == data
