"""DAG bombs against the read path (security finding M5): HAMTs whose buckets repeat one child, file DAGs that
declare an exabyte from a few kilobytes, and CAR exports under concurrency. Each bomb is built here, block by
block, and every test asserts bounded work (entries yielded, memory traced, an error before the first byte)."""

from __future__ import annotations

import random
import socket
import tracemalloc
from collections.abc import Sequence
from contextlib import ExitStack
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from agent.http import ServerThread
from agent.ipfs.car import CarReader
from agent.ipfs.cid import CID, DAG_PB
from agent.ipfs.dagpb import (
    HAMT_FANOUT,
    HAMT_HASH_MURMUR3,
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    encode_node,
    encode_unixfs,
)
from agent.ipfs.errors import DagLimitError, InvalidBlockError
from agent.ipfs.gateway import CAR_STREAMS, create_app
from agent.ipfs.hamt import build_shard
from agent.ipfs.reader import DagLimits
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.settings import Settings

ALL_BUCKETS = (1 << HAMT_FANOUT) - 1
EXABYTE = 10**18


def put_shard(repo: IpfsRepo, links: Sequence[PBLink], *, bits: int | None = None, sort: bool = True) -> CID:
    """A HAMT shard node with ``links`` as given; ``bits`` defaults to the buckets their prefixes name."""
    if bits is None:
        bits = 0
        for link in links:
            bits |= 1 << int(link.name[:2], 16)
    fs = UnixFSData(
        DataType.HAMT_SHARD,
        data=bits.to_bytes((bits.bit_length() + 7) // 8, "big") or None,
        hash_type=HAMT_HASH_MURMUR3,
        fanout=HAMT_FANOUT,
    )
    return repo.block_put(encode_node(PBNode(tuple(links), encode_unixfs(fs)), sort_links=sort), codec=DAG_PB)


def hamt_bomb(repo: IpfsRepo, levels: int = 4) -> CID:
    """``levels`` shards whose 256 buckets all point at the same child: 256**levels entries in ~40 KB."""
    target = repo.add(b"boom").cid
    child = put_shard(repo, [PBLink(target, f"{i:02X}x", 4) for i in range(HAMT_FANOUT)])
    for _ in range(levels - 1):
        child = put_shard(repo, [PBLink(child, f"{i:02X}", 1) for i in range(HAMT_FANOUT)])
    return child


def put_file(
    repo: IpfsRepo, children: Sequence[tuple[CID, int]], *, filesize: int | None = None, data: bytes = b""
) -> CID:
    """A UnixFS file node over ``(child, size)`` links; ``filesize`` defaults to the honest sum."""
    sizes = tuple(size for _, size in children)
    fs = UnixFSData(
        DataType.FILE,
        data=data or None,
        filesize=len(data) + sum(sizes) if filesize is None else filesize,
        blocksizes=sizes,
    )
    links = tuple(PBLink(cid, "", size) for cid, size in children)
    return repo.block_put(encode_node(PBNode(links, encode_unixfs(fs))), codec=DAG_PB)


def file_bomb(repo: IpfsRepo, *, fanout: int = 1000, levels: int = 5) -> CID:
    """Every node links ``fanout`` times to the node below; the leaf is 1 KiB: 1024 * 1000**5 bytes, about an
    exabyte, from ~200 KB of blocks, and every size in it adds up."""
    node, size = repo.block_put(b"\x00" * 1024), 1024
    for _ in range(levels):
        node, size = put_file(repo, [(node, size)] * fanout), size * fanout
    return node


@pytest.fixture
def small_limits_repo(tmp_path: Path) -> IpfsRepo:
    return IpfsRepo(
        tmp_path / "repo", sync=False, limits=DagLimits(max_listing_entries=50, max_file_expansion=4)
    )


# -- HAMT bombs --


def test_a_hamt_whose_buckets_repeat_one_child_is_refused_at_the_first_repeat(repo: IpfsRepo) -> None:
    bomb = hamt_bomb(repo)  # 256**4 = 4.3 billion entries if listed naively
    listed = 0
    with pytest.raises(InvalidBlockError, match="linked more than once") as caught:
        for _ in repo.iter_ls(bomb):
            listed += 1
    assert listed == HAMT_FANOUT  # the one distinct bottom shard, then the repeat is noticed
    assert caught.value.hint
    with pytest.raises(InvalidBlockError, match="linked more than once"):
        repo.ls(bomb)


def test_listing_a_hamt_bomb_stays_small_in_memory(repo: IpfsRepo) -> None:
    bomb = hamt_bomb(repo, levels=3)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidBlockError):
            repo.ls(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20


def test_the_gateway_answers_a_hamt_bomb_with_a_clear_error(repo: IpfsRepo, gateway: httpx.Client) -> None:
    bomb = hamt_bomb(repo)
    reply = gateway.get(f"/ipfs/{bomb}/")
    assert reply.status_code == 500
    assert reply.headers["content-type"].startswith("text/plain")
    assert "linked more than once" in reply.text and "hint: " in reply.text
    # a name lookup reads one shard per level and stays bounded too
    assert gateway.get(f"/ipfs/{bomb}/nothing-here").status_code == 404


def shard_cases(repo: IpfsRepo) -> dict[str, CID]:
    leaf = repo.add(b"x").cid
    deep = put_shard(repo, [PBLink(leaf, "00end", 1)])
    for level in range(8):  # nine levels: one more than 64 hash bits allow
        deep = put_shard(repo, [PBLink(deep, "00", 1), PBLink(leaf, f"{level + 1:02X}pad", 1)])
    return {
        "more links than the fanout": put_shard(
            repo, [PBLink(leaf, f"{i % 256:02X}n{i}", 1) for i in range(257)], bits=ALL_BUCKETS
        ),
        "out of order or repeated": put_shard(repo, [PBLink(leaf, "05a", 1), PBLink(leaf, "05b", 1)]),
        "out of order": put_shard(repo, [PBLink(leaf, "09a", 1), PBLink(leaf, "03b", 1)], sort=False),
        "bitfield does not match": put_shard(repo, [PBLink(leaf, "01a", 1)], bits=0b110),
        "uppercase hex bucket": put_shard(repo, [PBLink(leaf, "0aa", 1)], bits=1 << 10),
        "deeper than 8 levels": deep,
    }


MALFORMED = {
    "more links than the fanout": "257 links, more than its fanout of 256",
    "out of order or repeated": "bucket 05 is out of order or repeated",
    "out of order": "bucket 03 is out of order",
    "bitfield does not match": "bitfield does not match the links",
    "uppercase hex bucket": "2-digit uppercase hex bucket",
    "deeper than 8 levels": "deeper than 8 levels",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_shards_are_refused(repo: IpfsRepo, case: str) -> None:
    root = shard_cases(repo)[case]
    with pytest.raises(InvalidBlockError, match=MALFORMED[case]):
        repo.ls(root)


def test_lookups_check_shards_too(repo: IpfsRepo) -> None:
    root = shard_cases(repo)["bitfield does not match"]
    with pytest.raises(InvalidBlockError, match="bitfield"):
        repo.resolve(f"{root}/a")


def test_listings_stop_at_max_listing_entries(small_limits_repo: IpfsRepo) -> None:
    repo = small_limits_repo
    leaf = repo.add(b"same").cid
    basic = repo.add_directory({f"f{i:03d}": leaf for i in range(60)})
    sharded, _ = build_shard([PBLink(leaf, f"token-{i}.json", 4) for i in range(80)], repo.blockstore)
    for folder in (basic, sharded):
        with pytest.raises(DagLimitError, match="more than 50 entries") as caught:
            repo.ls(folder)
        assert "ipfs.max_listing_entries" in (caught.value.hint or "")
        assert len(repo.ls(folder, limit=1000)) in (60, 80)
    with NodeServer(repo) as node, httpx.Client(base_url=node.url) as gateway:
        page = gateway.get(f"/ipfs/{sharded}/")
        assert page.status_code == 200
        assert "more than 50 entries: only the first 50 are listed" in page.text
        assert page.text.count("<tr><td>") == 50
        assert gateway.get(f"/ipfs/{sharded}/token-79.json").content == b"same"  # names still resolve


def test_index_html_is_found_by_lookup_in_a_sharded_directory(small_limits_repo: IpfsRepo) -> None:
    repo = small_limits_repo
    leaf = repo.add(b"x").cid
    page = repo.add(b"<!doctype html><title>hi</title>").cid
    links = [PBLink(leaf, f"n{i}", 1) for i in range(80)] + [PBLink(page, "index.html", 32)]
    sharded, _ = build_shard(links, repo.blockstore)
    with NodeServer(repo) as node, httpx.Client(base_url=node.url) as gateway:
        assert gateway.get(f"/ipfs/{sharded}/").text.startswith("<!doctype html>")


# -- file bombs --


def test_a_file_declaring_an_exabyte_is_refused_before_any_byte(
    repo: IpfsRepo, gateway: httpx.Client
) -> None:
    bomb = file_bomb(repo)
    assert repo.stat(bomb).size > EXABYTE  # what the root block claims
    with pytest.raises(DagLimitError, match="distinct blocks hold only") as caught:
        repo.file_size(bomb)
    assert "ipfs.max_file_expansion" in (caught.value.hint or "")
    with pytest.raises(DagLimitError):
        repo.cat(bomb)  # raises on the call, not on the first chunk
    for method in ("GET", "HEAD"):
        reply = gateway.request(method, f"/ipfs/{bomb}")
        assert reply.status_code == 403
        assert reply.headers.get("content-length") != str(repo.stat(bomb).size)
    body = gateway.get(f"/ipfs/{bomb}").text
    assert "ipfs.max_file_expansion" in body and "hint: " in body


@pytest.mark.parametrize("lie", ["filesize", "leaf size", "two sizes"])
def test_file_dags_whose_sizes_do_not_add_up_are_refused(
    repo: IpfsRepo, gateway: httpx.Client, lie: str
) -> None:
    leaf = repo.block_put(b"a" * 1000)
    other = repo.block_put(b"b" * 1000)
    if lie == "filesize":
        root = put_file(repo, [(leaf, 1000), (other, 1000)], filesize=EXABYTE)
        expected = "declares a filesize"
    elif lie == "leaf size":
        root = put_file(repo, [(leaf, 1000), (other, 5000)])
        expected = "its parent says 5000"
    else:
        root = put_file(repo, [(leaf, 1000), (other, 1000), (leaf, 500)])
        expected = "linked as 1000 bytes and as 500"
    with pytest.raises(InvalidBlockError, match=expected):
        repo.file_size(root)
    reply = gateway.get(f"/ipfs/{root}")
    assert reply.status_code == 500 and expected in reply.text


def test_honest_files_with_repeated_chunks_are_served(repo: IpfsRepo, gateway: httpx.Client) -> None:
    zeros = b"\x00" * (3 << 20)  # twelve identical 256 KiB chunks: one leaf, linked twelve times
    cid = repo.add(zeros).cid
    assert repo.file_size(cid) == len(zeros)
    reply = gateway.get(f"/ipfs/{cid}")
    assert reply.status_code == 200 and reply.content == zeros
    assert reply.headers["content-length"] == str(len(zeros))


def test_max_file_expansion_is_the_knob(small_limits_repo: IpfsRepo) -> None:
    repo = small_limits_repo  # at most 4x
    assert repo.file_size(repo.add(b"\x00" * (1 << 20)).cid) == 1 << 20  # 4 chunks, one leaf: ~4x, allowed
    with pytest.raises(DagLimitError, match="more than 4x"):
        repo.file_size(repo.add(b"\x00" * (2 << 20)).cid)


def test_the_settings_carry_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DagLimits.from_settings(Settings().ipfs) == DagLimits(10_000, 1024)
    monkeypatch.setenv("CHRYSALIS_IPFS__MAX_LISTING_ENTRIES", "7")
    monkeypatch.setenv("CHRYSALIS_IPFS__MAX_FILE_EXPANSION", "3")
    assert DagLimits.from_settings(Settings().ipfs) == DagLimits(7, 3)


# -- CAR export --


def test_car_streams_are_lazy_and_hold_each_block_once(repo: IpfsRepo) -> None:
    data = b"\x00" * (3 << 20) + random.Random(4).randbytes(1 << 20)  # a repeated leaf, 4 distinct
    cid = repo.add(data).cid
    tracemalloc.start()
    try:
        length, chunks = repo.car_stream(cid)
        first = next(chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing spooled: the check walk stats leaves, the stream reads one at a time
    car = first + b"".join(chunks)
    assert len(car) == length
    blocks = [block_cid for block_cid, _ in CarReader(BytesIO(car)).blocks()]
    assert len(blocks) == len(set(blocks))
    out = BytesIO()
    repo.export_car(cid, out)
    assert out.getvalue() == car


def hold_car_stream(node: NodeServer, path: str) -> tuple[socket.socket, int]:
    """Start a CAR download and stop reading after the headers, with a small receive buffer (no autotuning), so
    the server's stream blocks and keeps its slot until the socket closes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", node.port))
    sock.sendall(f"GET {path}?format=car HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n" not in head:
        head += sock.recv(1024)
    return sock, int(head.split()[1])


def wait_for_status(gateway: httpx.Client, path: str, status: int) -> httpx.Response:
    for _ in range(500):  # each try is a full round trip: bounded, no sleeps
        reply = gateway.head(path, params={"format": "car"})
        if reply.status_code == status:
            return reply
    raise AssertionError(f"{path}?format=car never answered {status}")


def test_concurrent_car_exports_are_capped_and_slots_come_back(repo: IpfsRepo, node: NodeServer) -> None:
    big = repo.add(random.Random(5).randbytes(16 << 20)).cid  # 16 MiB: more than socket buffers hold
    path = f"/ipfs/{big}"
    with ExitStack() as stack, httpx.Client(base_url=node.url, timeout=30) as gateway:
        held = []
        for _ in range(CAR_STREAMS):
            sock, status = hold_car_stream(node, path)
            stack.callback(sock.close)
            held.append(sock)
            assert status == 200
        refused = gateway.get(path, params={"format": "car"})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert "CAR exports are already streaming" in refused.text
        held.pop().close()  # a client that goes away mid-stream gives its slot back
        reply = wait_for_status(gateway, path, 200)
        assert int(reply.headers["content-length"]) > 16 << 20
        car = gateway.get(path, params={"format": "car"})  # a whole export, which then frees its slot too
        assert car.status_code == 200 and len(car.content) == int(car.headers["content-length"])
        assert IpfsRepo(None).import_car(BytesIO(car.content)) == [big]
        for sock in held:
            sock.close()
        for _ in range(CAR_STREAMS):
            sock, status = hold_car_stream(node, path)
            stack.callback(sock.close)
            assert status == 200
        assert gateway.get(path, params={"format": "car"}).status_code == 503


def test_a_gateway_without_car_refuses_it_clearly(repo: IpfsRepo) -> None:
    cid = repo.add(b"png-ish").cid
    app = create_app(repo, safe_types=True, car=False)  # the studio mounts this one
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
        assert client.get(f"/ipfs/{cid}", params={"format": "car"}).status_code == 400
        accept = client.get(f"/ipfs/{cid}", headers={"Accept": "application/vnd.ipld.car"})
        assert accept.status_code == 406 and "CAR export is off" in accept.text
