"""Submitting on anvil: a stuck fulfilment is replaced with a fee bump; requests cancelled on-chain or fulfilled
by someone else are never paid for; a job whose transaction reverted is settled from the chain."""

from __future__ import annotations

import threading

import pytest
from web3.logs import DISCARD

from agent.app import build_agent
from agent.jobs import JobState, Stage
from agent.metrics import REGISTRY
from agent.settings import Settings
from tests.support.devchain import REQUEST_TIMEOUT, CollectionChain
from tests.support.waiting import eventually


def _key(chain: CollectionChain, rid: int) -> str:
    return f"evolve:{chain.w3.eth.chain_id}:{rid}"


def _replaced() -> float:
    return REGISTRY.get_sample_value("chrysalis_tx_replaced_total", {"label": "fulfillEvolutions"}) or 0.0


def test_a_stuck_fulfilment_is_replaced_with_a_fee_bump_and_confirmed_once(
    chain: CollectionChain, settings: Settings
) -> None:
    settings.submit.stuck_after_s = 0.3
    rid = chain.request(1)
    with build_agent(settings) as agent:
        agent.poll_once()
        agent.work_once(until=Stage.PUBLISHED)
        chain.automine(False)  # nothing is mined until the test mines: the first broadcast goes stale
        before = _replaced()
        worker = threading.Thread(target=agent.work_once, daemon=True)
        worker.start()
        eventually(lambda: _replaced() > before, timeout=30, what="a replacement to be sent")
        pool = {sender.lower(): txs for sender, txs in chain.rpc("txpool_content")["pending"].items()}
        assert len(pool[chain.agent.lower()]) == 1  # the replacement took the original's nonce
        chain.mine()
        worker.join(30)
        assert not worker.is_alive()
        job = agent.store.get_by_key(_key(chain, rid))

    assert job is not None and job.state == JobState.CONFIRMED
    recorded = job.output(Stage.SUBMITTED)["tx_hash"]
    assert recorded in job.result["replaced"] and job.result["tx_hash"] != recorded
    assert [int(e["args"]["requestId"]) for e in chain.evolved()] == [rid]
    assert chain.agent_nonce() == 1


def test_a_request_cancelled_on_chain_is_dropped_before_sending(
    chain: CollectionChain, settings: Settings
) -> None:
    rid = chain.request(1)
    with build_agent(settings) as agent:
        agent.poll_once()
        agent.work_once(until=Stage.PUBLISHED)
        chain.rpc("evm_increaseTime", REQUEST_TIMEOUT + 1)
        chain.mine()
        chain.transact(chain.collection.functions.cancelEvolution(rid), chain.holders[0])
        agent.work_once()  # before the watcher sees the cancellation: the pre-send check catches it
        job = agent.store.get_by_key(_key(chain, rid))

    assert job is not None and job.state == JobState.CANCELLED
    assert "cancelled on-chain" in (job.reason or "")
    assert chain.agent_nonce() == 0 and chain.evolved() == []


def test_the_watcher_cancels_the_job_of_a_request_cancelled_on_chain(
    chain: CollectionChain, settings: Settings
) -> None:
    rid = chain.request(1)
    with build_agent(settings) as agent:
        agent.poll_once()
        chain.rpc("evm_increaseTime", REQUEST_TIMEOUT + 1)
        chain.mine()
        chain.transact(chain.collection.functions.cancelEvolution(rid), chain.holders[0])
        status = agent.run_until_idle(timeout_s=30)
        job = agent.store.get_by_key(_key(chain, rid))
    assert job is not None and job.state == JobState.CANCELLED and job.stage is None
    assert status.jobs["cancelled"] == 1 and chain.agent_nonce() == 0


def test_a_request_fulfilled_by_someone_else_is_cancelled_not_paid_for(
    chain: CollectionChain, settings: Settings
) -> None:
    rid = chain.request(1)
    with build_agent(settings) as agent:
        agent.poll_once()
        agent.work_once(until=Stage.PUBLISHED)
        f = chain.collection.functions
        chain.transact(f.grantRole(f.AGENT_ROLE().call(), chain.admin), chain.admin)
        chain.transact(f.fulfillEvolution(rid, chain.seed(rid), b"\x42" * 32, bytes(32)), chain.admin)
        agent.run_until_idle(timeout_s=30)
        job = agent.store.get_by_key(_key(chain, rid))
    assert job is not None and job.state == JobState.CANCELLED
    assert f"fulfilled by {chain.admin}" in (job.reason or "")
    assert chain.agent_nonce() == 0


@pytest.mark.parametrize("front_runner", ["cancel", "fulfil"])
def test_a_request_skipped_by_a_mined_batch_is_settled_not_confirmed(
    chain: CollectionChain, settings: Settings, front_runner: str
) -> None:
    """M4: a cancellation by the holder (or a fulfilment by another agent key) lands in the same block, ahead of
    the agent's batch (higher tip). The batch no longer reverts: the contract skips that request
    (FulfilmentSkipped) and fulfils the other. The skipped request's job is settled by chain truth (cancelled,
    with the on-chain reason), exactly as if the pre-send check had dropped it; never confirmed."""
    f = chain.collection.functions
    chain.transact(f.grantRole(f.AGENT_ROLE().call(), chain.admin), chain.admin)
    taken, other = chain.request(1), chain.request(2)
    with build_agent(settings) as agent:
        agent.poll_once()
        agent.work_once(until=Stage.PUBLISHED)
        if front_runner == "cancel":
            chain.rpc("evm_increaseTime", REQUEST_TIMEOUT + 1)
            chain.mine()
        chain.automine(False)
        worker = threading.Thread(target=agent.work_once, daemon=True)
        worker.start()
        eventually(lambda: chain.rpc("txpool_content")["pending"], timeout=30, what="the batch in the pool")
        fee = {"gas": 300_000, "maxFeePerGas": 200 * 10**9, "maxPriorityFeePerGas": 100 * 10**9}
        if front_runner == "cancel":
            f.cancelEvolution(taken).transact({"from": chain.holders[0], **fee})
        else:
            f.fulfillEvolution(taken, chain.seed(taken), b"\x42" * 32, bytes(32)).transact(
                {"from": chain.admin, **fee}
            )
        with chain.mining(0.1):
            worker.join(60)
        assert not worker.is_alive()
        jobs = {j.payload["request_id"]: j for j in agent.store.list_jobs()}

    first_tx = jobs[taken].output(Stage.SUBMITTED)["tx_hash"]
    receipt = chain.w3.eth.get_transaction_receipt(first_tx)
    assert receipt["status"] == 1  # mined and successful: one request skipped, not the whole batch reverted
    skipped = chain.collection.events.FulfilmentSkipped().process_receipt(receipt, errors=DISCARD)
    assert [int(e["args"]["requestId"]) for e in skipped] == [taken]
    assert jobs[taken].state == JobState.CANCELLED
    expected = "cancelled on-chain" if front_runner == "cancel" else f"fulfilled by {chain.admin}"
    assert expected in (jobs[taken].reason or "")
    assert jobs[other].state == JobState.CONFIRMED and jobs[other].result["tx_hash"] == first_tx
    assert chain.agent_nonce() == 1  # nothing re-sent
