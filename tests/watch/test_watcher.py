"""The watcher on a real anvil: decoding, ranges, restarts, confirmations, finality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from web3 import Web3

from agent.domain import ChainEvent, LogKey
from agent.errors import ConfigError
from agent.watch.events import Finalize, NewBlock
from agent.watch.logs import LogDecoder
from tests.watch.conftest import EmitterChain, Recorder, WatcherFactory

pytestmark = pytest.mark.anvil

ROOT = Path(__file__).resolve().parents[2]


def _keys(events: list[ChainEvent]) -> list[LogKey]:
    return [e.key for e in events]


def test_logs_arrive_decoded_in_chain_order_with_their_keys(
    chain: EmitterChain, make_watcher: WatcherFactory
) -> None:
    first = chain.request(token_id=5, stage=2)
    chain.mine(3)
    chain.ping(42, "hello, chrysalis")
    many = chain.request_many(3, token_id=8)
    seen = Recorder()
    make_watcher().poll(seen)

    logs = seen.logs()
    assert [e.name for e in logs] == ["EvolutionRequested", "Ping"] + ["EvolutionRequested"] * 3
    request = logs[0]
    assert request.args == {
        "requestId": 1,
        "tokenId": 5,
        "requester": chain.sender,
        "stage": 2,
        "seed": "0x" + bytes(Web3.keccak(text="5:2")).hex(),
    }
    assert request.key == LogKey(chain.chain_id, "0x" + bytes(first["transactionHash"]).hex(), 0,
                                 "0x" + bytes(first["blockHash"]).hex())  # fmt: skip
    assert request.block_number == first["blockNumber"] and request.address == chain.emitter.address
    assert logs[1].args == {"n": 42, "note": "hello, chrysalis"}
    assert [e.args["requestId"] for e in logs[2:]] == [2, 3, 4]
    assert [e.key.log_index for e in logs[2:]] == [0, 1, 2]
    assert {e.key.block_hash for e in logs[2:]} == {"0x" + bytes(many["blockHash"]).hex()}
    assert len(set(_keys(logs))) == len(logs)
    blocks = [b.block.number for b in seen.of("block")]
    assert blocks == sorted(blocks) and blocks[-1] == chain.head  # every block up to the head was reported


def test_an_event_filter_keeps_only_the_named_events(
    chain: EmitterChain, make_watcher: WatcherFactory
) -> None:
    chain.ping(1, "skip me")
    chain.request()
    seen = Recorder()
    make_watcher(events=["EvolutionRequested"]).poll(seen)
    assert [e.name for e in seen.logs()] == ["EvolutionRequested"]
    with pytest.raises(ValueError, match="Nope"):
        LogDecoder([], 1, events=["Nope"])


def test_the_collection_abi_decodes_evolution_requests(
    chain: EmitterChain, make_watcher: WatcherFactory
) -> None:
    manifest = ROOT / ".build" / "__local__.json"
    if not manifest.is_file():
        pytest.skip(f"{manifest} is missing: run `make setup` to compile the contracts")
    collection = json.loads(manifest.read_text())["contractTypes"]["LivingCollection"]["abi"]
    chain.request(token_id=3, stage=4)
    seen = Recorder()
    make_watcher(abi=collection, events=["EvolutionRequested"]).poll(seen)
    (event,) = seen.logs()
    assert event.name == "EvolutionRequested" and event.args["tokenId"] == 3 and event.args["stage"] == 4


def test_catch_up_in_ranges_then_resume_after_a_restart_without_loss_or_duplicates(
    chain: EmitterChain, make_watcher: WatcherFactory, any_db_url: str
) -> None:
    expected = []
    for i in range(6):
        expected.append(chain.request(token_id=i)["transactionHash"])
        chain.mine(2)
    first = Recorder()
    watcher = make_watcher(db_url=any_db_url, finality_depth=3, max_range=4)
    watcher.poll(first)
    assert watcher.state is not None and watcher.state.tip.number == chain.head
    assert first.of("finalize")[-1].block.number == chain.head - 3

    # More history while the watcher is down (a restart: a new watcher over the same database).
    for i in range(6, 10):
        expected.append(chain.request(token_id=i)["transactionHash"])
    chain.request_many(2)
    second = Recorder()
    restarted = make_watcher(db_url=any_db_url, finality_depth=3, max_range=4)
    assert restarted.state == watcher.state
    restarted.poll(second)
    restarted.poll(second)  # nothing new: nothing re-delivered

    logs = first.logs() + second.logs()
    assert [e.args["tokenId"] for e in logs] == list(range(10)) + [9, 9]
    assert len(set(_keys(logs))) == len(logs) == 12
    assert ["0x" + bytes(h).hex() for h in expected] == [e.key.tx_hash for e in logs[:10]]
    assert second.logs()[0].args["tokenId"] == 6
    numbers = [b.block.number for b in first.of("block") + second.of("block")]
    assert numbers == sorted(set(numbers)), "a block was reported twice or out of order"


def test_a_handler_that_fails_gets_the_same_block_again_and_nothing_else(
    chain: EmitterChain, make_watcher: WatcherFactory
) -> None:
    chain.request(token_id=1)
    chain.request(token_id=2)
    delivered: list[int] = []

    def flaky(event: object) -> None:
        if isinstance(event, NewBlock):
            for e in event.events:
                if e.args["tokenId"] == 2 and -2 not in delivered:
                    delivered.append(-2)
                    raise RuntimeError("handler crashed")
                delivered.append(e.args["tokenId"])

    watcher = make_watcher()
    with pytest.raises(RuntimeError):
        watcher.poll(flaky)
    make_watcher().poll(flaky)  # a restarted process
    assert delivered == [1, -2, 2]


def test_confirmations_hold_logs_back_until_they_are_buried(
    chain: EmitterChain, make_watcher: WatcherFactory
) -> None:
    seen = Recorder()
    watcher = make_watcher(confirmations=3)
    chain.mine(5)
    receipt = chain.request(token_id=4)
    watcher.poll(seen)
    assert seen.logs() == []
    assert watcher.state is not None and watcher.state.tip.number == receipt["blockNumber"] - 3
    chain.mine(2)
    watcher.poll(seen)
    assert seen.logs() == []
    chain.mine(1)
    watcher.poll(seen)
    assert [e.args["tokenId"] for e in seen.logs()] == [4]
    assert seen.of("block")[-1].block.number == receipt["blockNumber"] == chain.head - 3


def test_blocks_are_finalized_as_they_sink_below_the_finality_depth(
    chain: EmitterChain, make_watcher: WatcherFactory
) -> None:
    chain.mine(8)
    seen = Recorder()
    watcher = make_watcher(finality_depth=4)
    watcher.poll(seen)
    final = seen.of("finalize")
    assert isinstance(final[-1], Finalize) and final[-1].block.number == chain.head - 4
    assert final[-1].block.hash == chain.block_hash(chain.head - 4)
    state = watcher.state
    assert state is not None and state.finalized == final[-1].block
    assert [b.number for b in state.window] == list(range(chain.head - 4, chain.head + 1))
    chain.mine(2)
    watcher.poll(seen)
    assert seen.of("finalize")[-1].block.number == chain.head - 4
    assert watcher.state.window[0].number == chain.head - 4  # type: ignore[union-attr]


def test_a_cursor_from_another_chain_is_refused(chain: EmitterChain, make_watcher: WatcherFactory) -> None:
    with pytest.raises(ConfigError, match="serves chain 31337"):
        make_watcher(chain_id=1).poll(Recorder())


def test_the_watcher_is_configured_from_the_chain_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.settings import Settings
    from agent.watch.rpc import RpcClient
    from agent.watch.watcher import WatchConfig

    monkeypatch.setenv("CHRYSALIS_CHAIN__FINALITY_DEPTH", "12")
    monkeypatch.setenv("CHRYSALIS_CHAIN__WS_URL", "ws://127.0.0.1:8545")
    monkeypatch.setenv("CHRYSALIS_DATABASE__URL", "postgresql+psycopg2://agent@db/chrysalis")
    settings = Settings()
    config = WatchConfig.from_settings(
        settings.chain, address="0x" + "11" * 20, abi=[], start_block=7, chain_id=5
    )
    assert (config.finality_depth, config.ws_url, config.start_block, config.chain_id) == (
        12, "ws://127.0.0.1:8545", 7, 5,
    )  # fmt: skip
    assert config.max_range == settings.chain.max_block_range and config.confirmations == 0
    assert RpcClient.from_settings(settings.chain).url == settings.chain.rpc_url
    assert settings.database.url == "postgresql+psycopg2://agent@db/chrysalis"
    with pytest.raises(ConfigError, match="finality_depth must be >= 0"):
        WatchConfig(address="0x", abi=[], start_block=0, finality_depth=-1)
