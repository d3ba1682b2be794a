"""Oracles behind a misbehaving provider (issue 11, anomalies 3 and 4), on real anvil behind the shared
fault-injecting proxy: the wallet's Transfer search negotiates the provider's range cap like the watcher does,
every oracle RPC call is retried through the shared retry core (and counted once in ``chrysalis_rpc_*``), and what
outlasts the retries is a retryable :class:`~oracles.errors.OracleUnavailableError`, never a missing reading."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agent.errors import RetryableError
from agent.metrics import REGISTRY
from agent.watch.rpc import RpcClient
from oracles.base import ReadContext
from oracles.chainlink import ChainlinkOracle
from oracles.errors import OracleCallError, OracleUnavailableError, SnapshotReorgError
from oracles.eth_call import EthCallOracle
from oracles.guard import OracleGuard
from oracles.snapshot import take_snapshot
from oracles.wallet import WalletOracle
from tests.oracles.conftest import T0
from tests.support.devchain import DevChain
from tests.support.rpc_proxy import FaultProxy, Faults

pytestmark = pytest.mark.anvil

USD = 10**8
GAP = 2_100
"""Blocks between the transfer into the holder and the read: more than the provider's 2,000-block cap (anvil
mines a few hundred blocks a second on a busy machine, so not many more)."""


def _total(name: str, client: str = "watch", **labels: str) -> float:
    """A counter summed over every label set with ``client`` (and ``labels``)."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name != name or sample.labels.get("client") != client:
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture
def proxies(anvil_url: str) -> Iterator[Callable[..., FaultProxy]]:
    made: list[FaultProxy] = []

    def make(**kw: Any) -> FaultProxy:
        made.append(FaultProxy(anvil_url, **kw))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


@dataclass
class Old:
    """A collection whose token 1 went to ``holder`` at ``acquired``, ``gap`` blocks before ``read``."""

    collection: Any
    feed: Any
    holder: str
    deployed: int
    acquired: int
    read: int


def _old(chain: DevChain, gap: int) -> Old:
    a, b = chain.accounts[1], chain.accounts[2]
    t = max(T0, chain.w3.eth.get_block("latest")["timestamp"])
    feed = chain.deploy_feed(3_000 * USD, at=t + 10)
    collection = chain.deploy_collection()
    deployed = chain.w3.eth.block_number
    chain.at_time(t + 100)
    chain.transact(collection.functions.airdrop(a, 3))
    chain.at_time(t + 200)
    acquired = chain.transact(collection.functions.transferFrom(a, b, 1), sender=a)["blockNumber"]
    if gap:
        chain.rpc("anvil_mine", hex(gap))  # thousands of blocks in one call
    now = chain.w3.eth.get_block("latest")["timestamp"]
    chain.at_time(now + 60)
    chain.transact(feed.functions.updateAnswer(3_150 * USD))
    read = chain.mine()
    assert read - acquired > gap
    return Old(collection, feed, b, deployed, acquired, read)


@pytest.fixture
def old(chain: DevChain) -> Old:
    """Token 1 transferred more than :data:`GAP` blocks before the read."""
    return _old(chain, GAP)


@pytest.fixture
def recent(chain: DevChain) -> Old:
    """The same story without the gap (for the tests that do not need one)."""
    return _old(chain, 0)


def _ctx(w3: Any, old: Old) -> ReadContext:
    return ReadContext.at(w3, old.read, token_id=1, collection=old.collection.address)


def _values(readings: list[Any]) -> dict[str, Any]:
    return {r.name: r.value for r in readings}


# -- anomaly 3: range caps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["alchemy", "unknown"])
def test_wallet_finds_an_old_transfer_behind_a_2000_block_cap(
    chain: DevChain, old: Old, proxies: Callable[..., FaultProxy], style: str
) -> None:
    direct = _values(WalletOracle(from_block=old.deployed).read(_ctx(chain.w3, old)))
    proxy = proxies(max_span=2_000, style=style)
    rpc = RpcClient(proxy.url, retries=2, backoff_s=0.01)
    wallet = WalletOracle(from_block=old.deployed)

    got = {r.name: r for r in wallet.read(_ctx(rpc.w3, old))}

    acquired_at = chain.w3.eth.get_block(old.acquired)["timestamp"]
    read_at = chain.w3.eth.get_block(old.read)["timestamp"]
    assert got["wallet.held_seconds"].value == read_at - acquired_at > 60
    assert got["wallet.held_blocks"].value == old.read - old.acquired
    assert got["wallet.held_seconds"].meta["acquired_block"] == old.acquired
    assert {name: r.value for name, r in got.items()} == direct  # the same reading as without a cap
    assert proxy.refused and proxy.refused[0] == (old.deployed, old.read)  # all of it at first (< 10,000)
    assert proxy.served and all(hi - lo + 1 <= 2_000 for lo, hi in proxy.served)
    assert wallet.span.size <= 2_000

    # The accepted span is kept: the next search never starts over at 10,000 blocks.
    refused, served = len(proxy.refused), len(proxy.served)
    again = _values(wallet.read(_ctx(rpc.w3, old)))
    assert again == direct
    assert (old.deployed, old.read) not in proxy.refused[refused:]
    assert len(proxy.refused) - refused < refused  # fewer refusals than the first search needed
    assert all(hi - lo + 1 <= 2_000 for lo, hi in proxy.served[served:])


