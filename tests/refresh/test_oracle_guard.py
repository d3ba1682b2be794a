"""Stale or absurd oracle data never becomes a garbage refresh: the tokens whose rules read it keep their metadata,
with a log line and a metric, and the next refresh with good data goes through."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from agent.app import build_agent
from agent.jobs import JobState
from agent.metrics import REGISTRY
from agent.settings import Settings
from tests.refresh.conftest import drive, states
from tests.support.devchain import CollectionChain


def skipped(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("chrysalis_oracle_skipped_total", {"oracle": "price", "reason": reason})
        or 0.0
    )


def digests(chain: CollectionChain, tokens: list[int]) -> list[bytes]:
    return [chain.collection.functions.metadataDigestOf(t).call() for t in tokens]


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["stale", "absurd"])
def test_garbage_price_data_is_skipped_and_the_tokens_keep_their_metadata(
    chain: CollectionChain, make: Callable[..., Settings], caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    settings = make(guard={"price.answer": {"min": 100, "max": 100_000}})
    with build_agent(settings) as agent:
        first, _ = agent.refresh.queue_manual([1, 2])
        assert drive(agent, first.id).state == JobState.CONFIRMED
        kept = digests(chain, [1, 2])

        now = chain.w3.eth.get_block("latest")["timestamp"]
        (round_id, *_rest) = chain.feed.functions.latestRoundData().call()
        if bad == "stale":  # a new round whose answer is two hours old (agent.price_max_age_s is one hour)
            chain.transact(chain.feed.functions.updateRoundData(round_id + 1, 3_400 * 10**8, now - 7200, now - 7200),
                           chain.admin)  # fmt: skip
        else:  # a fat-fingered answer: ETH at 9 million dollars, above the guard's max
            chain.transact(chain.feed.functions.updateAnswer(9_000_000 * 10**8), chain.admin)
        before = skipped(bad)
        nonce = chain.agent_nonce()
        caplog.set_level(logging.WARNING)
        job, _ = agent.refresh.queue_manual([1, 2], force=True)  # even a forced refresh renders no garbage
        done = drive(agent, job.id)

        assert done.state == JobState.CONFIRMED
        assert states(agent, job.id) == {1: "oracle_skipped", 2: "oracle_skipped"}
        reason = agent.refresh.store.item(job.id, 1).reason
        assert "price.change_pct" in reason and f"({bad}:" in reason and "[traits.mood]" in reason
        assert digests(chain, [1, 2]) == kept and chain.agent_nonce() == nonce
        assert skipped(bad) == before + 1  # screened once for the whole refresh, not once per token
        assert any("oracle 'price' skipped" in r.getMessage() and "keep their metadata" in r.getMessage()
                   for r in caplog.records)  # fmt: skip

        chain.transact(chain.feed.functions.updateAnswer(3_400 * 10**8), chain.admin)  # good data again
        healed, _ = agent.refresh.queue_manual([1, 2])
        assert drive(agent, healed.id).state == JobState.CONFIRMED
        assert states(agent, healed.id) == {1: "confirmed", 2: "confirmed"}
