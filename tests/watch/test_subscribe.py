"""The WebSocket subscription only wakes the poller: early when it works, and nothing lost when it drops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest

from agent.metrics import REGISTRY
from agent.watch.watcher import Watcher
from tests.watch.conftest import Chain, Recorder, TcpRelay, WatcherFactory

pytestmark = pytest.mark.anvil


def _connects() -> float:
    return REGISTRY.get_sample_value("chrysalis_watch_ws_connects_total") or 0.0


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


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
    chain: Chain, make_watcher: WatcherFactory, running: Callable[[Watcher, Recorder], threading.Thread]
) -> None:
    seen = Recorder()
    connects = _connects()
    watcher = make_watcher(poll_interval_s=30.0, ws_url=chain.ws_url)
    running(watcher, seen)
    assert _wait_for(lambda: bool(seen.of("block")))  # the first poll runs at once
    assert _wait_for(lambda: _connects() == connects + 1)  # then the subscription opens
    started = time.monotonic()
    chain.request(token_id=3)
    assert _wait_for(lambda: len(seen.logs()) == 1, timeout=5.0)
    assert time.monotonic() - started < 5.0, "woken by the interval (30 s), not by the subscription"


def test_a_dropped_socket_loses_nothing_and_reconnects(
    chain: Chain, make_watcher: WatcherFactory, running: Callable[[Watcher, Recorder], threading.Thread]
) -> None:
    relay = TcpRelay(urlparse(chain.url).port or 0)
    try:
        seen = Recorder()
        connects = _connects()
        watcher = make_watcher(poll_interval_s=0.5, ws_url=relay.url)
        running(watcher, seen)
        assert _wait_for(lambda: _connects() == connects + 1)
        chain.request(token_id=1)
        assert _wait_for(lambda: len(seen.logs()) == 1)

        relay.cut()  # the socket drops, and reconnecting fails for a while
        for token in (2, 3, 4):
            chain.request(token_id=token)
        assert _wait_for(lambda: len(seen.logs()) == 4), "timed polls must carry on without the socket"

        relay.resume()
        assert _wait_for(lambda: _connects() == connects + 2), "the subscription did not reconnect"
        chain.request(token_id=5)
        assert _wait_for(lambda: len(seen.logs()) == 5)
        logs = seen.logs()
        assert [e.args["tokenId"] for e in logs] == [1, 2, 3, 4, 5]
        assert len({e.key for e in logs}) == 5
    finally:
        relay.close()


def test_the_run_loop_rides_out_an_rpc_outage(
    chain: Chain,
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
    assert _wait_for(lambda: len(seen.logs()) == 1, timeout=15)
    assert proxy.fail_next == []  # type: ignore[attr-defined]
    after = REGISTRY.get_sample_value("chrysalis_watch_poll_errors_total", {"stream": chain.emitter.address})
    assert after == errors + 6, "each failed poll is counted (before the chain id is known, by address)"
