"""The RPC client and adaptive ranges against providers that refuse, fail, rate-limit or are not there."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from agent.devnet import free_port
from agent.errors import BackendUnavailableError
from agent.jsonrpc import RpcUnavailableError
from agent.metrics import REGISTRY
from agent.watch.errors import RpcError, RpcRateLimitedError, UnsplittableRangeError
from agent.watch.logs import AdaptiveRange
from agent.watch.rpc import RpcClient
from tests.watch.conftest import EmitterChain, Proxy, Recorder, WatcherFactory

pytestmark = pytest.mark.anvil


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("style", ["-32005", "range", "413", "unknown"])
def test_refused_ranges_are_halved_until_the_provider_accepts_them(
    chain: EmitterChain, make_watcher: WatcherFactory, proxy_factory: Callable[..., Proxy], style: str
) -> None:
    for i in range(12):
        chain.request(token_id=i)
        chain.mine(2)
    proxy = proxy_factory(max_span=5, style=style)
    halvings = _metric("chrysalis_watch_range_halvings_total")
    seen = Recorder()
    watcher = make_watcher(rpc_url=proxy.url, finality_depth=3, max_range=64)
    watcher.poll(seen)
    assert [e.args["tokenId"] for e in seen.logs()] == list(range(12))
    assert proxy.refused[0] == (chain.deploy_block, chain.head - 3)  # everything final, in one request
    spans = [hi - lo + 1 for lo, hi in proxy.refused[:3]]
    assert spans[1] == spans[0] // 2 and spans[2] == spans[1] // 2
    assert all(hi - lo + 1 <= 5 for lo, hi in proxy.served)
    covered = sorted(proxy.served)
    assert covered[0][0] == chain.deploy_block and all(
        a[1] + 1 == b[0] for a, b in itertools.pairwise(covered)
    )
    assert _metric("chrysalis_watch_range_halvings_total") > halvings
    assert watcher.span.size <= 5


def test_the_range_grows_back_slowly_after_successes() -> None:
    span = AdaptiveRange(max_size=100, grow_after=2, growth=1.5)
    assert span.refused(100) and span.size == 50
    assert span.refused(50) and span.size == 25
    span.succeeded()
    assert span.size == 25
    span.succeeded()
    assert span.size == 37
    for _ in range(20):
        span.succeeded()
    assert span.size == 100
    tiny = AdaptiveRange(max_size=4)
    assert tiny.refused(2) and tiny.size == 1 and not tiny.refused(1)


def test_a_single_block_that_is_refused_is_a_permanent_error(
    chain: EmitterChain, make_watcher: WatcherFactory, proxy_factory: Callable[..., Proxy]
) -> None:
    chain.request()
    proxy = proxy_factory(max_span=0)
    with pytest.raises(UnsplittableRangeError, match="single block"):
        make_watcher(rpc_url=proxy.url).poll(Recorder())


def test_transient_5xx_and_garbage_are_retried_and_counted(
    chain: EmitterChain, proxy_factory: Callable[..., Proxy]
) -> None:
    proxy = proxy_factory()
    before_5xx = _metric(
        "chrysalis_rpc_errors_total", client="watch", method="eth_blockNumber", kind="http_5xx"
    )
    before_retries = _metric("chrysalis_rpc_retries_total", client="watch", method="eth_blockNumber")
    proxy.fail_next = [(502, {}), (503, {})]
    rpc = RpcClient(proxy.url, retries=3, backoff_s=0.01)
    assert rpc.block_number() == chain.head
    assert (
        _metric("chrysalis_rpc_errors_total", client="watch", method="eth_blockNumber", kind="http_5xx")
        == before_5xx + 2
    )
    assert (
        _metric("chrysalis_rpc_retries_total", client="watch", method="eth_blockNumber") == before_retries + 2
    )
    proxy.fail_next = [(500, {})] * 3
    with pytest.raises(RpcUnavailableError, match="HTTP 500"):
        RpcClient(proxy.url, retries=2, backoff_s=0.01).block_number()


def test_rate_limits_wait_for_retry_after(chain: EmitterChain, proxy_factory: Callable[..., Proxy]) -> None:
    proxy = proxy_factory()
    slept: list[float] = []
    proxy.fail_next = [(429, {"Retry-After": "2"})]
    rpc = RpcClient(proxy.url, retries=2, backoff_s=0.01, sleep=slept.append)
    assert rpc.chain_id() == chain.chain_id
    assert slept == [2.0]
    proxy.fail_next = [(429, {"Retry-After": "1"})] * 3
    with pytest.raises(RpcRateLimitedError) as err:
        rpc.chain_id()
    assert err.value.retry_after == 1.0 and err.value.retryable


def test_client_side_rate_limit_spaces_requests(chain: EmitterChain) -> None:
    import time

    rpc = RpcClient(chain.url, max_rps=20)
    started = time.monotonic()
    for _ in range(6):
        rpc.block_number()
    assert time.monotonic() - started >= 0.25


def test_an_http_4xx_is_not_retried(chain: EmitterChain, proxy_factory: Callable[..., Proxy]) -> None:
    proxy = proxy_factory()
    proxy.fail_next = [(401, {})]
    with pytest.raises(RpcError, match="401"):
        RpcClient(proxy.url, retries=3, backoff_s=0.01).block_number()
    assert proxy.methods == ["eth_blockNumber"]


def test_an_unreachable_rpc_is_a_backend_unavailable_error_naming_the_url(
    make_watcher: WatcherFactory,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    before = _metric("chrysalis_rpc_errors_total", client="watch", method="eth_chainId", kind="connection")
    with pytest.raises(BackendUnavailableError) as err:
        make_watcher(rpc_url=url, retries=1).poll(Recorder())
    assert isinstance(err.value, RpcUnavailableError) and err.value.url == url
    assert url in str(err.value) and "chain.rpc_url" in (err.value.hint or "")
    assert "Connection refused" in str(err.value) and err.value.attempts == 2
    assert (
        _metric("chrysalis_rpc_errors_total", client="watch", method="eth_chainId", kind="connection")
        == before + 2
    )


@pytest.mark.parametrize("client", ["watch", "submit"])
def test_both_rpc_clients_share_one_retry_policy_and_one_error_counter(
    chain: EmitterChain, proxy_factory: Callable[..., Proxy], client: str
) -> None:
    """The watcher's RpcClient and the submit stage's ChainRpc retry through agent.jsonrpc: the same failure is
    classified, waited for (Retry-After) and counted the same way, under their own `client` label."""
    from agent.submit.rpc import ChainRpc

    proxy = proxy_factory()
    slept: list[float] = []
    if client == "watch":
        rpc = RpcClient(proxy.url, retries=2, backoff_s=0.01, sleep=slept.append)
    else:
        rpc = ChainRpc.connect(proxy.url, retries=2, backoff_s=0.01, sleep=slept.append)
    limited = _metric(
        "chrysalis_rpc_errors_total", client=client, method="eth_blockNumber", kind="rate_limited"
    )
    failing = _metric("chrysalis_rpc_errors_total", client=client, method="eth_blockNumber", kind="http_5xx")
    proxy.fail_next = [(429, {"Retry-After": "2"}), (503, {})]
    assert rpc.block_number() == chain.head
    assert slept[0] == 2.0 and slept[1] < 1  # the provider's Retry-After, then the short back-off
    assert (
        _metric("chrysalis_rpc_errors_total", client=client, method="eth_blockNumber", kind="rate_limited")
        == limited + 1
    )
    assert (
        _metric("chrysalis_rpc_errors_total", client=client, method="eth_blockNumber", kind="http_5xx")
        == failing + 1
    )


def test_bare_web3_calls_on_the_client_are_retried_once_by_one_loop(
    chain: EmitterChain, proxy_factory: Callable[..., Proxy]
) -> None:
    """`rpc.w3` retries by itself (the oracles call it directly); inside `rpc.call`, and under a ChainRpc over the
    same web3, the provider sends once and the outer loop retries: never both, never counted twice."""
    from agent.submit.rpc import ChainRpc

    proxy = proxy_factory()
    slept: list[float] = []
    rpc = RpcClient(proxy.url, retries=3, backoff_s=0.01, sleep=slept.append)
    retries = _metric("chrysalis_rpc_retries_total", client="watch", method="eth_blockNumber")
    errors = _metric("chrysalis_rpc_errors_total", client="watch", method="eth_blockNumber", kind="http_5xx")

    proxy.fail_next = [(502, {}), (429, {"Retry-After": "3"})]
    assert rpc.w3.eth.block_number == chain.head  # a bare web3 call
    assert proxy.methods == ["eth_blockNumber"] * 3 and slept[1] == 3.0

    proxy.fail_next = [(503, {}), (503, {})]
    assert rpc.block_number() == chain.head  # through RpcClient.call: one loop, not two
    assert proxy.methods == ["eth_blockNumber"] * 6
    assert _metric("chrysalis_rpc_retries_total", client="watch", method="eth_blockNumber") == retries + 4
    assert (
        _metric("chrysalis_rpc_errors_total", client="watch", method="eth_blockNumber", kind="http_5xx")
        == errors + 3
    )

    calls = ChainRpc(rpc.w3, retries=2, backoff_s=0.01, sleep=slept.append)
    proxy.fail_next = [(502, {})] * 3
    with pytest.raises(Exception, match="HTTP 502"):
        calls.block_number()
    assert proxy.methods.count("eth_blockNumber") == 9  # 3 by ChainRpc's loop, none added underneath


def test_what_outlasts_the_retries_of_bare_web3_calls_is_the_clients_error(
    chain: EmitterChain, proxy_factory: Callable[..., Proxy]
) -> None:
    from web3.exceptions import Web3RPCError

    proxy = proxy_factory()
    rpc = RpcClient(proxy.url, retries=1, backoff_s=0.01)
    proxy.fail_next = [(500, {})] * 2
    with pytest.raises(RpcUnavailableError, match="HTTP 500") as err:
        rpc.w3.eth.get_block(1)
    assert (
        err.value.url == proxy.url and err.value.method == "eth_getBlockByNumber" and err.value.attempts == 2
    )
    proxy.fail_next = [(429, {"Retry-After": "0"})] * 2
    with pytest.raises(RpcRateLimitedError):
        _ = rpc.w3.eth.chain_id
    # A final JSON-RPC error goes back to web3, which raises its own exception for it, after one request.
    before = len(proxy.methods)
    reply = rpc.w3.provider.make_request("eth_noSuchMethod", [])  # type: ignore[arg-type]
    assert "error" in reply
    with pytest.raises(Web3RPCError):
        rpc.w3.manager.request_blocking("eth_noSuchMethod", [])  # type: ignore[arg-type]
    assert len(proxy.methods) == before + 2
