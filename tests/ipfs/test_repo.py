"""The repo facade: pins that persist, gc that keeps pinned DAGs and removes the rest, stat and raw blocks,
and concurrent use from threads."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.errors import ConfigError, NotFoundError
from agent.ipfs.cid import CID, DAG_PB, RAW
from agent.ipfs.dagpb import decode_node
from agent.ipfs.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    InvalidBlockError,
    NotPinnedError,
)
from agent.ipfs.repo import IpfsRepo, NodeStat


@pytest.fixture
def repo(tmp_path: Path) -> IpfsRepo:
    return IpfsRepo(tmp_path / "repo")


def _blocks(repo: IpfsRepo) -> set[bytes]:
    return {cid.multihash for cid in repo.blockstore.iterate()}


def test_pins_persist_across_reopening(tmp_path: Path) -> None:
    repo = IpfsRepo(tmp_path / "repo")
    file = repo.add(b"kept").cid
    raw = repo.block_put(b"direct")
    repo.pin_add(raw, recursive=False)
    assert repo.pin_ls() == {file: "recursive", raw: "direct"}
    reopened = IpfsRepo(tmp_path / "repo")
    assert reopened.pin_ls() == {file: "recursive", raw: "direct"}
    reopened.pin_rm(raw)
    assert IpfsRepo(tmp_path / "repo").pin_ls() == {file: "recursive"}


def test_pin_rm_of_an_unpinned_cid_says_so(repo: IpfsRepo) -> None:
    cid = repo.add(b"unpinned", pin=False).cid
    assert not repo.is_pinned(cid)
    with pytest.raises(NotPinnedError, match="not pinned") as caught:
        repo.pin_rm(cid)
    assert isinstance(caught.value, NotFoundError)


def test_a_cidv0_and_its_cidv1_are_one_pin(repo: IpfsRepo) -> None:
    v0 = repo.add(b"same node", cid_version=0).cid
    assert repo.is_pinned(v0.to_v1())
    repo.pin_add(v0.to_v1())
    assert repo.pin_ls() == {v0: "recursive"}
    repo.pin_rm(str(v0.to_v1()))
    assert repo.pin_ls() == {}


def test_recursive_pin_wins_over_direct(repo: IpfsRepo) -> None:
    cid = repo.add(b"both", pin=False).cid
    repo.pin_add(cid, recursive=False)
    repo.pin_add(cid)
    repo.pin_add(cid, recursive=False)
    assert repo.pin_ls() == {cid: "recursive"}


def test_gc_keeps_pinned_dags_and_removes_the_rest(repo: IpfsRepo) -> None:
    big = random.Random(1).randbytes(3 * 262144 + 5)
    kept_file = repo.add(big).cid  # recursive: root and 4 leaves
    folder = repo.add_directory(
        {"meta.json": repo.add_raw_block(b'{"id": 1}', pin=False), "art.bin": repo.add(b"art", pin=False)}
    )
    direct_root = repo.add(random.Random(2).randbytes(2 * 262144), pin=False).cid
    repo.pin_add(direct_root, recursive=False)  # the root block only: its leaves are not kept
    dropped = repo.add(random.Random(3).randbytes(300_000), pin=False).cid
    orphan = repo.block_put(b"orphan block")
    before = len(_blocks(repo))

    removed = repo.gc()

    assert removed == 2 + 3 + 1  # direct root's two leaves, dropped's root and two leaves, the orphan
    assert len(_blocks(repo)) == before - removed
    assert b"".join(repo.cat(kept_file)) == big
    assert b"".join(repo.cat(repo.resolve(f"{folder}/meta.json"))) == b'{"id": 1}'
    assert repo.pinned_indirectly(repo.resolve(f"{folder}/art.bin"))
    assert repo.block_get(direct_root)
    for gone in (dropped, orphan):
        with pytest.raises(BlockNotFoundError):
            repo.block_get(gone)
    with pytest.raises(BlockNotFoundError):
        b"".join(repo.cat(direct_root))
    assert repo.gc() == 0


def test_gc_after_unpinning_empties_the_repo(repo: IpfsRepo) -> None:
    folder = repo.add_directory({"a": repo.add(b"a"), "b": repo.add(random.Random(4).randbytes(600_000))})
    for cid in list(repo.pin_ls()):
        repo.pin_rm(cid)
    assert repo.gc() > 0
    assert _blocks(repo) == set()
    with pytest.raises(BlockNotFoundError):
        repo.ls(folder)  # nothing cached survives gc


def test_pinning_an_incomplete_dag_is_refused(repo: IpfsRepo) -> None:
    root = repo.add(random.Random(5).randbytes(3 * 262144), pin=False).cid
    missing = decode_node(repo.block_get(root)).links[2].cid
    assert repo.blockstore.delete(missing)
    with pytest.raises(BlockNotFoundError) as caught:
        repo.pin_add(root)
    assert caught.value.cid == missing and caught.value.root == root
    assert str(missing) in str(caught.value) and "import" in (caught.value.hint or "")
    assert repo.pin_ls() == {}
    with pytest.raises(BlockNotFoundError):
        repo.pin_add(missing, recursive=False)


def test_gc_refuses_to_run_over_a_broken_pinned_dag(repo: IpfsRepo) -> None:
    root = repo.add(random.Random(6).randbytes(2 * 262144 + 1), cid_version=0).cid
    leaf = decode_node(repo.block_get(root)).links[0].cid
    repo.block_put(b"unpinned")
    repo.blockstore.delete(leaf)
    repo.reader.clear_cache()
    before = _blocks(repo)
    with pytest.raises(BlockNotFoundError, match="gc removed nothing"):
        repo.gc()
    assert _blocks(repo) == before


def test_stat_kinds_and_sizes(repo: IpfsRepo) -> None:
    raw = repo.add(b"small")
    big = repo.add(random.Random(7).randbytes(300_000), cid_version=0)
    folder = repo.add_directory({"small": raw})
    assert repo.stat(raw.cid) == NodeStat(raw.cid, "raw", 5, 5)
    stat = repo.stat(big.cid)
    assert (stat.kind, stat.size) == ("file", 300_000) and stat.cumulative_size > 300_000
    dstat = repo.stat(str(folder))
    assert (
        dstat.kind == "directory" and dstat.size == dstat.cumulative_size == len(repo.block_get(folder)) + 5
    )


def test_block_put_and_get(repo: IpfsRepo) -> None:
    cid = repo.block_put(b"raw bytes")
    assert cid.codec == RAW and repo.block_get(str(cid)) == b"raw bytes"
    node = repo.block_get(repo.add_directory({"x": cid}))
    pb = repo.block_put(node, codec=DAG_PB)
    assert pb.codec == DAG_PB and repo.ls(pb)[0].name == "x"
    with pytest.raises(InvalidBlockError):
        repo.block_put(b"\xff\xff not dag-pb", codec=DAG_PB)
    with pytest.raises(BlockTooLargeError, match="1048576"):
        repo.block_put(b"x" * ((1 << 20) + 1))
    with pytest.raises(NotFoundError):
        repo.block_get(CID.parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"))


def test_a_non_repo_directory_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a Chrysalis IPFS repo"):
        IpfsRepo(tmp_path / "docs")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        IpfsRepo(tmp_path / "file")


def test_concurrent_adds_pins_and_gc_lose_nothing_pinned(repo: IpfsRepo) -> None:
    stop = threading.Event()

    def adder(worker: int) -> list[tuple[CID, bytes]]:
        added = []
        for i in range(6):
            data = random.Random(worker * 100 + i).randbytes(random.Random(i).choice([10, 300_000]))
            added.append((repo.add(data).cid, data))
        return added

    def collector() -> int:
        runs = 0
        while not stop.is_set():
            repo.gc()
            runs += 1
        return runs

    with ThreadPoolExecutor(5) as pool:
        gc_runs = pool.submit(collector)
        adders = [pool.submit(adder, w) for w in range(4)]
        results = [item for future in adders for item in future.result()]  # re-raises a failed add
        stop.set()
        assert gc_runs.result() >= 1
    repo.gc()
    assert len(results) == 24 and len(repo.pin_ls()) == len({cid for cid, _ in results})
    for cid, data in results:
        assert b"".join(repo.cat(cid)) == data
