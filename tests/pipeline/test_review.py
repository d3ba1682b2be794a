"""Review mode (``studio.review``): nothing is published or sent until a curator approves; a rejection ends
the job with the curator's reason and pays nothing."""

from __future__ import annotations

from agent.app import build_agent
from agent.jobs import JobState, Stage
from agent.metadata import parse_metadata
from agent.review import ReviewState, ReviewStore
from agent.settings import Settings
from tests.support.devchain import CollectionChain


def test_a_candidate_is_published_only_once_approved_and_a_rejection_cancels(
    chain: CollectionChain, settings: Settings
) -> None:
    settings.studio.review = True
    approved_rid, rejected_rid = chain.request(1), chain.request(2)
    with build_agent(settings) as agent:
        agent.poll_once()
        agent.work_once()
        jobs = {j.payload["request_id"]: j for j in agent.store.list_jobs()}
        assert all(j.state == JobState.QUEUED and j.stage == Stage.GENERATED for j in jobs.values())
        assert chain.agent_nonce() == 0

        reviews = ReviewStore(agent.db)
        items = {i.job_id: i for i in reviews.list_items(states=[ReviewState.AWAITING])}
        assert set(items) == {j.id for j in jobs.values()}
        reviews.approve(items[jobs[approved_rid].id].id, "alice")
        reviews.reject(items[jobs[rejected_rid].id].id, "bob", "the colours clash")
        agent.run_until_idle(timeout_s=60)
        approved = agent.store.get(jobs[approved_rid].id)
        rejected = agent.store.get(jobs[rejected_rid].id)
        cid = approved.result["metadata_cid"]
        metadata = parse_metadata(agent.repo.block_get(cid), cid=cid)

    assert approved.state == JobState.CONFIRMED and metadata.approved_by == "alice"
    assert rejected.state == JobState.CANCELLED and "the colours clash" in (rejected.reason or "")
    assert [int(e["args"]["requestId"]) for e in chain.evolved()] == [approved_rid]
    assert chain.is_pending(rejected_rid)  # the holder may cancel it after the timeout and get the fee back
