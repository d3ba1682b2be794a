"""Review mode (``studio.review``) holds refreshes too: nothing is published or written before a curator approves,
and a rejected token keeps its metadata."""

from __future__ import annotations

from collections.abc import Callable

from agent.app import build_agent
from agent.jobs import JobState
from agent.metadata import cid_from_digest, parse_metadata
from agent.review import ReviewState, ReviewStore
from agent.settings import Settings
from tests.refresh.conftest import states
from tests.support.devchain import CollectionChain


def test_a_refreshed_token_is_written_only_once_a_curator_approves_it(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    settings = make()
    settings.studio.review = True
    with build_agent(settings) as agent:
        job, _ = agent.refresh.queue_manual([5, 6])
        for _ in range(4):
            agent.work_once()
        assert states(agent, job.id) == {5: "generated", 6: "generated"}  # waiting for curators
        assert agent.store.get(job.id).state == JobState.QUEUED and chain.agent_nonce() == 0

        reviews = ReviewStore(agent.db)
        items = {i.token_id: i for i in reviews.list_items(states=[ReviewState.AWAITING], kind="refresh")}
        assert set(items) == {5, 6}
        reviews.approve(items[5].id, "alice")
        reviews.reject(items[6].id, "bob", "too dark")
        while not agent.store.get(job.id).state.terminal:
            agent.work_once()
        done = agent.store.get(job.id)

        assert done.state == JobState.CONFIRMED and states(agent, job.id) == {5: "confirmed", 6: "skipped"}
        assert "rejected in review" in agent.refresh.store.item(job.id, 6).reason
        assert "too dark" in agent.refresh.store.item(job.id, 6).reason
        cid = cid_from_digest(chain.collection.functions.metadataDigestOf(5).call())
        assert parse_metadata(agent.repo.block_get(cid), cid=cid).approved_by == "alice"
        assert chain.collection.functions.metadataDigestOf(6).call() == bytes(32)
