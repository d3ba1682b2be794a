"""The Kubo RPC subset of the embedded node, driven by the real ipfshttpclient 0.7.0 (and raw httpx)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import ipfshttpclient
import ipfshttpclient.exceptions
import pytest

from agent.errors import NotFoundError
from agent.ipfs.cid import CID
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from tests.ipfs.conftest import HELLO, HELLO_V0, HELLO_V1

# ipfshttpclient 0.7.0 passes urllib3 an option it deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")

# Kubo's CIDs for random.Random(3).randbytes(1_500_000): six chunks under one balanced root.
BIG_V0 = "QmVGz4iqRQCqfu3AsNMRiUV8W3Yu7STTZk11z2uhk4iVoR"
BIG_V1 = "bafybeicfryudidfqrp5h2ch5ijehou2lkxr74kfcqtyd3n7dhmv6qsrx5q"


@pytest.fixture
def client(node: NodeServer) -> Iterator[ipfshttpclient.Client]:
    # connect() refuses every daemon newer than 0.8: construct the client directly, as the Kubo backend does.
    with ipfshttpclient.Client(node.multiaddr, timeout=30, headers=node.auth_headers) as c:
        yield c


def test_version_looks_like_kubo(client: ipfshttpclient.Client) -> None:
    info = client.version()
    assert info["Version"].startswith("0.30.0")
    assert tuple(map(int, info["Version"].split("-", 1)[0].split("."))) >= (0, 30, 0)
    assert client.apply_workarounds()["Version"] == info["Version"]


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({"cid-version": "0"}, HELLO_V0),
        ({"cid-version": "1", "raw-leaves": "true", "chunker": "size-262144"}, HELLO_V1),
    ],
)
def test_add_bytes_gives_kubos_cids(
    client: ipfshttpclient.Client, repo: IpfsRepo, opts: dict, expected: str
) -> None:
    assert client.add_bytes(HELLO, opts=opts) == expected
    assert repo.is_pinned(CID.parse(expected))


def test_add_of_a_chunked_file_matches_kubo(client: ipfshttpclient.Client, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(3).randbytes(1_500_000))
    v0 = client.add(str(path), cid_version=0, chunker="size-262144")
    v1 = client.add(str(path), cid_version=1, raw_leaves=True, chunker="size-262144")
    assert (v0["Name"], v0["Hash"]) == ("big.bin", BIG_V0)
    assert v1["Hash"] == BIG_V1
    assert int(v1["Size"]) >= 1_500_000


def test_add_directory_and_cat_inside(client: ipfshttpclient.Client, repo: IpfsRepo, tmp_path: Path) -> None:
    root = tmp_path / "art"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "1.json").write_bytes(b'{"id": 1}')
    (root / "cover.txt").write_bytes(b"cover")
    results = client.add(str(root), recursive=True, cid_version=1, raw_leaves=True)
    by_name = {r["Name"]: r["Hash"] for r in results}
    assert set(by_name) == {"art", "art/meta", "art/meta/1.json", "art/cover.txt"}
    top = CID.parse(by_name["art"])
    assert repo.is_pinned(top)
    assert client.cat(f"/ipfs/{top}/meta/1.json") == b'{"id": 1}'
    assert str(repo.resolve(f"{top}/cover.txt")) == by_name["art/cover.txt"]


def test_wrap_with_directory(client: ipfshttpclient.Client, repo: IpfsRepo, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / "b.txt").write_bytes(b"b")
    results = client.add(
        str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), wrap_with_directory=True, cid_version=1
    )
    assert [r["Name"] for r in results] == ["a.txt", "b.txt", ""]
    wrapper = CID.parse(results[-1]["Hash"])
    assert repo.is_pinned(wrapper)
    assert not repo.is_pinned(CID.parse(results[0]["Hash"]))  # Kubo pins the wrapper only
    assert [e.name for e in repo.ls(wrapper)] == ["a.txt", "b.txt"]


def test_only_hash_stores_nothing(client: ipfshttpclient.Client, repo: IpfsRepo) -> None:
    cid = client.add_bytes(b"just the hash", opts={"cid-version": "1", "only-hash": "true"})
    with pytest.raises(NotFoundError):
        repo.block_get(CID.parse(cid))


def test_other_chunkers_are_refused_clearly(client: ipfshttpclient.Client) -> None:
    with pytest.raises(
        ipfshttpclient.exceptions.ErrorResponse, match="rabin and buzhash are not implemented"
    ):
        client.add_bytes(b"x", opts={"chunker": "rabin-262144-524288-1048576"})


def test_cat_with_offset_and_length(client: ipfshttpclient.Client) -> None:
    data = random.Random(5).randbytes(300_000)
    cid = client.add_bytes(data, opts={"cid-version": "1", "raw-leaves": "true"})
    assert client.cat(cid) == data
    assert client.cat(cid, offset=262_100, length=100) == data[262_100:262_200]
    with pytest.raises(ipfshttpclient.exceptions.ErrorResponse, match="past the end"):
        client.cat(cid, offset=400_000)


def test_pin_add_ls_rm(client: ipfshttpclient.Client, repo: IpfsRepo) -> None:
    cid = client.add_bytes(b"pin me", opts={"cid-version": "1", "pin": "false"})
    assert cid not in client.pin.ls(type="recursive")["Keys"]
    with pytest.raises(ipfshttpclient.exceptions.ErrorResponse, match="not pinned"):
        client.pin.ls(cid)
    assert client.pin.add(cid)["Pins"] == [cid]
    assert client.pin.ls(cid)["Keys"][cid]["Type"] == "recursive"
    assert repo.is_pinned(CID.parse(cid))
    assert client.pin.rm(cid)["Pins"] == [cid]
    assert not repo.is_pinned(CID.parse(cid))
    with pytest.raises(ipfshttpclient.exceptions.ErrorResponse, match="not pinned"):
        client.pin.rm(cid)


def test_dag_export_import_round_trip(client: ipfshttpclient.Client, repo: IpfsRepo, tmp_path: Path) -> None:
    folder = repo.add_directory(
        {"a.bin": repo.add(random.Random(1).randbytes(700_000)), "b.txt": repo.add(b"b")}
    )
    car = client.dag.export(str(folder))
    other_repo = IpfsRepo(tmp_path / "other")
    with (
        NodeServer(other_repo) as other,
        ipfshttpclient.Client(other.multiaddr, headers=other.auth_headers) as other_client,
    ):
        reply = other_client.dag.imprt(BytesIO(car))
        assert reply["Root"]["Cid"]["/"] == str(folder)
        assert other_repo.is_pinned(folder)
        assert other_client.cat(f"{folder}/b.txt") == b"b"
        assert other_client.dag.export(str(folder)) == car


def test_block_get(client: ipfshttpclient.Client, repo: IpfsRepo) -> None:
    cid = repo.add_raw_block(b"one block")
    assert client.block.get(str(cid)) == b"one block"


def test_errors_have_kubos_shape(node: NodeServer) -> None:
    with httpx.Client(base_url=node.rpc_url, headers=node.auth_headers) as http:
        missing = http.post("/api/v0/cat", params={"arg": HELLO_V1})
        assert missing.status_code == 500
        assert missing.json()["Type"] == "error" and missing.json()["Code"] == 0
        no_arg = http.post("/api/v0/cat")
        assert no_arg.status_code == 400 and no_arg.json()["Code"] == 1
        assert http.get("/api/v0/version").status_code == 405
        assert http.post("/api/v0/version", headers={"Origin": "http://evil.example"}).status_code == 403
        assert http.post("/api/v0/swarm/peers").status_code == 404


def test_oversized_add_is_413_and_stores_nothing(tmp_path: Path) -> None:
    repo = IpfsRepo(tmp_path / "small")
    data = random.Random(9).randbytes(200_000)
    expected = IpfsRepo(None).add(data, cid_version=1).cid
    with NodeServer(repo, max_request_bytes=64 * 1024) as node:
        with ipfshttpclient.Client(node.multiaddr, headers=node.auth_headers) as client:  # streamed upload
            with pytest.raises(ipfshttpclient.exceptions.StatusError) as caught:
                client.add_bytes(data, opts={"cid-version": "1"})
            assert "413" in str(caught.value.original)
        with httpx.Client(base_url=node.rpc_url, headers=node.auth_headers) as http:  # Content-Length
            reply = http.post("/api/v0/add", files={"file": ("x", data)}, params={"cid-version": "1"})
            assert reply.status_code == 413
            assert "limit of 65536 bytes" in reply.json()["Message"]
    assert repo.pin_ls() == {}
    with pytest.raises(NotFoundError):
        repo.block_get(expected)


def test_truncated_car_is_refused_and_nothing_stored(repo: IpfsRepo, node: NodeServer) -> None:
    source = IpfsRepo(None)
    folder = source.add_directory(
        {"a.bin": source.add(random.Random(2).randbytes(600_000)), "b.txt": source.add(b"b")}
    )
    out = BytesIO()
    source.export_car(folder, out)
    truncated = out.getvalue()[: len(out.getvalue()) - 1000]
    with httpx.Client(base_url=node.rpc_url, headers=node.auth_headers) as http:
        reply = http.post("/api/v0/dag/import", files={"file": ("x.car", truncated)})
    assert reply.status_code == 500
    assert reply.json()["Type"] == "error"
    assert "car" in reply.json()["Message"].lower() or "truncat" in reply.json()["Message"].lower()
    assert repo.pin_ls() == {}
    with pytest.raises(NotFoundError):
        repo.block_get(folder)
