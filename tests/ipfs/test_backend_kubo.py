"""The Kubo backend (ipfshttpclient) against the embedded node's RPC API; no Kubo binary exists here."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from agent.errors import BackendUnavailableError, ChrysalisError
from agent.http import ServerThread
from agent.ipfs.backends import KuboBackend, RetryPolicy
from agent.ipfs.backends.kubo import to_multiaddr
from agent.ipfs.errors import CIDMismatchError
from agent.ipfs.kubo_rpc import create_rpc_app
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from tests.ipfs.conftest import HELLO, HELLO_V0, HELLO_V1

# ipfshttpclient 0.7.0 passes urllib3 an option it deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")

FAST = RetryPolicy(attempts=2, base_delay=0.01, deadline=5)
TOKEN = "kubo-backend-test-token"


def test_add_passes_options_and_checks_the_cid(node: NodeServer, repo: IpfsRepo) -> None:
    with KuboBackend(node.multiaddr, token=node.token) as kubo:
        assert kubo.version()["Version"].startswith("0.30.0")
        assert str(kubo.add(HELLO, cid_version=0)) == HELLO_V0
        assert str(kubo.add(HELLO)) == HELLO_V1
        big = random.Random(3).randbytes(1_500_000)
        assert str(kubo.add(big)) == "bafybeicfryudidfqrp5h2ch5ijehou2lkxr74kfcqtyd3n7dhmv6qsrx5q"
    assert repo.is_pinned(IpfsRepo(None).add(HELLO).cid)


def test_a_node_that_ignores_raw_leaves_is_caught(repo: IpfsRepo) -> None:
    """A daemon that makes dag-pb leaves whatever we ask (ipfshttpclient's default) returns another CID."""
    app = create_rpc_app(repo, token=TOKEN)

    async def ignores_raw_leaves(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = dict(
                scope, query_string=scope["query_string"].replace(b"raw-leaves=true", b"raw-leaves=false")
            )
        await app(scope, receive, send)

    with ServerThread(ignores_raw_leaves) as server, KuboBackend(server.url, token=TOKEN) as kubo:
        with pytest.raises(CIDMismatchError) as caught:
            kubo.add(HELLO, cid_version=1)
    message = str(caught.value)
    assert HELLO_V1 in message  # what our importer computed
    assert (
        str(IpfsRepo(None).add(HELLO, cid_version=1, raw_leaves=False).cid) in message
    )  # what the node said


def test_pin_pushes_a_directory_dag_as_car(node: NodeServer, repo: IpfsRepo, tmp_path: Path) -> None:
    local = IpfsRepo(tmp_path / "local")
    folder = local.add_directory(
        {"1.json": local.add(b'{"id": 1}'), "art.bin": local.add(random.Random(4).randbytes(400_000))}
    )
    with KuboBackend(node.rpc_url, token=node.token) as kubo:
        assert not kubo.is_pinned(folder)
        receipt = kubo.pin(folder, source=local)
        assert (receipt.backend, receipt.cid) == ("kubo", folder)
        assert repo.is_pinned(folder)
        assert b"".join(repo.cat(repo.resolve(f"{folder}/1.json"))) == b'{"id": 1}'
        assert kubo.pin(folder, source=local).detail == "already pinned"
        kubo.unpin(folder)
        assert not kubo.is_pinned(folder)
        kubo.unpin(folder)  # not pinned: no error


def test_unreachable_node_is_retryable_with_address(closed_port: int) -> None:
    with KuboBackend(f"http://127.0.0.1:{closed_port}", policy=FAST) as kubo:
        with pytest.raises(BackendUnavailableError) as caught:
            kubo.add(b"x")
    assert caught.value.retryable
    assert f"127.0.0.1:{closed_port}" in caught.value.message
    assert "daemon" in (caught.value.hint or "")


def test_address_forms() -> None:
    assert to_multiaddr("http://127.0.0.1:5001") == "/ip4/127.0.0.1/tcp/5001/http"
    assert to_multiaddr("/ip4/127.0.0.1/tcp/5001") == "/ip4/127.0.0.1/tcp/5001"
    assert to_multiaddr("https://ipfs.example.org") == "/dns/ipfs.example.org/tcp/443/https"
    with pytest.raises(ChrysalisError):
        to_multiaddr("ftp://x")
