"""The node's two listeners: a read-only gateway, and the Kubo RPC on loopback behind a bearer token.

Also the RPC's memory caps (multipart parts, CAR links) and what a 500 may say (no path on the server's disk).
"""

from __future__ import annotations

import logging
import os
import random
import stat
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from agent.errors import ConfigError
from agent.ipfs.cid import CID
from agent.ipfs.errors import TooManyLinksError
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.rpc_auth import RPC_TOKEN_ENV, check_loopback, rpc_token, token_path
from agent.ipfs.server import NodeServer
from agent.net import is_loopback
from agent.settings import IpfsSettings
from tests.ipfs.conftest import HELLO, HELLO_V1


def _stored(repo: IpfsRepo) -> tuple[list[str], dict[CID, str]]:
    """Every block file and every pin: what a refused request must leave as it was."""
    assert repo.path is not None
    blocks = sorted(str(p.relative_to(repo.path)) for p in (repo.path / "blocks").rglob("*.data"))
    return blocks, repo.pin_ls()


def _car(repo: IpfsRepo, files: int) -> tuple[CID, bytes]:
    folder = repo.add_directory({f"{i}.txt": repo.add(f"file {i}".encode()) for i in range(files)})
    out = BytesIO()
    repo.export_car(folder, out)
    return folder, out.getvalue()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-the-token"}, 403),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 403),
        ({"Authorization": "Bearer"}, 403),
    ],
)
def test_rpc_without_the_token_is_refused_and_stores_nothing(
    node: NodeServer, repo: IpfsRepo, headers: dict[str, str], status: int
) -> None:
    pinned = repo.add(b"pinned before", pin=True).cid
    before = _stored(repo)
    _, car = _car(IpfsRepo(None), 3)
    with httpx.Client(base_url=node.rpc_url, headers=headers, timeout=10) as rpc:
        replies = [
            rpc.post("/api/v0/add", files={"file": ("x.html", b"<script>alert(1)</script>")}),
            rpc.post("/api/v0/pin/rm", params={"arg": str(pinned)}),
            rpc.post("/api/v0/dag/import", files={"file": ("x.car", car)}),
            rpc.post("/api/v0/cat", params={"arg": str(pinned)}),
            rpc.get("/api/v0/version"),
        ]
    for reply in replies:
        assert reply.status_code == status, reply.text
        assert reply.json()["Type"] == "error"
        assert "token" in reply.json()["Message"].lower() or "Authorization" in reply.json()["Message"]
    if status == 401:
        assert replies[0].headers["www-authenticate"].startswith("Bearer")
    assert _stored(repo) == before
    assert repo.is_pinned(pinned)


def test_rpc_with_the_token_works(node: NodeServer, repo: IpfsRepo) -> None:
    with httpx.Client(base_url=node.rpc_url, headers=node.auth_headers, timeout=10) as rpc:
        reply = rpc.post("/api/v0/add", params={"cid-version": "1"}, files={"file": ("h", HELLO)})
        assert reply.status_code == 200 and reply.json()["Hash"] == HELLO_V1
        assert rpc.post("/api/v0/version", headers={"Origin": "http://evil.example"}).status_code == 403
    assert repo.is_pinned(CID.parse(HELLO_V1))


def test_the_gateway_listener_serves_no_rpc(node: NodeServer, repo: IpfsRepo) -> None:
    pinned = repo.add(b"keep me", pin=True).cid
    before = _stored(repo)
    # even with the right token: the gateway has no write route at all
    with httpx.Client(base_url=node.url, headers=node.auth_headers, timeout=10) as gateway:
        for method in ("GET", "POST", "PUT", "DELETE"):
            for command in ("add", "pin/rm", "pin/add", "dag/import", "version", "cat"):
                reply = gateway.request(method, f"/api/v0/{command}", params={"arg": str(pinned)})
                assert reply.status_code in (404, 405), (method, command)
    assert _stored(repo) == before


