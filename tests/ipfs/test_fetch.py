"""The verified fetcher (agent/ipfs/fetch.py): files and directories by CID from a gateway, a Kubo RPC API or a repo,
every block checked against its CID, with limits, timeouts and clear errors."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.ipfs.cid import CID, IDENTITY, RAW, raw_cid
from agent.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs
from agent.ipfs.errors import DagLimitError, InvalidPathError, NodeKindError
from agent.ipfs.fetch import (
    ContentUnavailableError,
    Failed,
    Fetcher,
    FetchLimitError,
    FetchTimeoutError,
    GatewaySource,
    KuboRpcSource,
    RepoSource,
    SourceUnreachableError,
    UntrustedBlockError,
    api_url,
    gateway_url,
    make_fetcher,
)
from agent.ipfs.reader import DagLimits
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from tests.ipfs.test_dag_bombs import file_bomb, put_file


@pytest.fixture
def gateway_only(repo: IpfsRepo) -> Iterator[str]:
    with NodeServer(repo, rpc=False) as node:
        yield node.url


@pytest.fixture
def silent() -> Iterator[str]:
    """Accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


class LyingSource(RepoSource):
    """A source that flips the last byte of every block it hands out."""

    def __init__(self, repo: IpfsRepo) -> None:
        super().__init__(repo)
        self.name = "liar"

    def get_block(self, cid: CID, *, timeout_s: float, max_bytes: int) -> bytes:
        data = super().get_block(cid, timeout_s=timeout_s, max_bytes=max_bytes)
        return data[:-1] + bytes([data[-1] ^ 1])


def test_a_multi_block_file_through_a_gateway_every_block_checked(repo: IpfsRepo, gateway_only: str) -> None:
    data = os.urandom(1_200_000)  # five 256 KiB leaves under one root
    cid = repo.add(data).cid
    with make_fetcher(gateways=[gateway_only]) as fetcher:
        assert fetcher.fetch_file(cid) == data
        assert fetcher.stats.blocks == {f"gateway {gateway_only}": 6}  # the root and 5 leaves, once each
        assert fetcher.fetch_file(str(cid)) == data  # the second read is served from the verified blocks
        assert fetcher.stats.blocks == {f"gateway {gateway_only}": 6}
        with pytest.raises(NodeKindError):
            fetcher.fetch_directory(cid)


def test_a_directory_with_a_sharded_subdirectory_fetched_and_saved(
    repo: IpfsRepo, gateway_only: str, tmp_path: Path
) -> None:
    files = {f"f{i:03d}.bin": os.urandom(100 + i) for i in range(40)}
    shard = repo.add_directory({name: repo.add(data) for name, data in files.items()}, shard_threshold=1)
    weights = os.urandom(600_000)
    top = repo.add_directory({"manifest.json": repo.add(b"{}"), "weights": shard, "w.bin": repo.add(weights)})
    assert repo.stat(shard).kind == "directory"
    with make_fetcher(gateways=[gateway_only]) as fetcher:
        got = fetcher.fetch_directory(top)
        assert got == {"manifest.json": b"{}", "w.bin": weights} | {
            f"weights/{k}": v for k, v in files.items()
        }
        saved = fetcher.save_directory(top, tmp_path / "out")
    lazy = make_fetcher(gateways=[gateway_only]).tree(top)
    assert sorted(lazy) == sorted(got) and lazy["w.bin"] == weights  # each file fetched when read
    assert (tmp_path / "out" / "weights" / "f007.bin").read_bytes() == files["f007.bin"]
    assert set(saved) == set(got)


def test_through_a_kubo_rpc_api_with_its_token(repo: IpfsRepo) -> None:
    data = os.urandom(300_000)
    cid = repo.add(data).cid
    with NodeServer(repo) as node:
        with make_fetcher(ipfs_apis=[node.multiaddr], api_token=node.token) as fetcher:
            assert fetcher.fetch_file(cid) == data
        with make_fetcher(ipfs_apis=[node.rpc_url]) as anonymous, pytest.raises(Exception) as err:
            anonymous.fetch_block(cid)
        assert "a token is needed" in str(err.value)


def test_a_source_that_returns_other_bytes_is_caught_and_the_next_one_asked(repo: IpfsRepo) -> None:
    cid = repo.add(b"the real content").cid
    fetcher = Fetcher([LyingSource(repo), RepoSource(repo)])
    assert fetcher.fetch_block(cid) == b"the real content"
    assert (
        len(fetcher.stats.untrusted) == 1
        and "liar returned 16 bytes that do not hash to" in fetcher.stats.untrusted[0]
    )
    with pytest.raises(UntrustedBlockError, match=f"no source returned block {cid}: liar returned") as err:
        Fetcher([LyingSource(repo)]).fetch_block(cid)
    assert "never trusted" in (err.value.hint or "")


