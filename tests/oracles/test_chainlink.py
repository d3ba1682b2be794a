"""ChainlinkOracle against the real DevPriceFeed on anvil."""

from __future__ import annotations

import pytest

from oracles.base import ReadContext
from oracles.chainlink import ChainlinkOracle
from oracles.errors import (
    InvalidOracleDataError,
    OracleCallError,
    OracleHistoryError,
    RoundGapError,
    StaleOracleDataError,
)
from tests.oracles.conftest import T0
from tests.support.devchain import DevChain

pytestmark = pytest.mark.anvil

USD = 10**8  # the feed's 8 decimals


@pytest.fixture
def collection(chain: DevChain):
    """A collection with token 1 minted to the admin (the context needs a token and its holder)."""
    c = chain.deploy_collection()
    chain.transact(c.functions.airdrop(chain.admin, 1))
    return c


def ctx_at(chain: DevChain, collection, block: int) -> ReadContext:
    return ReadContext.at(chain.w3, block, token_id=1, collection=collection.address)


def values(readings) -> dict:
    return {r.name: r.value for r in readings}


def test_reads_at_the_context_block_not_latest(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(3_000 * USD, at=T0 + 10)
    before = chain.w3.eth.block_number
    chain.at_time(T0 + 20)
    chain.transact(feed.functions.updateAnswer(3_300 * USD))
    after = chain.w3.eth.block_number
    oracle = ChainlinkOracle(feed.address, window_s=None)

    old = values(oracle.read(ctx_at(chain, collection, before)))
    new = values(oracle.read(ctx_at(chain, collection, after)))

    assert old == {"price.answer": 3000.0, "price.updated_at": T0 + 10, "price.age_s": 0, "price.round_id": 1}
    assert new == {"price.answer": 3300.0, "price.updated_at": T0 + 20, "price.age_s": 0, "price.round_id": 2}
    # The same context read again after the feed moved on still sees the old block.
    chain.transact(feed.functions.updateAnswer(1 * USD))
    assert values(oracle.read(ctx_at(chain, collection, before)))["price.answer"] == 3000.0


def test_answer_meta_and_readings_are_stamped_with_the_block(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(123_456_789, at=T0 + 10)  # 1.23456789 with 8 decimals
    block = chain.mine(at=T0 + 70)
    readings = ChainlinkOracle(feed.address, name="eth_usd", window_s=None).read(
        ctx_at(chain, collection, block)
    )
    answer = next(r for r in readings if r.name == "eth_usd.answer")
    assert answer.value == 1.23456789
    assert answer.meta == {"raw": 123_456_789, "decimals": 8, "round_id": 1, "description": "ETH / USD (dev)"}
    assert answer.source == f"chainlink:{feed.address}"
    assert {r.block_number for r in readings} == {block}
    assert values(readings)["eth_usd.age_s"] == 60


def test_stale_answer_raises_instead_of_returning_it(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(3_000 * USD, at=T0 + 10)
    fresh = chain.mine(at=T0 + 10 + 3_600)
    stale = chain.mine(at=T0 + 10 + 3_601)
    oracle = ChainlinkOracle(feed.address, max_age_s=3_600, window_s=None)

    assert (
        values(oracle.read(ctx_at(chain, collection, fresh)))["price.age_s"] == 3_600
    )  # the limit is inclusive
    with pytest.raises(StaleOracleDataError) as info:
        oracle.read(ctx_at(chain, collection, stale))
    err = info.value
    assert (err.age_s, err.max_age_s, err.updated_at, err.block_number) == (3_601, 3_600, T0 + 10, stale)
    assert "stale" in str(err) and "max_age_s" in str(err)
    assert not err.retryable
    # Disabling the check returns the old answer with its age.
    assert (
        values(
            ChainlinkOracle(feed.address, max_age_s=None, window_s=None).read(
                ctx_at(chain, collection, stale)
            )
        )["price.age_s"]
        == 3_601
    )


def _history(chain: DevChain):
    """Rounds: 100 @ T0+1000, 110 @ T0+2000, 121 @ T0+3000; returns (feed, block at T0+3500)."""
    feed = chain.deploy_feed(100 * USD, at=T0 + 1_000)
    chain.at_time(T0 + 2_000)
    chain.transact(feed.functions.updateAnswer(110 * USD))
    chain.at_time(T0 + 3_000)
    chain.transact(feed.functions.updateAnswer(121 * USD))
    return feed, chain.mine(at=T0 + 3_500)


@pytest.mark.parametrize(
    ("window_s", "change_pct", "base_round", "walked"),
    [
        (400, 0.0, 3, 0),  # the latest round already held at the window's start
        (500, 0.0, 3, 0),  # boundary: updated exactly at the window's start counts
        (501, 10.0, 2, 1),
        (1_500, 10.0, 2, 1),
        (2_500, 21.0, 1, 2),
    ],
)
def test_change_over_window_walks_back_rounds(
    chain: DevChain, collection, window_s: int, change_pct: float, base_round: int, walked: int
) -> None:
    feed, block = _history(chain)
    readings = ChainlinkOracle(feed.address, max_age_s=None, window_s=window_s).read(
        ctx_at(chain, collection, block)
    )
    change = next(r for r in readings if r.name == "price.change_pct")
    assert change.value == change_pct
    assert change.meta["base_round_id"] == base_round
    assert change.meta["rounds_walked"] == walked
    assert change.meta["window_s"] == window_s


def test_falling_price_gives_negative_change(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(200 * USD, at=T0 + 1_000)
    chain.at_time(T0 + 2_000)
    chain.transact(feed.functions.updateAnswer(150 * USD))
    block = chain.mine(at=T0 + 2_100)
    got = values(ChainlinkOracle(feed.address, window_s=1_000).read(ctx_at(chain, collection, block)))
    assert got["price.change_pct"] == -25.0


def test_window_before_the_first_round_raises_history_error(chain: DevChain, collection) -> None:
    feed, block = _history(chain)
    with pytest.raises(OracleHistoryError) as info:
        ChainlinkOracle(feed.address, max_age_s=None, window_s=3_000).read(ctx_at(chain, collection, block))
    assert info.value.target_timestamp == T0 + 500
    assert "window_s" in str(info.value)
    # The latest round is fine: its readings travel with the error, so a guard can keep them.
    assert {r.name: r.value for r in info.value.available} == {
        "price.answer": 121.0,
        "price.updated_at": T0 + 3_000,
        "price.age_s": 500,
        "price.round_id": 3,
    }


def test_window_walk_is_capped(chain: DevChain, collection) -> None:
    feed, block = _history(chain)
    with pytest.raises(OracleHistoryError, match="max_rounds"):
        ChainlinkOracle(feed.address, max_age_s=None, window_s=2_500, max_rounds=1).read(
            ctx_at(chain, collection, block)
        )


def test_round_id_gap_raises(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(100 * USD, at=T0 + 1_000)
    chain.at_time(T0 + 2_000)
    chain.transact(
        feed.functions.updateRoundData(3, 120 * USD, T0 + 2_000, T0 + 2_000)
    )  # round 2 never written
    block = chain.mine(at=T0 + 2_100)
    oracle = ChainlinkOracle(feed.address, window_s=1_500)
    with pytest.raises(RoundGapError) as info:
        oracle.read(ctx_at(chain, collection, block))
    assert (info.value.missing_round, info.value.round_id) == (2, 3)
    assert "gap" in str(info.value)
    # A window the latest round already covers never walks into the gap.
    assert (
        values(ChainlinkOracle(feed.address, window_s=50).read(ctx_at(chain, collection, block)))[
            "price.change_pct"
        ]
        == 0.0
    )


@pytest.mark.parametrize(
    ("answer", "updated_at", "reason"),
    [
        (0, T0 + 1_000, "not positive"),
        (-5 * USD, T0 + 1_000, "not positive"),
        (100 * USD, 0, "incomplete round"),
        (100 * USD, T0 + 9_999, "after the block"),
    ],
)
def test_absurd_latest_round_raises(
    chain: DevChain, collection, answer: int, updated_at: int, reason: str
) -> None:
    feed = chain.deploy_feed(100 * USD, at=T0 + 500)
    chain.at_time(T0 + 1_000)
    chain.transact(feed.functions.updateRoundData(2, answer, updated_at, T0 + 1_000))
    block = chain.mine(at=T0 + 1_100)
    with pytest.raises(InvalidOracleDataError, match=reason) as info:
        ChainlinkOracle(feed.address, max_age_s=None, window_s=None).read(ctx_at(chain, collection, block))
    assert info.value.round_id == 2
    assert isinstance(info.value, ValueError)


def test_absurd_round_inside_the_window_raises(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(100 * USD, at=T0 + 500)
    chain.at_time(T0 + 1_000)
    chain.transact(feed.functions.updateRoundData(2, -1, T0 + 1_000, T0 + 1_000))
    chain.at_time(T0 + 2_000)
    chain.transact(feed.functions.updateAnswer(100 * USD))
    block = chain.mine(at=T0 + 2_100)
    with pytest.raises(InvalidOracleDataError, match="not positive") as info:
        ChainlinkOracle(feed.address, window_s=1_500).read(ctx_at(chain, collection, block))
    assert info.value.round_id == 2


def test_rounds_out_of_time_order_raise(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(100 * USD, at=T0 + 500)
    chain.at_time(T0 + 1_000)
    chain.transact(feed.functions.updateRoundData(2, 100 * USD, T0 + 1_180, T0 + 1_180))
    chain.at_time(T0 + 1_100)
    chain.transact(feed.functions.updateRoundData(3, 100 * USD, T0 + 1_150, T0 + 1_150))  # older than round 2
    block = chain.mine(at=T0 + 1_200)
    with pytest.raises(InvalidOracleDataError, match="after the newer round 3"):
        ChainlinkOracle(feed.address, window_s=100).read(ctx_at(chain, collection, block))


def test_answer_bounds(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(1_000_000 * USD, at=T0 + 500)
    block = chain.mine(at=T0 + 600)
    with pytest.raises(InvalidOracleDataError, match="above max_answer"):
        ChainlinkOracle(feed.address, window_s=None, max_answer=100_000).read(
            ctx_at(chain, collection, block)
        )
    with pytest.raises(InvalidOracleDataError, match="below min_answer"):
        ChainlinkOracle(feed.address, window_s=None, min_answer=2_000_000).read(
            ctx_at(chain, collection, block)
        )


def test_wrong_address_is_a_call_error(chain: DevChain, collection) -> None:
    block = chain.mine(at=T0 + 600)
    with pytest.raises(OracleCallError) as info:
        ChainlinkOracle(collection.address, window_s=None).read(ctx_at(chain, collection, block))
    assert info.value.address == collection.address
    assert "right contract" in str(info.value)


def test_feed_deployed_after_the_block_is_a_call_error(chain: DevChain, collection) -> None:
    block = chain.mine(at=T0 + 600)
    feed = chain.deploy_feed(100 * USD, at=T0 + 700)
    with pytest.raises(OracleCallError):
        ChainlinkOracle(feed.address, window_s=None).read(ctx_at(chain, collection, block))


def test_provides_matches_configuration() -> None:
    addr = "0x" + "11" * 20
    assert ChainlinkOracle(addr).provides == (
        "price.answer",
        "price.updated_at",
        "price.age_s",
        "price.round_id",
        "price.change_pct",
    )
    assert "price.change_pct" not in ChainlinkOracle(addr, window_s=None).provides
    with pytest.raises(ValueError, match="window_s"):
        ChainlinkOracle(addr, window_s=0)
