"""Reorgs on anvil: a request orphaned after the agent saw it is never fulfilled (nor paid for); a fulfilment
mined in an orphaned block is re-checked and sent again."""

from __future__ import annotations

from agent.jobs import JobState, Stage
from agent.pipeline import Agent
from agent.settings import Settings
from tests.pipeline.conftest import Chain


def _key(chain: Chain, rid: int) -> str:
    return f"evolve:{chain.w3.eth.chain_id}:{rid}"


def test_a_request_orphaned_after_the_agent_saw_it_is_cancelled_by_the_reorg_notice(
    chain: Chain, settings: Settings
) -> None:
    with Agent.from_settings(settings) as agent:
        agent.poll_once()  # the watcher is at the head before the request
        before = chain.rpc("evm_snapshot")
        rid = chain.request(1)
        assert agent.poll_once() >= 1
        job = agent.store.get_by_key(_key(chain, rid))
        assert job is not None and job.state == JobState.QUEUED

        chain.rpc("evm_revert", before)  # the request's block is gone ...
        chain.mine(3)  # ... and a longer branch without it replaces it
        agent.poll_once()
        job = agent.store.get(job.id)
        assert job.state == JobState.CANCELLED and "orphaned" in (job.reason or "")

        status = agent.run_until_idle(timeout_s=30)
    assert status.jobs["confirmed"] == 0 and status.pending == 0
    assert chain.agent_nonce() == 0  # nothing was sent, nothing paid
    assert chain.evolved() == [] and not chain.is_pending(rid)


def test_a_request_orphaned_after_its_metadata_was_published_is_never_paid_for(
    chain: Chain, settings: Settings
) -> None:
    with Agent.from_settings(settings) as agent:
        agent.poll_once()
        before = chain.rpc("evm_snapshot")
        rid = chain.request(1)
        agent.poll_once()
        assert agent.work_once(until=Stage.PUBLISHED) == 1  # generated and pinned, not sent
        job = agent.store.get_by_key(_key(chain, rid))
        assert job is not None and job.stage == Stage.PUBLISHED and job.state == JobState.QUEUED

        chain.rpc("evm_revert", before)
        chain.mine(3)
        agent.work_once()  # the worker gets there before the watcher: the pre-send check stops it
        job = agent.store.get(job.id)

    assert job.state == JobState.CANCELLED
    assert "not on the canonical chain" in (job.reason or "")
    assert chain.agent_nonce() == 0 and chain.evolved() == []


def test_a_fulfilment_mined_in_an_orphaned_block_is_rechecked_and_sent_again(
    chain: Chain, settings: Settings
) -> None:
    rid = chain.request(1)
    chain.mine(2)  # the request is buried under blocks the reorg keeps
    with Agent.from_settings(settings) as agent:
        agent.run_until_idle(timeout_s=60)
        first = agent.store.get_by_key(_key(chain, rid))
        assert first is not None and first.state == JobState.CONFIRMED
        mined_in = first.result["block_number"]
        depth = chain.w3.eth.block_number - mined_in + 1
        chain.rpc(
            "anvil_reorg", depth, []
        )  # replace the fulfilment's block (and later ones) with empty blocks
        assert chain.is_pending(rid) and chain.evolved() == []

        status = agent.run_until_idle(timeout_s=60)
        replays = [j for j in agent.store.list_jobs() if j.payload.get("replay_of") == first.id]

    assert len(replays) == 1 and replays[0].state == JobState.CONFIRMED
    replay = replays[0]
    assert replay.output(Stage.PUBLISHED) == first.output(Stage.PUBLISHED)  # same metadata, not regenerated
    assert [int(e["args"]["requestId"]) for e in chain.evolved()] == [rid]
    assert not chain.is_pending(rid) and status.pending == 0
