"""The inputs stage behind a misbehaving provider (issue 11, anomalies 3 and 4), on real anvil behind the shared
fault-injecting proxy: a 2,000-block range cap no longer loses ``wallet.held_seconds`` (which made every job of
an older collection fail for good with MissingFeatureError), and a node that cannot be read makes the stage fail
with a retryable error naming the oracle and the cause."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ChrysalisError, RetryableError
from agent.ipfs.repo import IpfsRepo
from agent.jobs.policy import is_retryable
from agent.pipeline.collection import CollectionReader
from agent.pipeline.inputs import InputsStage
from agent.rules import MissingFeatureError, load_rules
from agent.watch.rpc import RpcClient
from oracles.errors import OracleUnavailableError
from oracles.wallet import WalletOracle
from tests.support.devchain import CollectionChain
from tests.support.rpc_proxy import FaultProxy, Faults

pytestmark = pytest.mark.anvil


@pytest.fixture
def proxies(chain: CollectionChain) -> Iterator[Callable[..., FaultProxy]]:
    made: list[FaultProxy] = []

    def make(**kw: Any) -> FaultProxy:
        made.append(FaultProxy(chain.url, **kw))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def _stage(chain: CollectionChain, url: str, tmp_path: Path, **rpc: Any) -> InputsStage:
    reader = CollectionReader(RpcClient(url, **rpc), chain.collection.address)
    repo = IpfsRepo(tmp_path / "ipfs", sync=False)
    # The wallet alone: the default rules read wallet.held_seconds without a default.
    return InputsStage(reader, [WalletOracle(from_block=0)], load_rules(), repo, collection_name="Chrysalis")


@pytest.mark.parametrize("style", ["alchemy", "unknown"])
def test_held_seconds_of_an_old_collection_behind_a_2000_block_cap(
    chain: CollectionChain, proxies: Callable[..., FaultProxy], tmp_path: Path, style: str
) -> None:
    chain.rpc("anvil_mine", hex(2_100))  # the tokens were minted more than 2,000 blocks ago
    request = chain.open_request(1)
    direct = _stage(chain, chain.url, tmp_path / "direct", retries=0).run(request.task())
    proxy = proxies(max_span=2_000, style=style)

    got = _stage(chain, proxy.url, tmp_path / "capped", retries=2, backoff_s=0.01).run(request.task())

    values = got.snapshot.values()
    assert values["wallet.held_blocks"] > 2_100 and values["wallet.held_seconds"] > 0
    assert got == direct
    assert proxy.refused and all(hi - lo + 1 <= 2_000 for lo, hi in proxy.served)


@pytest.mark.parametrize(
    ("methods", "oracle"),
    [({"eth_getLogs"}, "wallet"), ({"eth_getBalance"}, "wallet"), ({"eth_getBlockByHash"}, "context")],
)
def test_an_oracle_that_cannot_be_read_makes_the_stage_retryable(
    chain: CollectionChain, proxies: Callable[..., FaultProxy], tmp_path: Path, methods: set[str], oracle: str
) -> None:
    request = chain.open_request(1)
    proxy = proxies(faults=Faults(drop=1.0, only=frozenset(methods)))
    stage = _stage(chain, proxy.url, tmp_path, retries=2, backoff_s=0.01)
    with pytest.raises(OracleUnavailableError) as err:
        stage.run(request.task())
    assert not isinstance(err.value, MissingFeatureError)
    assert isinstance(err.value, RetryableError) and is_retryable(err.value)
    assert err.value.oracle == oracle and f"oracle {oracle!r}" in str(err.value)
    assert "cannot connect" in str(err.value) and proxy.url in str(err.value)
    assert proxy.injected["drop"] == 3  # retried twice, then given up


def test_a_node_that_stays_unreachable_is_retryable_not_a_traceback(
    chain: CollectionChain, proxies: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    request = chain.open_request(1)
    proxy = proxies()
    stage = _stage(chain, proxy.url, tmp_path, retries=1, backoff_s=0.01)
    proxy.close()
    with pytest.raises(ChrysalisError) as err:
        stage.run(request.task())
    assert err.value.retryable and is_retryable(err.value)
    assert proxy.url in str(err.value)
