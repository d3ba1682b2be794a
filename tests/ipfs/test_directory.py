"""UnixFS directories, basic and HAMT-sharded: Kubo's CIDs, listing, and path resolution."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from agent.errors import NotFoundError
from agent.ipfs.cid import CID, DAG_PB
from agent.ipfs.dagpb import HAMT_FANOUT, HAMT_HASH_MURMUR3, DataType, decode_node, decode_unixfs
from agent.ipfs.directory import HAMT_SHARDING_SIZE
from agent.ipfs.errors import InvalidPathError, NodeKindError, PathNotFoundError
from agent.ipfs.hamt import murmur3_x64_64, murmur3_x64_128, name_hash
from agent.ipfs.repo import AddResult, DirEntry, IpfsRepo
from tests.ipfs.vectors import (
    EMPTY_DIR_V0,
    EMPTY_DIR_V1,
    SHARNESS_BIG_DIR_MINUS_5_V0,
    SHARNESS_BIG_DIR_V0,
    SHARNESS_FILE100_V0,
    SHARNESS_SHARDED_V0,
    SHARNESS_SHARDED_V1,
    SHARNESS_UNSHARDED_V0,
)


def _sharness_files(repo: IpfsRepo, count: int, name: str, cid_version: int) -> dict[str, AddResult]:
    """Kubo's sharness test data: file i holds f"{i}\\n"."""
    return {name % i: repo.add(f"{i}\n".encode(), cid_version=cid_version) for i in range(1, count + 1)}


@pytest.fixture(scope="module")
def sharness_v0() -> tuple[IpfsRepo, dict[str, AddResult]]:
    repo = IpfsRepo(None)
    return repo, _sharness_files(repo, 2000, "file%d", 0)


def test_kubo_basic_directory_of_2000_files(sharness_v0: tuple[IpfsRepo, dict[str, AddResult]]) -> None:
    repo, files = sharness_v0
    folder = repo.add_directory(files, shard_threshold=None)
    assert str(folder) == SHARNESS_UNSHARDED_V0
    assert not repo.stat(folder).sharded
    assert [e.name for e in repo.ls(folder)][:4] == ["file1", "file10", "file100", "file1000"]  # byte order


def test_kubo_sharded_directory_of_2000_files_v0(sharness_v0: tuple[IpfsRepo, dict[str, AddResult]]) -> None:
    repo, files = sharness_v0
    folder = repo.add_directory(files, shard_threshold=1)  # Kubo: UnixFSShardingSizeThreshold "1B"
    assert str(folder) == SHARNESS_SHARDED_V0
    assert repo.stat(folder).sharded
    assert str(repo.resolve(f"/ipfs/{folder}/file100")) == SHARNESS_FILE100_V0
    assert b"".join(repo.cat(repo.resolve(f"{folder}/file20"))) == b"20\n"
    unsharded = repo.add_directory(files, shard_threshold=None)
    # `ipfs ls` of the sharded and the basic directory list the same entries
    assert sorted((e.name, e.cid, e.size) for e in repo.ls(folder)) == [
        (e.name, e.cid, e.size) for e in repo.ls(unsharded)
    ]


def test_kubo_sharded_directory_of_2000_files_v1() -> None:
    repo = IpfsRepo(None)
    folder = repo.add_directory(_sharness_files(repo, 2000, "file%d", 1), shard_threshold=1)
    assert str(folder) == SHARNESS_SHARDED_V1


def test_kubo_auto_shards_at_256_kib_of_links() -> None:
    repo = IpfsRepo(None)
    files = _sharness_files(repo, 5960, "file%06d", 0)
    big = repo.add_directory(files)  # 5960 * (10 + 34) = 262240 bytes >= 262144: sharded
    assert str(big) == SHARNESS_BIG_DIR_V0
    assert repo.stat(big).sharded
    del (
        files["file000001"],
        files["file000002"],
        files["file000003"],
        files["file000004"],
        files["file000005"],
    )
    smaller = repo.add_directory(files)  # 5955 * 44 = 262020 bytes: basic
    assert str(smaller) == SHARNESS_BIG_DIR_MINUS_5_V0
    assert not repo.stat(smaller).sharded
    assert b"".join(repo.cat(repo.resolve(f"{big}/file000030"))) == b"30\n"