def test_a_range_refused_down_to_one_block_is_retryable_not_a_missing_reading(
    chain: DevChain, recent: Old, proxies: Callable[..., FaultProxy]
) -> None:
    proxy = proxies(max_span=0, style="alchemy")
    rpc = RpcClient(proxy.url, retries=1, backoff_s=0.01)
    ctx = _ctx(rpc.w3, recent)
    with pytest.raises(OracleUnavailableError) as err:
        WalletOracle(from_block=recent.deployed, log_chunk=4).read(ctx)
    assert err.value.retryable and err.value.oracle == "wallet"
    assert "eth_getLogs" in str(err.value) and "single block" in str(err.value)
    # The guard does not turn it into a skip (and a rule's missing feature): the snapshot fails, retryably.
    with pytest.raises(OracleUnavailableError):
        OracleGuard().snapshot([WalletOracle(from_block=recent.deployed, log_chunk=4)], ctx)


def test_a_transfer_search_answered_with_empty_logs_is_retryable_and_a_retry_reads_it(
    chain: DevChain, recent: Old, proxies: Callable[..., FaultProxy]
) -> None:
    """The soak found it: a lying ``[]`` for the Transfer search made the reading 'failed' (a permanent miss of
    wallet.held_seconds). The holder owns the token, so a Transfer into them exists: the answer was incomplete."""
    proxy = proxies()
    rpc = RpcClient(proxy.url, retries=1, backoff_s=0.01)
    ctx = _ctx(rpc.w3, recent)
    wallet = WalletOracle(from_block=recent.deployed)
    proxy.empty_logs_next = 1  # one lie: the search is asked again at once and reads the honest answer
    got = _values(wallet.read(ctx))
    assert got["wallet.held_blocks"] == recent.read - recent.acquired
    assert proxy.empty_logs_next == 0
    proxy.empty_logs_next = 10**6  # every answer lies: after LOG_RECHECKS more searches, retryable
    with pytest.raises(OracleUnavailableError, match="incomplete") as err:
        OracleGuard().snapshot([wallet], ctx)
    assert err.value.retryable
    proxy.empty_logs_next = 0
    got = _values(wallet.read(ctx))  # the job's retry: an honest answer
    assert got["wallet.held_blocks"] == recent.read - recent.acquired


# -- anomaly 4: retries of every oracle call ----------------------------------------------------------------


def _read_all(w3: Any, old: Old) -> dict[str, Any]:
    ctx = _ctx(w3, old)
    oracles = [
        WalletOracle(from_block=old.deployed, log_chunk=2_000),
        ChainlinkOracle(old.feed.address, window_s=None),
        EthCallOracle(old.collection.address, "balanceOf(address)(uint256)", ["$holder"], name="held"),
    ]
    values = {"context.holder": ctx.holder}
    for oracle in oracles:
        values.update(_values(oracle.read(ctx)))
    return values


def test_scripted_502_and_429_are_retried_for_every_oracle_call(
    chain: DevChain, recent: Old, proxies: Callable[..., FaultProxy]
) -> None:
    expected = _read_all(chain.w3, recent)
    proxy = proxies()
    slept: list[float] = []
    rpc = RpcClient(proxy.url, retries=3, backoff_s=0.01, sleep=slept.append)
    ctx = _ctx(rpc.w3, recent)
    stages: list[Callable[[], Any]] = [
        lambda: _ctx(rpc.w3, recent),
        lambda: WalletOracle(from_block=recent.deployed, log_chunk=2_000).read(ctx),
        lambda: ChainlinkOracle(recent.feed.address, window_s=None).read(ctx),
        lambda: EthCallOracle(recent.feed.address, "decimals()(uint8)", name="dec").read(ctx),
    ]
    for stage in stages:
        retries = _total("chrysalis_rpc_retries_total")
        five = _total("chrysalis_rpc_errors_total", kind="http_5xx")
        limited = _total("chrysalis_rpc_errors_total", kind="rate_limited")
        proxy.fail_next = [(502, {}), (429, {"Retry-After": "0"})]
        stage()
        assert not proxy.fail_next
        assert _total("chrysalis_rpc_retries_total") == retries + 2  # counted once, not per layer
        assert _total("chrysalis_rpc_errors_total", kind="http_5xx") == five + 1
        assert _total("chrysalis_rpc_errors_total", kind="rate_limited") == limited + 1
    assert len(slept) == 2 * len(stages)
    assert _read_all(rpc.w3, recent) == expected


