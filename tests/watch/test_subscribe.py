"""The WebSocket subscription only wakes the poller: early when it works, and nothing lost when it drops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest

from agent.metrics import REGISTRY
from agent.watch.watcher import Watcher
from tests.support.waiting import eventually
from tests.watch.conftest import EmitterChain, Recorder, TcpRelay, WatcherFactory

pytestmark = pytest.mark.anvil


def _connects() -> float:
    return REGISTRY.get_sample_value("chrysalis_watch_ws_connects_total") or 0.0


@pytest.fixture
def running() -> Iterator[Callable[[Watcher, Recorder], threading.Thread]]:
    started: list[tuple[Watcher, threading.Thread]] = []

    def start(watcher: Watcher, recorder: Recorder) -> threading.Thread:
        thread = threading.Thread(target=watcher.run, args=(recorder,), daemon=True)
        thread.start()
        started.append((watcher, thread))
        return thread

    yield start
    for watcher, thread in started:
        watcher.stop()
        thread.join(10)
        assert not thread.is_alive(), "the watcher did not stop"


def test_new_heads_wake_the_poller_long_before_its_interval(
    chain: EmitterChain,
    make_watcher: WatcherFactory,
    running: Callable[[Watcher, Recorder], threading.Thread],
) -> None:
    seen = Recorder()
    connects = _connects()
    watcher = make_watcher(poll_interval_s=30.0, ws_url=chain.ws_url)
    running(watcher, seen)
    eventually(lambda: seen.of("block"), what="a first poll")  # the first poll runs at once
    eventually(lambda: _connects() == connects + 1, what="the subscription")  # then the subscription opens
    started = time.monotonic()
    chain.request(token_id=3)
    eventually(lambda: len(seen.logs()) == 1, 5.0)
    assert time.monotonic() - started < 5.0, "woken by the interval (30 s), not by the subscription"


def test_a_dropped_socket_loses_nothing_and_reconnects(
    chain: EmitterChain,
    make_watcher: WatcherFactory,
    running: Callable[[Watcher, Recorder], threading.Thread],
) -> None:
    relay = TcpRelay(urlparse(chain.url).port or 0)
    try:
        seen = Recorder()
        connects = _connects()
        watcher = make_watcher(poll_interval_s=0.5, ws_url=relay.url)
        running(watcher, seen)
        eventually(lambda: _connects() == connects + 1, what="the subscription")
        chain.request(token_id=1)
        eventually(lambda: len(seen.logs()) == 1, what="the first log")

        relay.cut()  # the socket drops, and reconnecting fails for a while
        for token in (2, 3, 4):
            chain.request(token_id=token)
        eventually(lambda: len(seen.logs()) == 4, what="timed polls to carry on without the socket")

        relay.resume()
        eventually(lambda: _connects() == connects + 2, what="the subscription to reconnect")
        chain.request(token_id=5)
        eventually(lambda: len(seen.logs()) == 5, what="the fifth log")
        logs = seen.logs()
        assert [e.args["tokenId"] for e in logs] == [1, 2, 3, 4, 5]
        assert len({e.key for e in logs}) == 5
    finally:
        relay.close()


def test_the_run_loop_rides_out_an_rpc_outage(
    chain: EmitterChain,
    make_watcher: WatcherFactory,
    running: Callable[[Watcher, Recorder], threading.Thread],
    proxy_factory: Callable[..., object],
) -> None:
    proxy = proxy_factory()
    seen = Recorder()
    watcher = make_watcher(rpc_url=proxy.url, poll_interval_s=0.1, retries=0, max_error_backoff_s=0.3)
    errors = (
        REGISTRY.get_sample_value("chrysalis_watch_poll_errors_total", {"stream": chain.emitter.address}) or 0
    )
    proxy.fail_next = [(503, {})] * 6  # type: ignore[attr-defined]
    chain.request(token_id=6)
    running(watcher, seen)
    eventually(lambda: len(seen.logs()) == 1, 15)
    assert proxy.fail_next == []  # type: ignore[attr-defined]
    after = REGISTRY.get_sample_value("chrysalis_watch_poll_errors_total", {"stream": chain.emitter.address})
    assert after == errors + 6, "each failed poll is counted (before the chain id is known, by address)"