def test_the_threshold_is_reached_at_exactly_256_kib() -> None:
    repo = IpfsRepo(None)
    leaf = repo.add(b"same content")  # CIDv1 raw: 36 bytes
    names = [f"{i:028d}" for i in range(4096)]  # 4096 * (28 + 36) = 262144
    at = repo.add_directory({name: leaf for name in names})
    below = repo.add_directory({name[:-1] if i == 0 else name: leaf for i, name in enumerate(names)})
    assert 4096 * (28 + 36) == HAMT_SHARDING_SIZE
    assert repo.stat(at).sharded and not repo.stat(below).sharded


def test_empty_directories() -> None:
    repo = IpfsRepo(None)
    assert str(repo.add_directory({})) == EMPTY_DIR_V1
    assert str(repo.add_directory({}, cid_version=0)) == EMPTY_DIR_V0
    assert repo.ls(EMPTY_DIR_V1) == []


def _metadata(token_id: int) -> bytes:
    return json.dumps({"name": f"Chrysalis #{token_id}", "attributes": [{"stage": "egg"}]}).encode()


@pytest.mark.parametrize("where", ["memory", pytest.param("disk", marks=pytest.mark.slow)])
def test_genesis_collection_of_10000_tokens_is_sharded_and_every_token_resolves(
    where: str, tmp_path: Path
) -> None:
    repo = IpfsRepo(tmp_path / "repo" if where == "disk" else None)
    with repo.blockstore.batch():
        tokens = {str(i): repo.add_raw_block(_metadata(i), pin=False) for i in range(10_000)}
    base = repo.add_directory(tokens)  # tokenURI = ipfs://<base>/<tokenId>
    stat = repo.stat(base)
    assert stat.kind == "directory" and stat.sharded
    assert repo.pin_ls() == {base: "recursive"}
    listed = repo.ls(base)
    assert len(listed) == 10_000
    assert {e.name: e.cid for e in listed} == tokens
    for token_id, cid in tokens.items():
        assert repo.resolve(f"{base}/{token_id}") == cid
    assert b"".join(repo.cat(repo.resolve(f"/ipfs/{base}/1234"))) == _metadata(1234)
    with pytest.raises(PathNotFoundError):
        repo.resolve(f"{base}/10000")
    assert repo.gc() == 0  # every token is kept by the directory's pin
    if where == "disk":  # reopened, nothing cached: the same answers
        again = IpfsRepo(tmp_path / "repo")
        assert again.resolve(f"{base}/9999") == tokens["9999"]
        assert again.pin_ls() == {base: "recursive"}


def test_shard_nodes_follow_the_unixfs_spec() -> None:
    repo = IpfsRepo(None)
    files = {f"token-{i}.json": repo.add(_metadata(i)) for i in range(3000)}
    root = repo.add_directory(files, shard_threshold=1)
    stack, seen_entries = [root], 0
    while stack:
        cid = stack.pop()
        assert cid.codec == DAG_PB
        node = decode_node(repo.block_get(cid))
        fs = decode_unixfs(node.data)
        assert fs.type == DataType.HAMT_SHARD
        assert (fs.hash_type, fs.fanout) == (HAMT_HASH_MURMUR3, HAMT_FANOUT) == (0x22, 256)
        bitfield = int.from_bytes(fs.data or b"", "big")
        assert bitfield.bit_count() == len(node.links)
        for link in node.links:
            index = int(link.name[:2], 16)
            assert link.name[:2] == f"{index:02X}" and bitfield >> index & 1
            if len(link.name) == 2:
                stack.append(link.cid)
            else:
                seen_entries += 1
                assert files[link.name[2:]].cid == link.cid
    assert seen_entries == 3000


