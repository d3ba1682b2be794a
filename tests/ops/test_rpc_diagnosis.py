"""Short commands against a node that misbehaves (ux.md rows 26-28): a node that accepts connections and never
answers, one that answers a web page, one that does not speak HTTP at all.

Each is a tiny socket server on 127.0.0.1 started by the test. ``status`` and ``evolve`` must say they are
waiting (one stderr line per retry, never a silent wait), give up within their short first-contact budget, and
name what is wrong: a hanging node is "did not answer in time", a web page or a non-HTTP reply is "did not answer
JSON-RPC (got ...)" with what it answered, never "cannot reach the node ... start it".
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.deployment import COLLECTION, ContractRecord, Deployment, write_abi
from agent.store import open_job_store

HTML = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"


class _Node(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.release = threading.Event()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Node

    def handle(self) -> None:
        self.server.requests += 1
        self.request.recv(65536)
        if self.server.mode == "hang":  # accepts, reads, never answers
            self.server.release.wait(30)
        elif self.server.mode == "html":
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(HTML)}\r\n\r\n"
            self.request.sendall(head.encode() + HTML)
        else:  # not HTTP at all (an SSH or database port)
            self.request.sendall(b"garbage-not-http\r\n")


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[_Node]:
    server = _Node(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def _record(workdir: Path) -> Path:
    """A deployment record for chain 31337 (the node under test answers what it answers; nothing is deployed)."""
    record = workdir / "local.json"
    Deployment(
        chain_id=31337,
        network="ethereum:local:foundry",
        contracts={
            COLLECTION: ContractRecord(address="0x" + "11" * 20, abi=write_abi(COLLECTION, [], workdir))
        },
        deploy_block=0,
        deploy_block_hash="0x" + "00" * 32,
        deployer="0x" + "22" * 20,
        agent="0x" + "33" * 20,
    ).save(record)
    return record


@pytest.fixture
def pointed(node: _Node, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings pointing at ``node``, a deployment record for it and an (empty) agent database."""
    record = _record(workdir)
    db = f"sqlite:///{workdir / 'agent.db'}"
    open_job_store(db).close()
    url = f"http://127.0.0.1:{node.server_address[1]}"
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", url)
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(record))
    monkeypatch.setenv("CHRYSALIS_DATABASE__URL", db)
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_TIMEOUT_S", "0.3")
    monkeypatch.setenv("CHRYSALIS_SUBMIT__RPC_BACKOFF_S", "0.01")
    return url


@pytest.mark.parametrize("node", ["hang"], indirect=True)
@pytest.mark.parametrize("command", [["status"], ["evolve", "1", "--from", "1"]])
def test_a_hanging_node_is_a_said_wait_then_a_clear_error(
    node: _Node, pointed: str, chrysalis, command
) -> None:
    started = time.monotonic()
    result = chrysalis(*command)
    elapsed = time.monotonic() - started
    assert result.code == 1
    assert "Traceback" not in result.err
    waits = [line for line in result.err.splitlines() if line.startswith("waiting for the node at")]
    assert len(waits) == 2, result.err  # first contact: at most 3 attempts (FIRST_CONTACT_RETRIES = 2)
    assert f"waiting for the node at {pointed}: eth_chainId timed out" in waits[0]
    assert "(attempt 1/3)" in waits[0] and "(attempt 2/3)" in waits[1]
    assert f"the node at {pointed} accepted the connection but did not answer in time" in result.text
    assert "hint: it is stuck or overloaded" in result.text
    assert "start it" not in result.text
    assert node.requests == 3
    assert elapsed < 10


@pytest.mark.parametrize(
    ("node", "got"),
    [
        ("html", "got HTTP 200 text/html: '<!doctype html><html><body><h1>Welcome to nginx!"),
        ("garbage", "got a reply that is not HTTP: 'garbage-not-http"),
    ],  # fmt: skip
    indirect=["node"],
)
@pytest.mark.parametrize("command", [["status"], ["evolve", "1", "--from", "1"]])
def test_a_node_that_does_not_speak_json_rpc_is_named_so(
    node: _Node, pointed: str, chrysalis, command, got
) -> None:
    result = chrysalis(*command)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert f"error: the node at {pointed} did not answer JSON-RPC ({got}" in result.text
    assert (
        "hint: chain.rpc_url (CHRYSALIS_CHAIN__RPC_URL) must be the node's JSON-RPC endpoint" in result.text
    )
    assert "cannot reach" not in result.text and "start it" not in result.text


def test_short_commands_have_a_short_first_contact_budget(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.pipeline.holder import FIRST_CONTACT_RETRIES, FIRST_CONTACT_TIMEOUT_S, command_rpc
    from agent.settings import load_settings

    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_TIMEOUT_S", "30")
    monkeypatch.setenv("CHRYSALIS_SUBMIT__RPC_RETRIES", "6")
    settings = load_settings()
    first = command_rpc(settings, first_contact=True)
    rest = command_rpc(settings)
    assert dict(first.w3.provider.get_request_kwargs())["timeout"] == FIRST_CONTACT_TIMEOUT_S  # type: ignore[attr-defined]
    assert first.retries == FIRST_CONTACT_RETRIES
    assert dict(rest.w3.provider.get_request_kwargs())["timeout"] == 30  # type: ignore[attr-defined]
    assert rest.retries == 6


def test_a_refused_connection_is_still_start_it(workdir: Path, pointed_refused: str, chrysalis) -> None:
    result = chrysalis("evolve", "1", "--from", "1")
    assert result.code == 1
    assert f"cannot reach the node at {pointed_refused}: connection refused" in result.text
    assert "hint: start it" in result.text


@pytest.fixture
def pointed_refused(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    record = _record(workdir)
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", url)
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(record))
    monkeypatch.setenv("CHRYSALIS_SUBMIT__RPC_RETRIES", "0")
    return url
