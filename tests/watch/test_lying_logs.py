"""Issue 11, anomaly 2: ``eth_getLogs`` answering ``[]`` for a block that holds a request once lost the request for
ever. The watcher now checks each followed header's ``logsBloom`` and asks again, and re-scans blocks when they
are finalized. Real anvil behind the fault proxy."""

from __future__ import annotations

from collections.abc import Callable

import eth_bloom
import pytest
from eth_utils import keccak

from agent.metrics import REGISTRY
from agent.watch.bloom import bloom_has, bloom_of, may_hold
from agent.watch.watcher import BLOOM_RECHECKS
from tests.support.rpc_proxy import Faults
from tests.watch.conftest import EmitterChain, Proxy, Recorder, WatcherFactory

pytestmark = pytest.mark.anvil

REQUESTED = "0x" + keccak(text="EvolutionRequested(uint256,uint256,address,uint32,bytes32)").hex()


def _recovered(watcher_stream: str, how: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "chrysalis_watch_logs_recovered_total", {"stream": watcher_stream, "how": how}
        )
        or 0.0
    )


def test_the_bloom_matches_ethereums_and_the_nodes_headers(chain: EmitterChain) -> None:
    items = [bytes.fromhex("ab" * 20), keccak(text="x"), keccak(text="y")]
    assert bloom_of(items) == int(eth_bloom.BloomFilter.from_iterable(items)).to_bytes(256, "big")
    assert all(bloom_has(bloom_of(items), i) for i in items)
    assert not bloom_has(bloom_of(items[:1]), keccak(text="not there"))

    receipt = chain.request(token_id=3)
    header = chain.w3.eth.get_block(receipt["blockNumber"])
    assert may_hold(bytes(header["logsBloom"]), [chain.emitter.address], [REQUESTED])
    empty = chain.w3.eth.get_block(chain.mine(1))
    assert not may_hold(bytes(empty["logsBloom"]), [chain.emitter.address], [REQUESTED])
    with pytest.raises(ValueError, match="256 bytes"):
        bloom_has(b"\0" * 8, items[0])


def test_an_empty_answer_for_a_block_whose_bloom_holds_a_request_is_asked_again(
    chain: EmitterChain, make_watcher: WatcherFactory, proxy_factory: Callable[..., Proxy]
) -> None:
    proxy = proxy_factory()
    watcher = make_watcher(rpc_url=proxy.url, finality_depth=10)
    seen = Recorder()
    watcher.poll(seen)
    chain.request(token_id=1)
    before = _recovered(watcher.stream, "bloom")
    proxy.empty_logs_next = 1  # the range answer leaves the request out
    watcher.poll(seen)
    assert [e.args["tokenId"] for e in seen.logs()] == [1]
    assert proxy.injected["empty_logs"] == 1
    assert _recovered(watcher.stream, "bloom") == before + 1


def test_a_log_missed_by_every_answer_while_following_is_delivered_when_its_block_is_finalized(
    chain: EmitterChain, make_watcher: WatcherFactory, proxy_factory: Callable[..., Proxy]
) -> None:
    proxy = proxy_factory()
    watcher = make_watcher(rpc_url=proxy.url, finality_depth=4)
    seen = Recorder()
    watcher.poll(seen)
    chain.request(token_id=7)
    proxy.empty_logs_next = 1 + BLOOM_RECHECKS  # the first answer and every re-ask lie
    watcher.poll(seen)
    assert seen.logs() == []  # missed for now
    before = _recovered(watcher.stream, "rescan")
    chain.mine(5)
    watcher.poll(seen)
    recovered = [b for b in seen.of("block") if b.recovered]
    assert [e.args["tokenId"] for b in recovered for e in b.events] == [7]
    assert [e.args["tokenId"] for e in seen.logs()] == [7]  # once
    assert _recovered(watcher.stream, "rescan") == before + 1
    finals = seen.of("finalize")
    assert finals and finals[-1].block.number >= recovered[0].block.number
    # the recovered block came before the Finalize that covers it
    assert seen.events.index(recovered[0]) < seen.events.index(finals[-1])


def test_random_empty_answers_lose_no_request_and_deliver_none_twice(
    chain: EmitterChain, make_watcher: WatcherFactory, proxy_factory: Callable[..., Proxy]
) -> None:
    proxy = proxy_factory(faults=Faults(seed=11, empty_logs=0.35))
    watcher = make_watcher(rpc_url=proxy.url, finality_depth=3)
    seen = Recorder()
    for token_id in range(1, 21):
        chain.request(token_id=token_id)
        watcher.poll(seen)
    chain.mine(4)
    watcher.poll(seen)
    assert proxy.injected["empty_logs"] >= 5  # the faults fired
    assert sorted(e.args["tokenId"] for e in seen.logs()) == list(range(1, 21))