def test_content_no_source_has(repo: IpfsRepo, gateway_only: str) -> None:
    missing = raw_cid(b"nobody has this")
    with pytest.raises(
        ContentUnavailableError, match=f"no source has block {missing}: gateway .*HTTP 404"
    ) as err:
        make_fetcher(gateways=[gateway_only]).fetch_block(missing)
    assert "--gateway" in (err.value.hint or "")


def test_a_gateway_that_never_answers_times_out_and_says_so(silent: str) -> None:
    cid = raw_cid(b"waiting")
    with pytest.raises(FetchTimeoutError) as err:
        make_fetcher(gateways=[silent], timeout_s=0.5).fetch_block(cid)
    assert f"no gateway answered for CID {cid} within 0.5 s" in err.value.message
    assert "--timeout" in (err.value.hint or "")


def test_an_unreachable_gateway_and_one_that_answers_after_it(
    repo: IpfsRepo, gateway_only: str, closed_port: int
) -> None:
    cid = repo.add(b"x").cid
    with pytest.raises(SourceUnreachableError, match="cannot connect"):
        make_fetcher(gateways=[f"http://127.0.0.1:{closed_port}"]).fetch_block(cid)
    both = make_fetcher(gateways=[f"http://127.0.0.1:{closed_port}", gateway_only])
    assert both.fetch_block(cid) == b"x"


def test_limits_declared_sizes_bombs_and_no_sources(repo: IpfsRepo, gateway_only: str) -> None:
    data = os.urandom(600_000)
    cid = repo.add(data).cid
    with pytest.raises(FetchLimitError, match="declares 600000 bytes, more than the limit of 1000"):
        make_fetcher(gateways=[gateway_only]).fetch_file(cid, max_bytes=1000)
    budget = make_fetcher(gateways=[gateway_only], max_bytes=300_000)
    with pytest.raises(FetchLimitError, match="declares 600000 bytes, more than the limit of 300000"):
        budget.fetch_file(cid)  # the budget, by default
    first, second = repo.add(os.urandom(200_000)).cid, repo.add(os.urandom(200_000)).cid
    budget.fetch_file(first)
    with pytest.raises(FetchLimitError, match="would pass this fetch's limit of 300000 bytes"):
        budget.fetch_file(second)
    bomb = file_bomb(repo)  # an exabyte declared in ~200 KB: refused from its root block
    fetcher = make_fetcher(gateways=[gateway_only])
    with pytest.raises(FetchLimitError, match="declares"):
        fetcher.fetch_file(bomb)
    assert sum(fetcher.stats.blocks.values()) == 1  # its root block alone
    leaf = repo.block_put(b"\x01" * 1024)
    repeats = put_file(repo, [(leaf, 1024)] * 100)  # honest sizes, 100 links to one leaf
    with pytest.raises(DagLimitError, match="ipfs.max_file_expansion|repeat"):
        make_fetcher(gateways=[gateway_only], limits=DagLimits(max_file_expansion=4)).fetch_file(repeats)
    with pytest.raises(ConfigError, match="no IPFS source") as err:
        Fetcher([]).fetch_block(cid)
    assert "--gateway" in (err.value.hint or "")


def test_an_entry_name_that_is_not_a_plain_name_is_refused_before_anything_is_written(
    repo: IpfsRepo, gateway_only: str, tmp_path: Path
) -> None:
    child = repo.add(b"escape")
    node = PBNode((PBLink(child.cid, "..", child.size),), encode_unixfs(UnixFSData(DataType.DIRECTORY)))
    evil = repo.block_put(encode_node(node), codec=0x70)
    with pytest.raises(InvalidPathError, match="not a plain file name"):
        make_fetcher(gateways=[gateway_only]).save_directory(evil, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_identity_cids_and_addresses() -> None:
    inline = CID(1, RAW, bytes([IDENTITY, 5]) + b"hello")
    assert Fetcher([]).fetch_block(inline) == b"hello"  # the content is in the CID: no source asked
    assert gateway_url("ipfs.io/ipfs/") == "http://ipfs.io"
    assert gateway_url("https://dweb.link/") == "https://dweb.link"
    assert api_url("/ip4/127.0.0.1/tcp/5001") == "http://127.0.0.1:5001"
    assert api_url("http://127.0.0.1:5001/api/v0") == "http://127.0.0.1:5001"
    with pytest.raises(ConfigError, match="not an http"):
        GatewaySource("ftp://example.org")
    with pytest.raises(ConfigError, match="cannot read the IPFS API address"):
        KuboRpcSource("/unix/tmp/socket")


def test_failed_is_what_a_source_raises_for_a_bad_answer() -> None:
    assert Failed("x", timed_out=True).timed_out and Failed("y", unreachable=True).unreachable
