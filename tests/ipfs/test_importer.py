"""The importer gives Kubo's CIDs, and what goes in comes back out (whole and in ranges), on disk."""

from __future__ import annotations

import hashlib
import io
import random
import time
from pathlib import Path
from typing import Any

import pytest

from agent.ipfs.cid import CID, DAG_PB, RAW
from agent.ipfs.dagpb import DataType, decode_node, decode_unixfs
from agent.ipfs.errors import BlockTooLargeError, NodeKindError
from agent.ipfs.importer import FileImporter, import_file, metadata_block
from agent.ipfs.repo import IpfsRepo
from tests.ipfs.vectors import Vector, load_vectors

CHUNK = 262144
VECTORS = load_vectors()
OPTIONS: dict[str, dict[str, Any]] = {
    "cid_v0": {"cid_version": 0},
    "cid_v1": {"cid_version": 1},
    "cid_v1_dagpb_leaves": {"cid_version": 1, "raw_leaves": False},
}
CASES = [(v, key) for v in VECTORS for key in OPTIONS if getattr(v, key)]


@pytest.mark.parametrize(("vector", "key"), CASES, ids=[f"{v.name}-{k}" for v, k in CASES])
def test_every_vector_matches_kubo(vector: Vector, key: str) -> None:
    assert str(import_file(vector.data, None, **OPTIONS[key]).cid) == getattr(vector, key)


@pytest.mark.parametrize(("vector", "key"), CASES, ids=[f"{v.name}-{k}" for v, k in CASES])
def test_every_vector_matches_kubo_through_the_on_disk_repo(vector: Vector, key: str, tmp_path: Path) -> None:
    repo = IpfsRepo(tmp_path / "repo")
    result = repo.add(io.BytesIO(vector.data), **OPTIONS[key])
    assert str(result.cid) == getattr(vector, key)
    assert result.size == len(vector.data)
    assert b"".join(repo.cat(result.cid)) == vector.data


