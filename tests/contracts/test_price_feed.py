"""DevPriceFeed: a Chainlink AggregatorV3Interface whose answer tests can set."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contracts.support import ev, events, norm, reverts

INITIAL = 3000 * 10**8


def test_metadata(feed: Any) -> None:
    assert feed.decimals() == 8
    assert feed.description() == "ETH / USD"
    assert feed.version() == 4


def test_initial_round(feed: Any, admin: Any) -> None:
    receipt = feed.creation_metadata.receipt
    t = receipt.timestamp
    assert events(receipt, feed) == [
        ev("NewRound", roundId=1, startedBy=admin, startedAt=t),
        ev("AnswerUpdated", current=INITIAL, roundId=1, updatedAt=t),
    ]
    assert feed.latestRoundData() == (1, INITIAL, t, t, 1)
    assert feed.getRoundData(1) == (1, INITIAL, t, t, 1)
    assert (feed.latestRound(), feed.latestAnswer(), feed.latestTimestamp()) == (1, INITIAL, t)


def test_update_answer(feed: Any, chain: Any, alice: Any) -> None:
    first = feed.latestRoundData()
    chain.pending_timestamp = first[3] + 3600
    receipt = feed.updateAnswer(-5 * 10**8, sender=alice)  # anyone may; negative answers are valid
    t = receipt.timestamp
    assert t == first[3] + 3600
    assert events(receipt, feed) == [
        ev("NewRound", roundId=2, startedBy=alice, startedAt=t),
        ev("AnswerUpdated", current=-5 * 10**8, roundId=2, updatedAt=t),
    ]
    assert feed.latestRoundData() == (2, -5 * 10**8, t, t, 2)
    assert feed.getRoundData(1) == first  # history is kept
    assert (feed.latestRound(), feed.latestAnswer(), feed.latestTimestamp()) == (2, -5 * 10**8, t)


def test_unknown_rounds(feed: Any) -> None:
    for round_id in (0, 2, 2**80 - 1):
        with reverts(feed.DevPriceFeedNoData, roundId=round_id):
            feed.getRoundData(round_id)


def test_update_round_data(feed: Any, alice: Any) -> None:
    # Jump ahead with explicit (stale) times: latest follows the highest round.
    receipt = feed.updateRoundData(10, 2500 * 10**8, 1_000, 900, sender=alice)
    assert events(receipt, feed) == [
        ev("NewRound", roundId=10, startedBy=alice, startedAt=900),
        ev("AnswerUpdated", current=2500 * 10**8, roundId=10, updatedAt=1_000),
    ]
    assert feed.latestRoundData() == (10, 2500 * 10**8, 900, 1_000, 10)
    # Rewriting an older round leaves latest alone; an incomplete round (updatedAt 0) is readable.
    feed.updateRoundData(5, 7, 0, 0, sender=alice)
    assert feed.latestRound() == 10
    assert feed.getRoundData(5) == (5, 7, 0, 0, 5)
    with reverts(feed.DevPriceFeedNoData, roundId=6):
        feed.getRoundData(6)
    # updateAnswer continues after the highest round.
    feed.updateAnswer(1, sender=alice)
    assert feed.latestRound() == 11


def test_round_zero_cannot_be_written(feed: Any, alice: Any) -> None:
    with reverts(feed.DevPriceFeedInvalidRound, roundId=0):
        feed.updateRoundData(0, 1, 1, 1, sender=alice)


@pytest.mark.parametrize("decimals", [0, 18])
def test_other_decimals(project: Any, admin: Any, decimals: int) -> None:
    feed = admin.deploy(project.DevPriceFeed, decimals, "BTC / ETH", 0)
    assert feed.decimals() == decimals
    assert norm(feed.latestRoundData()[:2]) == (1, 0)
