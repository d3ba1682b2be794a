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

from agent.devnet import start_anvil
from agent.jobs.db import open_database
from agent.watch.cursor_sql import SqlCursorStore
from agent.watch.events import WatchEvent
from agent.watch.rpc import RpcClient
from agent.watch.watcher import WatchConfig, Watcher
from tests.jobs.dbs import BACKENDS, database_url
from tests.support.rpc_proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
EMITTER = json.loads((Path(__file__).with_name("EventEmitter.json")).read_text())


class Chain:
    """anvil, its emitter contract, and the moves the tests need."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws_url = url.replace("http://", "ws://")
        self.w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
        self.sender = Web3.to_checksum_address(self.w3.eth.accounts[0])
        factory = self.w3.eth.contract(abi=EMITTER["abi"], bytecode=EMITTER["bytecode"])
        receipt = self._wait(factory.constructor().transact({"from": self.sender}))
        self.emitter: Contract = self.w3.eth.contract(address=receipt["contractAddress"], abi=EMITTER["abi"])
        self.deploy_block = int(receipt["blockNumber"])
        self.chain_id = self.w3.eth.chain_id

    def rpc(self, method: str, *params: Any) -> Any:
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")

    def _wait(self, tx_hash: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1
        return receipt

    @property
    def head(self) -> int:
        return self.w3.eth.block_number

    def request(self, token_id: int = 1, stage: int = 1) -> Any:
        """One EvolutionRequested in a new block; returns the receipt."""
        seed = Web3.keccak(text=f"{token_id}:{stage}")
        return self._wait(
            self.emitter.functions.request(token_id, stage, seed).transact({"from": self.sender})
        )

    def request_many(self, count: int, token_id: int = 9) -> Any:
        return self._wait(self.emitter.functions.requestMany(token_id, count).transact({"from": self.sender}))

    def ping(self, n: int, note: str) -> Any:
        return self._wait(self.emitter.functions.ping(n, note).transact({"from": self.sender}))

    def mine(self, blocks: int = 1) -> int:
        for _ in range(blocks):
            self.rpc("evm_mine")
        return self.head

    def block_hash(self, number: int) -> str:
        return "0x" + bytes(self.w3.eth.get_block(number)["hash"]).hex()

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
def anvil_url() -> Iterator[str]:
    """A fresh anvil on a free port, with a throwaway HOME; stopped afterwards."""
    with start_anvil("--accounts", "2") as node:
        yield node.url


@pytest.fixture
def chain(anvil_url: str) -> Chain:
    return Chain(anvil_url)


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
def make_watcher(chain: Chain, sqlite_url: str) -> Iterator[WatcherFactory]:
    """``make_watcher(rpc_url=..., db_url=..., **WatchConfig fields)``: a watcher of the emitter."""
    engines = []

    def make(
        *, rpc_url: str | None = None, db_url: str | None = None, retries: int = 2, **cfg: Any
    ) -> Watcher:
        engine = open_database(db_url or sqlite_url)
        engines.append(engine)
        cfg.setdefault("finality_depth", 10)
        cfg.setdefault("poll_interval_s", 0.2)
        cfg.setdefault("abi", EMITTER["abi"])
        config = WatchConfig(address=chain.emitter.address, start_block=chain.deploy_block, **cfg)
        rpc = RpcClient(rpc_url or chain.url, retries=retries, backoff_s=0.01, timeout_s=5)
        return Watcher(rpc, SqlCursorStore(engine), config)

    yield make
    for engine in engines:
        engine.dispose()


Proxy = FaultProxy


@pytest.fixture
def proxy_factory(chain: Chain) -> Iterator[Callable[..., Proxy]]:
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