class _Trickle(io.RawIOBase):
    """A stream that returns at most 1000 bytes per read (like a socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = min(size if size >= 0 else len(self._data), 1000)
        out = bytes(self._data[self._pos : self._pos + size])
        self._pos += len(out)
        return out


def test_short_reads_and_odd_writes_give_the_same_cid() -> None:
    vector = next(v for v in VECTORS if v.name == "1.5 MB")
    assert str(import_file(_Trickle(vector.data), None).cid) == vector.cid_v1
    assert (
        str(import_file(iter([vector.data[:7], vector.data[7:]]), None, cid_version=0).cid) == vector.cid_v0
    )
    importer = FileImporter(None, cid_version=1, raw_leaves=False)
    rng = random.Random(0)
    pos = 0
    while pos < len(vector.data):
        step = rng.choice([1, 100, 262143, 262145, 500_000])
        importer.write(vector.data[pos : pos + step])
        pos += step
    assert str(importer.finish().cid) == vector.cid_v1_dagpb_leaves


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1])
@pytest.mark.parametrize("cid_version", [0, 1])
def test_round_trip_around_the_chunk_size(size: int, cid_version: int, tmp_path: Path) -> None:
    data = random.Random(size).randbytes(size)
    repo = IpfsRepo(tmp_path / "repo")
    result = repo.add(data, cid_version=cid_version)
    assert b"".join(repo.cat(result.cid)) == data
    stat = repo.stat(result.cid)
    assert stat.size == size == result.size
    single_raw_block = cid_version == 1 and size <= CHUNK
    assert stat.kind == ("raw" if single_raw_block else "file")
    assert str(result.cid).startswith(
        "bafkrei" if single_raw_block else ("Qm" if cid_version == 0 else "bafybei")
    )
    assert str(result.cid) == str(IpfsRepo(None).add(data, cid_version=cid_version).cid)  # CID-only agrees


def test_more_than_174_leaves_makes_a_two_level_balanced_tree(tmp_path: Path) -> None:
    size = 174 * CHUNK + 1
    data = random.Random(7).randbytes(size)
    repo = IpfsRepo(tmp_path / "repo")
    root = repo.add(data).cid
    top = decode_node(repo.block_get(root))
    assert len(top.links) == 2  # a full subtree of 174 leaves, then a subtree holding the last leaf
    first, second = (decode_node(repo.block_get(link.cid)) for link in top.links)
    assert len(first.links) == 174 and all(link.cid.codec == RAW for link in first.links)
    assert len(second.links) == 1 and second.links[0].cid.codec == RAW
    fs = decode_unixfs(top.data)
    assert fs.type == DataType.FILE and fs.filesize == size and fs.blocksizes == (174 * CHUNK, 1)
    assert top.links[0].tsize == 174 * CHUNK + len(repo.block_get(top.links[0].cid))
    assert hashlib.sha256(b"".join(repo.cat(root))).digest() == hashlib.sha256(data).digest()
    tail = b"".join(repo.cat(root, offset=174 * CHUNK - 3))
    assert tail == data[-4:]


def test_exactly_174_leaves_is_one_level() -> None:
    data = random.Random(8).randbytes(174 * CHUNK)
    store = IpfsRepo(None)
    root = store.add(data).cid
    node = decode_node(store.block_get(root))
    assert len(node.links) == 174 and all(link.cid.codec == RAW for link in node.links)


def test_50_mib_streams_from_a_file_through_the_disk_repo(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    rng = random.Random(50)
    with source.open("wb") as f:
        for _ in range(size // (1 << 20)):
            piece = rng.randbytes(1 << 20)
            digest.update(piece)
            f.write(piece)
    repo = IpfsRepo(tmp_path / "repo")
    started = time.perf_counter()
    with source.open("rb") as f:
        result = repo.add(f)
    assert result.size == size
    assert str(result.cid) == str(import_file(source.open("rb"), None).cid)
    out = hashlib.sha256()
    pieces = 0
    for piece in repo.cat(result.cid):
        out.update(piece)
        pieces += 1
    assert out.digest() == digest.digest()
    assert pieces == size // CHUNK  # one piece per leaf: nothing is joined in memory
    assert time.perf_counter() - started < 120


RANGES = [
    (0, 10),
    (CHUNK - 1, 2),  # straddles the first boundary
    (CHUNK, 1),  # first byte of the second leaf
    (100, 3 * CHUNK),  # several leaves
    (2 * CHUNK - 5, None),  # to the end
    (0, None),
    (5 * CHUNK // 2, 0),  # empty range
]


@pytest.mark.parametrize(("offset", "length"), RANGES)
@pytest.mark.parametrize("cid_version", [0, 1])
def test_cat_ranges_across_chunk_boundaries(
    offset: int, length: int | None, cid_version: int, tmp_path: Path
) -> None:
    data = random.Random(3).randbytes(4 * CHUNK + 1234)
    repo = IpfsRepo(tmp_path / "repo")
    cid = repo.add(data, cid_version=cid_version).cid
    end = None if length is None else offset + length
    assert b"".join(repo.cat(cid, offset=offset, length=length)) == data[offset:end]


def test_cat_past_the_end_is_empty_and_bad_ranges_are_refused() -> None:
    repo = IpfsRepo(None)
    cid = repo.add(b"0123456789").cid
    assert b"".join(repo.cat(cid, offset=5, length=100)) == b"56789"
    assert b"".join(repo.cat(cid, offset=50)) == b""
    with pytest.raises(ValueError, match="offset"):
        repo.cat(cid, offset=-1)
    with pytest.raises(ValueError, match="length"):
        repo.cat(cid, length=-1)


def test_cat_of_a_directory_says_so() -> None:
    repo = IpfsRepo(None)
    folder = repo.add_directory({"a": repo.add(b"a")})
    with pytest.raises(NodeKindError, match="is a directory") as caught:
        repo.cat(folder)
    assert "ls(" in (caught.value.hint or "")


def test_metadata_block_digest_is_sha256_and_matches_ipfs_add() -> None:
    meta = b'{"name": "Chrysalis #1", "image": "ipfs://bafy..."}'
    cid = metadata_block(meta)
    assert cid.codec == RAW and cid.version == 1
    assert cid.digest == hashlib.sha256(meta).digest()
    assert cid == IpfsRepo(None).add(meta).cid  # the same CID `ipfs add --cid-version=1` gives
    largest = b"x" * CHUNK
    assert metadata_block(largest) == IpfsRepo(None).add(largest).cid


def test_metadata_over_256_kib_is_refused_with_the_limit(tmp_path: Path) -> None:
    repo = IpfsRepo(tmp_path / "repo")
    with pytest.raises(BlockTooLargeError) as caught:
        repo.add_raw_block(b"x" * (CHUNK + 1))
    assert caught.value.limit == CHUNK and caught.value.size == CHUNK + 1
    assert "262144" in str(caught.value) and "add()" in str(caught.value)
    assert list(repo.blockstore.iterate()) == []


def test_add_raw_block_stores_and_pins_one_block(tmp_path: Path) -> None:
    repo = IpfsRepo(tmp_path / "repo")
    cid = repo.add_raw_block(b'{"a": 1}')
    assert repo.block_get(cid) == b'{"a": 1}'
    assert repo.pin_ls() == {cid: "recursive"}
    assert CID.parse(str(cid)).digest == hashlib.sha256(b'{"a": 1}').digest()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cid_version": 2}, "cid_version must be 0 or 1"),
        ({"cid_version": 0, "raw_leaves": True}, "raw leaves need CIDv1"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": (1 << 20) + 1}, "chunk_size"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        import_file(b"x", None, **kwargs)  # type: ignore[arg-type]


def test_other_chunk_sizes_and_dagpb_leaves_use_dagpb_codec() -> None:
    data = random.Random(4).randbytes(3000)
    result = import_file(data, None, chunk_size=1000, raw_leaves=False)
    assert result.cid.codec == DAG_PB
    repo = IpfsRepo(None)
    cid = repo.add(data, chunk_size=1000).cid
    assert len(decode_node(repo.block_get(cid)).links) == 3
    assert b"".join(repo.cat(cid, offset=999, length=2)) == data[999:1001]


def test_add_refuses_text() -> None:
    with pytest.raises(TypeError, match="encode"):
        IpfsRepo(None).add("hello")  # type: ignore[arg-type]
