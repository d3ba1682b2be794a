"""Shared fixtures for the IPFS layer: repos, a running embedded node, the test pinning service."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from tests.ipfs.pinning_test_server import PinningTestServer

# Kubo's CIDs for "hello world\n" (see data/unixfs-cids.json).
HELLO = b"hello world\n"
HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
HELLO_V1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


@pytest.fixture
def repo(tmp_path: Path) -> IpfsRepo:
    """An on-disk repo in a temporary directory (no fsync: it is thrown away)."""
    return IpfsRepo(tmp_path / "repo", sync=False)


@pytest.fixture
def node(repo: IpfsRepo) -> Iterator[NodeServer]:
    """The embedded node serving ``repo`` on a free 127.0.0.1 port."""
    with NodeServer(repo) as server:
        yield server


@pytest.fixture
def gateway(node: NodeServer) -> Iterator[httpx.Client]:
    """An httpx client pointed at the node (keep-alive)."""
    with httpx.Client(base_url=node.url, timeout=30) as client:
        yield client


@pytest.fixture
def pinning_server() -> Iterator[PinningTestServer]:
    """The test pinning service (token ``test-token``) with its own in-memory repo."""
    with PinningTestServer() as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