def test_random_drops_5xx_and_rate_limits_are_retried_and_counted_once(
    chain: DevChain, recent: Old, proxies: Callable[..., FaultProxy]
) -> None:
    expected = _read_all(chain.w3, recent)
    proxy = proxies(faults=Faults(seed=11, drop=0.1, http_5xx=0.1, rate_limit=0.1))
    rpc = RpcClient(proxy.url, retries=8, backoff_s=0.001, max_backoff_s=0.01)
    retries = _total("chrysalis_rpc_retries_total")
    for _ in range(3):
        assert _read_all(rpc.w3, recent) == expected
    injected = proxy.injected["drop"] + proxy.injected["http_5xx"] + proxy.injected["rate_limit"]
    assert proxy.injected["drop"] and proxy.injected["http_5xx"] and proxy.injected["rate_limit"]
    assert _total("chrysalis_rpc_retries_total") == retries + injected


def test_a_revert_is_handed_back_to_web3_and_not_retried(
    chain: DevChain, recent: Old, proxies: Callable[..., FaultProxy]
) -> None:
    proxy = proxies()
    rpc = RpcClient(proxy.url, retries=3, backoff_s=0.01)
    ctx = _ctx(rpc.w3, recent)
    retries = _total("chrysalis_rpc_retries_total")
    calls = proxy.methods.count("eth_call")
    with pytest.raises(OracleCallError, match="ownerOf"):
        EthCallOracle(recent.collection.address, "ownerOf(uint256)(address)", [999], name="owner").read(ctx)
    assert proxy.methods.count("eth_call") == calls + 1
    assert _total("chrysalis_rpc_retries_total") == retries


def test_what_outlasts_the_retries_is_oracle_unavailable_naming_the_url_and_method(
    chain: DevChain, recent: Old, proxies: Callable[..., FaultProxy]
) -> None:
    proxy = proxies()
    rpc = RpcClient(proxy.url, retries=2, backoff_s=0.01)
    ctx = _ctx(rpc.w3, recent)

    proxy.fail_next = [(503, {})] * 3
    with pytest.raises(OracleUnavailableError) as err:
        ChainlinkOracle(recent.feed.address, window_s=None).read(ctx)
    assert isinstance(err.value, RetryableError) and err.value.oracle == "price"
    # web3 resolves a block hash given to a contract call with eth_getBlockByHash first: that is what failed
    assert proxy.url in str(err.value) and "decimals()" in str(err.value) and "HTTP 503" in str(err.value)
    assert "failed 3 time(s)" in str(err.value)

    proxy.fail_next = [(429, {"Retry-After": "0"})] * 3
    with pytest.raises(OracleUnavailableError, match="HTTP 429"):
        WalletOracle(from_block=recent.deployed).read(ctx)

    proxy.fail_next = [(502, {})] * 3
    with pytest.raises(OracleUnavailableError, match="eth_getBlockByNumber") as err:
        _ctx(rpc.w3, recent)
    assert err.value.oracle == "context" and proxy.url in str(err.value)


def test_faults_of_one_method_only_hit_the_oracle_that_uses_it(
    chain: DevChain, recent: Old, proxies: Callable[..., FaultProxy]
) -> None:
    """Every eth_getLogs dropped: the wallet cannot be read (retryable, naming it and the cause)."""
    proxy = proxies(faults=Faults(drop=1.0, only=frozenset({"eth_getLogs"})))
    rpc = RpcClient(proxy.url, retries=2, backoff_s=0.01)
    ctx = _ctx(rpc.w3, recent)
    assert _values(ChainlinkOracle(recent.feed.address, window_s=None).read(ctx))["price.answer"] == 3150.0
    with pytest.raises(OracleUnavailableError) as err:
        OracleGuard().snapshot([WalletOracle(from_block=recent.deployed)], ctx)
    assert err.value.oracle == "wallet" and "eth_getLogs" in str(err.value)
    assert "cannot connect" in str(err.value) and proxy.injected["drop"] == 3


def test_a_block_the_node_does_not_know_is_a_reading_not_taken_yet(
    chain: DevChain, recent: Old, proxies: Callable[..., FaultProxy]
) -> None:
    """A backend behind its peers (or a block reorged away) answers "not found" for the pinned hash: retryable,
    like ReadContext.at's BlockNotFound, never a permanent OracleCallError that the guard would skip; when the
    hash is not the canonical block at its height, the snapshot says so (a reorg)."""
    rpc = RpcClient(proxies().url, retries=1, backoff_s=0.01)
    ctx = dataclasses.replace(_ctx(rpc.w3, recent), block_hash="0x" + "ab" * 32)
    oracle = EthCallOracle(recent.collection.address, "balanceOf(address)(uint256)", ["$holder"], name="held")
    with pytest.raises(OracleUnavailableError, match="does not know the block") as err:
        oracle.read(ctx)
    assert err.value.oracle == "held" and err.value.retryable
    with pytest.raises(SnapshotReorgError) as reorg:
        OracleGuard().snapshot([oracle], ctx)
    assert reorg.value.retryable and reorg.value.expected_hash == ctx.block_hash
    with pytest.raises(SnapshotReorgError):
        take_snapshot([oracle], ctx)