def test_murmur3_matches_the_reference_implementation() -> None:
    mmh3 = pytest.importorskip("mmh3")
    rng = random.Random(0)
    for length in [*range(40), 100, 1000]:
        data = rng.randbytes(length)
        assert murmur3_x64_128(data) == mmh3.hash64(data, seed=0, x64arch=True, signed=False)
        assert murmur3_x64_64(data) == mmh3.hash64(data, seed=0, x64arch=True, signed=False)[0]
    assert name_hash("file100") == mmh3.hash64(b"file100", seed=0, x64arch=True, signed=False)[0].to_bytes(
        8, "big"
    )


@pytest.fixture
def tree(tmp_path: Path) -> tuple[IpfsRepo, CID, dict[str, CID]]:
    repo = IpfsRepo(tmp_path / "repo")
    images = {"1.png": repo.add(b"\x89PNG one").cid, "2.png": repo.add(b"\x89PNG two").cid}
    inner = repo.add_directory(images)
    meta = repo.add_raw_block(b'{"id": 1}')
    root = repo.add_directory({"images": inner, "1": meta, "readme.txt": repo.add(b"hi")})
    return repo, root, {"inner": inner, "meta": meta, **images}


def test_basic_directory_listing_and_nested_resolution(tree: tuple[IpfsRepo, CID, dict[str, CID]]) -> None:
    repo, root, cids = tree
    assert [e.name for e in repo.ls(root)] == ["1", "images", "readme.txt"]
    entry = next(e for e in repo.ls(root) if e.name == "images")
    assert entry.cid == cids["inner"] and entry.size == repo.stat(cids["inner"]).cumulative_size
    assert repo.resolve(f"{root}/images/2.png") == cids["2.png"]
    assert repo.resolve(f"/ipfs/{root}/images/") == cids["inner"]
    assert repo.resolve(str(root)) == root
    assert repo.stat(root).kind == "directory"
    assert repo.stat(cids["meta"]).kind == "raw"


@pytest.mark.parametrize("suffix", ["/../1", "/./1", "//1", "/images//1.png", "/images/../1"])
def test_unsafe_or_empty_segments_are_refused(
    tree: tuple[IpfsRepo, CID, dict[str, CID]], suffix: str
) -> None:
    repo, root, _ = tree
    with pytest.raises(InvalidPathError) as caught:
        repo.resolve(f"{root}{suffix}")
    assert isinstance(caught.value, ValueError)


def test_missing_names_and_paths_through_files_are_not_found(
    tree: tuple[IpfsRepo, CID, dict[str, CID]],
) -> None:
    repo, root, _ = tree
    with pytest.raises(PathNotFoundError, match="no link named 'nope'") as caught:
        repo.resolve(f"{root}/images/nope")
    assert isinstance(caught.value, NotFoundError) and caught.value.name == "nope"
    with pytest.raises(PathNotFoundError, match="not a directory"):
        repo.resolve(f"{root}/readme.txt/more")
    with pytest.raises(InvalidPathError, match="/ipfs/"):
        repo.resolve(f"/{root}/1")
    with pytest.raises(NodeKindError, match="not a directory"):
        repo.ls(repo.resolve(f"{root}/readme.txt"))


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\0"])
def test_bad_entry_names_are_refused(name: str) -> None:
    repo = IpfsRepo(None)
    with pytest.raises(InvalidPathError):
        repo.add_directory({name: repo.add(b"x")})


def test_entries_may_be_dir_entries_of_content_not_held_here() -> None:
    repo = IpfsRepo(None)
    elsewhere = IpfsRepo(None).add(b"somewhere else")
    folder = repo.add_directory({"far": DirEntry("far", elsewhere.cid, 14)}, pin=False)
    assert repo.ls(folder) == [DirEntry("far", elsewhere.cid, 14)]
    with pytest.raises(NotFoundError, match="not in the repo"):
        repo.add_directory({"far": elsewhere.cid})
    with pytest.raises(NotFoundError):
        repo.add_directory(
            {"far": DirEntry("far", elsewhere.cid, 14)}, pin=True
        )  # cannot pin what is not here
