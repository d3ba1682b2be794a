"""take_snapshot: one block for all oracles, deterministic bytes, reorg detection."""

from __future__ import annotations

import pytest

from agent.domain import OracleReading, canonical_json
from oracles.base import Oracle, ReadContext
from oracles.chainlink import ChainlinkOracle
from oracles.errors import SnapshotConfigError, SnapshotReorgError
from oracles.snapshot import CONTEXT_READINGS, take_snapshot
from oracles.wallet import WalletOracle
from tests.oracles.conftest import T0
from tests.support.devchain import DevChain

pytestmark = pytest.mark.anvil

USD = 10**8


class FakeOracle(Oracle):
    """Returns fixed readings; ``block_offset`` stamps them with the wrong block."""

    def __init__(
        self, name: str, fields: dict, *, block_offset: int = 0, provides: tuple[str, ...] | None = None
    ):
        self._name, self._fields, self._offset = name, fields, block_offset
        self._provides = provides

    @property
    def name(self) -> str:
        return self._name

    @property
    def provides(self) -> tuple[str, ...]:
        return self._provides or tuple(f"{self._name}.{k}" for k in self._fields)

    def read(self, ctx: ReadContext) -> list[OracleReading]:
        return [
            OracleReading(f"{self._name}.{k}", v, "fake", ctx.block_number + self._offset)
            for k, v in self._fields.items()
        ]


@pytest.fixture
def setup(chain: DevChain):
    collection = chain.deploy_collection()
    chain.at_time(T0 + 10)
    chain.transact(collection.functions.airdrop(chain.accounts[1], 1))
    feed = chain.deploy_feed(2_000 * USD, at=T0 + 20)
    chain.at_time(T0 + 1_020)
    chain.transact(feed.functions.updateAnswer(2_100 * USD))
    block = chain.mine(at=T0 + 1_030)
    oracles = [ChainlinkOracle(feed.address, window_s=1_000), WalletOracle()]
    return collection, feed, oracles, block


def test_snapshot_reads_every_oracle_at_one_block(chain: DevChain, setup) -> None:
    collection, _feed, oracles, block = setup
    ctx = ReadContext.at(chain.w3, block, token_id=1, collection=collection.address)
    snap = take_snapshot(oracles, ctx)

    assert (snap.chain_id, snap.block_number) == (31337, block)
    assert snap.block_hash == "0x" + chain.w3.eth.get_block(block)["hash"].hex()
    names = [r.name for r in snap.readings]
    assert names == sorted(names)
    assert set(names) == {*CONTEXT_READINGS, *oracles[0].provides, *oracles[1].provides}
    assert {r.block_number for r in snap.readings} == {block}
    values = snap.values()
    assert values["price.change_pct"] == 5.0
    assert values["wallet.held_seconds"] == 1_020
    assert values["context.holder"] == chain.accounts[1]
    assert values["context.token_id"] == 1
    assert values["context.block_timestamp"] == T0 + 1_030


def test_snapshot_is_byte_stable_and_bound_to_its_block(chain: DevChain, setup) -> None:
    collection, feed, oracles, block = setup
    ctx = ReadContext.at(chain.w3, block, token_id=1, collection=collection.address)
    first = take_snapshot(oracles, ctx)
    chain.at_time(T0 + 1_040)
    chain.transact(feed.functions.updateAnswer(9_999 * USD))  # the chain moves on
    chain.mine(at=T0 + 1_050)
    again = take_snapshot(
        list(reversed(oracles)), ReadContext.at(chain.w3, block, token_id=1, collection=collection.address)
    )
    assert canonical_json(first.to_json()) == canonical_json(again.to_json())
    assert first.sha256 == again.sha256

    later = take_snapshot(
        oracles, ReadContext.at(chain.w3, block + 2, token_id=1, collection=collection.address)
    )
    assert later.sha256 != first.sha256
    assert later.values()["price.answer"] == 9_999.0


def test_duplicate_oracle_names_are_refused(chain: DevChain, setup) -> None:
    collection, feed, oracles, block = setup
    ctx = ReadContext.at(chain.w3, block, token_id=1, collection=collection.address)
    with pytest.raises(SnapshotConfigError, match="unique"):
        take_snapshot([oracles[0], ChainlinkOracle(feed.address)], ctx)
    with pytest.raises(SnapshotConfigError, match="reserved"):
        take_snapshot([FakeOracle("context", {"holder": "x"})], ctx)


@pytest.mark.parametrize(
    ("oracle", "match"),
    [
        (FakeOracle("fake", {"x": 1}, block_offset=-1), "not the snapshot's block"),
        (FakeOracle("fake", {"x": 1}, provides=("fake.x", "fake.y")), "provides"),
        (FakeOracle("fake", {"x": float("nan")}), "plain JSON"),
        (FakeOracle("fake", {"x": b"bytes"}), "plain JSON"),
    ],
)
def test_misbehaving_oracles_are_refused(chain: DevChain, setup, oracle: Oracle, match: str) -> None:
    collection, _, _, block = setup
    ctx = ReadContext.at(chain.w3, block, token_id=1, collection=collection.address)
    with pytest.raises(SnapshotConfigError, match=match):
        take_snapshot([oracle], ctx)


def test_reorg_while_reading_is_detected(chain: DevChain, setup) -> None:
    collection, _, oracles, _ = setup
    fork_point = chain.rpc("evm_snapshot")
    block = chain.mine(at=T0 + 2_000)
    ctx = ReadContext.at(chain.w3, block, token_id=1, collection=collection.address)
    chain.rpc("evm_revert", fork_point)
    assert chain.mine(at=T0 + 2_001) == block  # same height, another block

    with pytest.raises(SnapshotReorgError) as info:
        take_snapshot(oracles, ctx)
    assert info.value.expected_hash == ctx.block_hash
    assert info.value.actual_hash == "0x" + chain.w3.eth.get_block(block)["hash"].hex()
    assert info.value.retryable
    with pytest.raises(SnapshotReorgError):
        take_snapshot([], ctx)
