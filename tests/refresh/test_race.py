"""A refresh and a holder's request for the same token never race: the evolution goes first, the refresh defers
the token, and the next refresh picks it up from the evolved metadata."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.app import build_agent
from agent.jobs import JobState
from agent.metadata import cid_from_digest, parse_metadata
from agent.pipeline import Agent
from agent.settings import Settings
from tests.refresh.conftest import drive, states
from tests.support.devchain import CollectionChain


def work_refresh_only(agent: Agent, job_id: int) -> None:
    """Advance the refresh without watching the chain (the agent has not seen any request yet)."""
    while not agent.store.get(job_id).state.terminal:
        assert agent.work_once() == 1


@pytest.mark.slow
def test_a_token_with_a_pending_request_is_deferred_and_the_next_refresh_starts_from_its_evolution(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    with build_agent(make()) as agent:
        rid = chain.request(2)  # the holder asks first
        job, _ = agent.refresh.queue_manual([1, 2, 3])
        work_refresh_only(agent, job.id)
        assert states(agent, job.id) == {1: "confirmed", 2: "deferred", 3: "confirmed"}
        reason = agent.refresh.store.item(job.id, 2).reason
        assert f"request {rid:#x} for token 2 is pending" in reason and "evolution goes first" in reason
        assert chain.collection.functions.metadataDigestOf(2).call() == bytes(32)  # the refresh left it alone

        status = agent.run_until_idle(timeout_s=90)  # the agent sees the request and fulfils it
        assert status.jobs["confirmed"] == 2 and not chain.is_pending(rid)
        evolved = cid_from_digest(chain.collection.functions.metadataDigestOf(2).call())
        assert parse_metadata(agent.repo.block_get(evolved)).stage == 1

        chain.transact(chain.feed.functions.updateAnswer(3_400 * 10**8), chain.admin)  # the mood changes
        again, _ = agent.refresh.queue_manual([2])
        assert drive(agent, again.id).state == JobState.CONFIRMED
        assert states(agent, again.id) == {2: "confirmed"}
        refreshed = parse_metadata(
            agent.repo.block_get(cid_from_digest(chain.collection.functions.metadataDigestOf(2).call()))
        )
        assert refreshed.parent == evolved and refreshed.stage == 1  # built on the evolution, stage kept
        assert chain.collection.functions.stageOf(2).call() == 1


@pytest.mark.slow
def test_requests_and_evolutions_after_the_refresh_block_defer_their_tokens_at_the_pre_send_check(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    with build_agent(make(chunk_size=1)) as agent:
        job, _ = agent.refresh.queue_manual([1, 2, 3])
        assert agent.work_once() == 1  # step 1: block B fixed, token 1 read at B: its traits changed
        assert states(agent, job.id) == {1: "changed", 2: "pending", 3: "pending"}

        rid2 = chain.request(2)  # token 2: a request opened after B, fulfilled before the refresh sends
        agent.poll_once()
        evolve = agent.store.get_by_key(f"evolve:{chain.w3.eth.chain_id}:{rid2}")
        assert evolve is not None and evolve.state == JobState.QUEUED
        assert agent.work_once() == 1  # evolutions go first: the queued refresh waits while token 2 evolves
        assert agent.store.get(evolve.id).state == JobState.CONFIRMED
        assert chain.collection.functions.stageOf(2).call() == 1
        rid1 = chain.request(1)  # token 1: a request opened after B, still pending when the refresh sends

        work_refresh_only(
            agent, job.id
        )  # tokens 2 and 3 read at B, all rendered, the pre-send check, the send
        items = {i.token_id: i for i in agent.refresh.store.items(job.id)}
        assert {t: i.state.value for t, i in items.items()} == {1: "deferred", 2: "deferred", 3: "confirmed"}
        assert f"request {rid1:#x} for token 1 was opened after block" in items[1].reason
        assert "metadata changed after block" in items[2].reason and "evolved to stage 1" in items[2].reason
        # the evolution of token 2 is what the token shows; token 1 is untouched, its request still pending
        evolved = parse_metadata(
            agent.repo.block_get(cid_from_digest(chain.collection.functions.metadataDigestOf(2).call()))
        )
        assert evolved.stage == 1
        assert chain.collection.functions.metadataDigestOf(1).call() == bytes(32) and chain.is_pending(rid1)