def test_a_gateway_only_node_exposes_no_write_route(repo: IpfsRepo) -> None:
    """What the agent starts for pinning services in mode = "origins": the gateway, no RPC listener."""
    cid = repo.add(HELLO, pin=True).cid
    before = _stored(repo)
    with NodeServer(repo, rpc=False) as node:
        assert node.rpc_server is None
        with pytest.raises(RuntimeError, match="gateway only"):
            _ = node.multiaddr
        assert httpx.get(f"{node.url}/ipfs/{cid}", timeout=10).content == HELLO
        car = httpx.get(f"{node.url}/ipfs/{cid}", params={"format": "car"}, timeout=10)
        assert car.status_code == 200  # what a pinning service fetches
        for command in ("add", "pin/rm", "dag/import", "block/put"):
            reply = httpx.post(
                f"{node.url}/api/v0/{command}", params={"arg": str(cid)}, files={"f": ("x", b"x")}, timeout=10
            )
            assert reply.status_code == 404
            assert "read-only gateway" in reply.json()["Message"]
    assert _stored(repo) == before


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.1.5", "example.org", ""])
def test_a_non_loopback_rpc_bind_is_refused(repo: IpfsRepo, host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="loopback only") as caught:
        NodeServer(repo, rpc_host=host)
    assert "127.0.0.1" in (caught.value.hint or "")
    with pytest.raises(ValueError, match="loopback"):
        IpfsSettings(rpc_host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "[::1]"])
def test_loopback_rpc_hosts_are_accepted(host: str) -> None:
    assert check_loopback(host) == host


def test_the_token_file_is_created_once_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RPC_TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError, match="no RPC token"):
        rpc_token(tmp_path, create=False)
    token = rpc_token(tmp_path)
    path = token_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 32 and rpc_token(tmp_path) == token  # kept across restarts
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by other users") as caught:
        rpc_token(tmp_path)
    assert "chmod 600" in (caught.value.hint or "")
    os.chmod(path, 0o600)
    monkeypatch.setenv(RPC_TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        rpc_token(tmp_path)
    monkeypatch.setenv(RPC_TOKEN_ENV, "x" * 40)
    assert rpc_token(tmp_path) == "x" * 40  # the env var wins over the file


def test_too_many_multipart_parts_is_413_and_stores_nothing(repo: IpfsRepo) -> None:
    before = _stored(repo)
    with NodeServer(repo, max_parts=3) as node:
        with httpx.Client(base_url=node.rpc_url, headers=node.auth_headers, timeout=10) as rpc:
            files = [("file", (f"{i}.txt", f"part {i}".encode())) for i in range(5)]
            reply = rpc.post("/api/v0/add", files=files)
            assert reply.status_code == 413
            assert "more than 3 multipart parts" in reply.json()["Message"]
            assert _stored(repo) == before
            ok = rpc.post("/api/v0/add", files=files[:3])
            assert ok.status_code == 200 and len(ok.text.splitlines()) == 3


def test_a_car_with_too_many_links_is_413_and_stores_nothing(repo: IpfsRepo) -> None:
    folder, car = _car(IpfsRepo(None), 10)  # 11 blocks, 10 links
    before = _stored(repo)
    with NodeServer(repo, max_car_links=15) as node:
        with httpx.Client(base_url=node.rpc_url, headers=node.auth_headers, timeout=10) as rpc:
            reply = rpc.post("/api/v0/dag/import", files={"file": ("x.car", car)})
    assert reply.status_code == 413
    assert "more than 15 blocks and links" in reply.json()["Message"]
    assert _stored(repo) == before
    with pytest.raises(TooManyLinksError):
        repo.import_car(BytesIO(car), max_links=20)
    assert repo.import_car(BytesIO(car), max_links=21) == [folder]


def test_a_corrupt_block_is_a_500_that_names_no_server_path(
    node: NodeServer, repo: IpfsRepo, caplog: pytest.LogCaptureFixture
) -> None:
    data = random.Random(6).randbytes(2000)
    cid = repo.add_raw_block(data)
    path = repo.blockstore.path(cid)  # type: ignore[attr-defined]
    path.write_bytes(b"x" + path.read_bytes()[1:])
    secret = str(path.parent.parent)
    with caplog.at_level(logging.ERROR, logger="agent.ipfs.kubo_rpc"):
        gateway = httpx.get(f"{node.url}/ipfs/{cid}", timeout=10)
        with httpx.Client(base_url=node.rpc_url, headers=node.auth_headers, timeout=10) as rpc:
            rpc_replies = [
                rpc.post("/api/v0/cat", params={"arg": str(cid)}),
                rpc.post("/api/v0/block/get", params={"arg": str(cid)}),
            ]
    for reply in (gateway, *rpc_replies):
        assert reply.status_code == 500
        assert "corrupt" in reply.text and str(cid) in reply.text
        assert secret not in reply.text and "blocks" not in reply.text
    assert secret in caplog.text  # the operator still finds the file in the log
