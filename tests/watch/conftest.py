"""A real anvil per test with the EventEmitter contract (tests/watch/EventEmitter.sol, precompiled into
EventEmitter.json by compile_emitter.js), plus local proxies that misbehave like real providers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from agent.devnet import AnvilNode, start_anvil
from agent.store import Database
from agent.watch.cursor_sql import SqlCursorStore
from agent.watch.events import WatchEvent
from agent.watch.rpc import RpcClient
from agent.watch.watcher import WatchConfig, Watcher
from tests.support.databases import BACKENDS, database_url
from tests.support.devchain import DevChain
from tests.support.rpc_proxy import FaultProxy

EMITTER = json.loads((Path(__file__).with_name("EventEmitter.json")).read_text())


class EmitterChain(DevChain):
    """anvil with the emitter contract deployed, and the moves the tests need."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sender = self.admin
        factory = self.w3.eth.contract(abi=EMITTER["abi"], bytecode=EMITTER["bytecode"])
        receipt = self.transact(factory.constructor())
        self.emitter: Contract = self.w3.eth.contract(address=receipt["contractAddress"], abi=EMITTER["abi"])
        self.deploy_block = int(receipt["blockNumber"])

    def request(self, token_id: int = 1, stage: int = 1) -> TxReceipt:
        """One EvolutionRequested in a new block; returns the receipt."""
        seed = Web3.keccak(text=f"{token_id}:{stage}")
        return self.transact(self.emitter.functions.request(token_id, stage, seed))

    def request_many(self, count: int, token_id: int = 9) -> TxReceipt:
        return self.transact(self.emitter.functions.requestMany(token_id, count))

    def ping(self, n: int, note: str) -> TxReceipt:
        return self.transact(self.emitter.functions.ping(n, note))

    def reorg(self, depth: int, requests_at: dict[int, int] | None = None) -> None:
        """Replace the last ``depth`` blocks; ``requests_at`` {block offset: token id} adds requests to them."""
        txs = []
        for offset, token_id in (requests_at or {}).items():
            data = self.emitter.encode_abi("request", args=[token_id, 7, b"\x07" * 32])
            txs.append(
                [{"from": self.sender, "to": self.emitter.address, "data": data, "gas": hex(200_000)}, offset]
            )
        self.rpc("anvil_reorg", depth, txs)


@pytest.fixture
def anvil(anvil_args: tuple[str, ...]) -> Iterator[AnvilNode]:
    """A fresh anvil per test (the tests reorganise it, stop it, and count its blocks); stopped afterwards."""
    with start_anvil(*anvil_args) as node:
        yield node


@pytest.fixture
def chain(anvil: AnvilNode) -> EmitterChain:
    return EmitterChain(anvil.url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chrysalis.db'}"


@pytest.fixture(params=BACKENDS)
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


class Recorder:
    """A handler that keeps every event it was given."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: WatchEvent) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str) -> list[Any]:
        with self.lock:
            return [e for e in self.events if e.kind == kind]

    def logs(self) -> list[Any]:
        return [ev for block in self.of("block") for ev in block.events]


WatcherFactory = Callable[..., Watcher]


@pytest.fixture
def make_watcher(chain: EmitterChain, sqlite_url: str) -> Iterator[WatcherFactory]:
    """``make_watcher(rpc_url=..., db_url=..., **WatchConfig fields)``: a watcher of the emitter."""
    databases: list[Database] = []

    def make(
        *, rpc_url: str | None = None, db_url: str | None = None, retries: int = 2, **cfg: Any
    ) -> Watcher:
        db = Database.open(db_url or sqlite_url)
        databases.append(db)
        cfg.setdefault("finality_depth", 10)
        cfg.setdefault("poll_interval_s", 0.2)
        cfg.setdefault("abi", EMITTER["abi"])
        config = WatchConfig(address=chain.emitter.address, start_block=chain.deploy_block, **cfg)
        rpc = RpcClient(rpc_url or chain.url, retries=retries, backoff_s=0.01, timeout_s=5)
        return Watcher(rpc, SqlCursorStore(db), config)

    yield make
    for db in databases:
        db.close()


Proxy = FaultProxy


@pytest.fixture
def proxy_factory(chain: EmitterChain) -> Iterator[Callable[..., Proxy]]:
    proxies: list[Proxy] = []

    def make(**kw: Any) -> Proxy:
        proxies.append(Proxy(chain.url, **kw))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


class TcpRelay:
    """A TCP relay to anvil whose connections the test can cut (and refuse) to drop a WebSocket."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.accepting = threading.Event()
        self.accepting.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.accepting.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every open connection (and refuse new ones until :meth:`resume`)."""
        self.accepting.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def resume(self) -> None:
        self.accepting.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()
