"""Reorgs on anvil: a request orphaned after the agent saw it is never fulfilled (nor paid for); a request
re-mined in another block (same id, new seed) is fulfilled once, with metadata made from the canonical log; a
fulfilment mined in an orphaned block is re-checked and sent again."""

from __future__ import annotations

from agent.app import build_agent
from agent.generate.verify import verify
from agent.jobs import JobState, Stage
from agent.jobs.store import ORPHANED_REASON
from agent.metadata import cid_from_digest, parse_metadata
from agent.settings import Settings
from tests.support.devchain import CollectionChain


def _key(chain: CollectionChain, rid: int) -> str:
    return f"evolve:{chain.w3.eth.chain_id}:{rid}"


def test_a_request_orphaned_after_the_agent_saw_it_is_cancelled_by_the_reorg_notice(
    chain: CollectionChain, settings: Settings
) -> None:
    with build_agent(settings) as agent:
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
    chain: CollectionChain, settings: Settings
) -> None:
    with build_agent(settings) as agent:
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


def _requested_log(chain: CollectionChain, rid: int) -> dict[str, object]:
    """Where the canonical chain has request ``rid`` now: its block and seed."""
    (log,) = chain.collection.events.EvolutionRequested().get_logs(
        from_block=0, argument_filters={"requestId": rid}
    )
    return {
        "block_number": log["blockNumber"],
        "block_hash": "0x" + bytes(log["blockHash"]).hex(),
        "seed": "0x" + bytes(log["args"]["seed"]).hex(),
    }


def test_a_request_re_mined_with_a_new_seed_is_fulfilled_once_from_the_canonical_log(
    chain: CollectionChain, settings: Settings
) -> None:
    """The agent publishes metadata for a request; a reorg re-mines the same request (same id) in another block
    with another seed. The worker reaches the send step before the watcher sees the reorg: the pre-send check
    (isPendingWith) drops the stale fulfilment without spending gas, and once the watcher delivers the re-mined
    log the job restarts from it. The token is fulfilled exactly once, with metadata whose receipt verifies and
    names the canonical block and seed."""
    with build_agent(settings) as agent:
        agent.poll_once()  # the watcher is at the head before the request
        before = chain.rpc("evm_snapshot")
        rid = chain.request(1)
        orphaned = _requested_log(chain, rid)
        assert agent.poll_once() >= 1
        assert agent.work_once(until=Stage.PUBLISHED) == 1  # inputs, generated, pinned: made from this log
        job = agent.store.get_by_key(_key(chain, rid))
        assert job is not None and job.stage == Stage.PUBLISHED
        assert job.payload["seed"] == orphaned["seed"]

        chain.rpc("evm_revert", before)  # the request's block is gone ...
        chain.mine(1)  # ... the chain goes on differently ...
        assert chain.request(1) == rid  # ... and the same request is mined again: same id,
        chain.mine(2)
        canonical = _requested_log(chain, rid)
        assert canonical["seed"] != orphaned["seed"]  # new block, new seed
        assert canonical["block_hash"] != orphaned["block_hash"]
        assert chain.is_pending(rid)  # what the old pre-send check (isPending) looked at

        agent.work_once()  # the worker gets there before the watcher
        assert chain.agent_nonce() == 0 and chain.evolved() == []  # dropped before sending: no gas spent
        job = agent.store.get(job.id)
        # its source log is orphaned: cancelled as such, no attempt spent, revived by the re-mined log
        assert job.state == JobState.CANCELLED and job.reason == ORPHANED_REASON and job.attempts <= 1

        status = agent.run_until_idle(timeout_s=120)  # the watcher sees the reorg; the job restarts
        job = agent.store.get(job.id)
        digest = chain.collection.functions.metadataDigestOf(1).call()
        cid = cid_from_digest(digest)
        metadata = parse_metadata(agent.repo.block_get(cid), cid=cid)

    assert status.pending == 0 and status.jobs["confirmed"] == 1
    assert job.state == JobState.CONFIRMED and job.payload["seed"] == canonical["seed"]
    assert job.source is not None and job.source.block_hash == canonical["block_hash"]
    assert job.result is not None and job.result["token_uri"] == f"ipfs://{cid}"
    evolved = chain.evolved()
    assert [int(e["args"]["requestId"]) for e in evolved] == [rid]  # exactly once
    (fulfilment,) = evolved
    assert bytes(fulfilment["args"]["metadataDigest"]) == digest
    # One transaction from the agent, and it succeeded: no reverted transaction, nothing paid twice.
    assert chain.agent_nonce() == 1
    assert chain.w3.eth.get_transaction_receipt(fulfilment["transactionHash"])["status"] == 1
    # The metadata was made from the canonical request: its block and its seed, and its receipt verifies.
    assert metadata.inputs["block_number"] == canonical["block_number"]
    assert metadata.inputs["block_hash"] == canonical["block_hash"]
    assert metadata.receipt["seed"]["onchain_seed"] == canonical["seed"]
    result = verify(dict(metadata.receipt))
    assert result.match, result.mismatches


def test_a_fulfilment_mined_in_an_orphaned_block_is_rechecked_and_sent_again(
    chain: CollectionChain, settings: Settings
) -> None:
    rid = chain.request(1)
    chain.mine(2)  # the request is buried under blocks the reorg keeps
    with build_agent(settings) as agent:
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
