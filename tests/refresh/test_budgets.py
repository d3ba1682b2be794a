"""Budgets stop refreshes, the remaining work stays recorded, and the refresh resumes later where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from agent.app import build_agent
from agent.jobs import JobState
from agent.metrics import REGISTRY
from agent.settings import Settings
from tests.refresh.conftest import drive, states
from tests.support.clock import FakeClock
from tests.support.devchain import CollectionChain


def paused(budget: str) -> float:
    return REGISTRY.get_sample_value("chrysalis_refresh_paused_total", {"budget": budget}) or 0.0


@pytest.mark.slow
def test_max_tokens_pauses_a_refresh_and_it_resumes_with_the_rest_after_the_pause(
    chain: CollectionChain, make: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make(max_tokens=2, pause_s=600)
    before = paused("max_tokens")
    with build_agent(settings, clock=clock) as agent:
        job, _ = agent.refresh.queue_manual([1, 2, 3, 4, 5])
        stopped = drive(agent, job.id)
        run = agent.refresh.store.run(job.id)
        assert stopped.state == JobState.QUEUED and run.pause_reason == "max_tokens"
        assert (stopped.run_after - clock.now).total_seconds() == 600
        # what was done and what is left are both recorded
        assert states(agent, job.id) == {
            1: "confirmed",
            2: "confirmed",
            3: "changed",
            4: "changed",
            5: "changed",
        }
        assert paused("max_tokens") == before + 1
        assert agent.work_once() == 0  # not claimable before the pause ends

    clock.advance(601)
    with build_agent(settings, clock=clock) as agent:  # a restart in between changes nothing
        resumed = drive(agent, job.id)
        assert states(agent, job.id) == {
            1: "confirmed",
            2: "confirmed",
            3: "confirmed",
            4: "confirmed",
            5: "changed",
        }
        assert resumed.state == JobState.QUEUED  # paused again after two more
        clock.advance(601)
        done = drive(agent, job.id)
    assert done.state == JobState.CONFIRMED and done.result["counts"] == {"confirmed": 5}
    assert len(done.result["transactions"]) == 3
    assert agent.refresh.store.run(job.id).block_number == run.block_number  # still the one block


def test_the_gas_per_day_budget_pauses_until_midnight_utc_and_the_refresh_finishes_the_next_day(
    chain: CollectionChain, make: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make(max_gas_per_day=160_000, send_batch=100)
    with build_agent(settings, clock=clock) as agent:
        job, _ = agent.refresh.queue_manual(list(range(1, 9)))
        stopped = drive(agent, job.id)
        run = agent.refresh.store.run(job.id)
        assert stopped.state == JobState.QUEUED and run.pause_reason == "gas_per_day"
        assert run.paused_until == datetime(2030, 1, 2, tzinfo=UTC)
        sent = [s for s in states(agent, job.id).values() if s == "confirmed"]
        left = [s for s in states(agent, job.id).values() if s == "published"]
        assert sent and left and len(sent) + len(left) == 8  # the batch was cut to what fits today
        spent = agent.refresh.store.gas_between(
            datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)
        )
        assert 0 < spent <= 160_000

        clock.now = datetime(2030, 1, 2, 0, 0, 1, tzinfo=UTC)
        done = drive(agent, job.id)
        assert done.state == JobState.CONFIRMED, done.last_error
        assert done.result["counts"] == {"confirmed": 8}
        today = agent.refresh.store.gas_between(
            datetime(2030, 1, 2, tzinfo=UTC), datetime(2030, 1, 3, tzinfo=UTC)
        )
        assert 0 < today <= 160_000


def test_a_fee_spike_above_the_refresh_cap_sends_nothing_and_the_refresh_resumes_when_fees_fall(
    chain: CollectionChain, make: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make(max_fee_per_gas_gwei=20.0, pause_s=300)
    with build_agent(settings, clock=clock) as agent:
        job, _ = agent.refresh.queue_manual([1, 2, 3])
        chain.rpc("anvil_setNextBlockBaseFeePerGas", hex(80 * 10**9))  # 80 gwei: above the 20 gwei cap
        chain.mine()
        nonce = chain.agent_nonce()
        stopped = drive(agent, job.id)
        run = agent.refresh.store.run(job.id)
        assert stopped.state == JobState.QUEUED and run.pause_reason == "fee"
        assert "above refresh.max_fee_per_gas_gwei (20.000 gwei)" in run.pause_detail
        assert set(states(agent, job.id).values()) == {"published"}  # rendered and pinned, not paid for
        assert chain.agent_nonce() == nonce

        chain.rpc("anvil_setNextBlockBaseFeePerGas", hex(10**9))
        chain.mine(3)
        clock.advance(301)
        done = drive(agent, job.id)
    assert done.state == JobState.CONFIRMED, done.last_error
    assert done.result["counts"] == {"confirmed": 3}
    for tx_hash in done.result["transactions"]:
        assert chain.w3.eth.get_transaction(tx_hash)["maxFeePerGas"] <= 20 * 10**9


def test_a_paused_collection_sends_no_refresh_and_the_refresh_resumes_after_unpause(
    chain: CollectionChain, make: Callable[..., Settings], clock: FakeClock
) -> None:
    """L4: pausing stops refreshMetadata on-chain. The refresh sends nothing (one paused() read, no reverting
    estimate per token), waits with a named reason, and finishes after the unpause."""
    settings = make(pause_s=300)
    f = chain.collection.functions
    with build_agent(settings, clock=clock) as agent:
        job, _ = agent.refresh.queue_manual([1, 2, 3])
        chain.transact(f.pause(), chain.admin)
        nonce = chain.agent_nonce()
        stopped = drive(agent, job.id)
        run = agent.refresh.store.run(job.id)
        assert stopped.state == JobState.QUEUED and run.pause_reason == "paused"
        assert "is paused" in run.pause_detail
        assert set(states(agent, job.id).values()) == {"published"}
        assert chain.agent_nonce() == nonce

        chain.transact(f.unpause(), chain.admin)
        clock.advance(301)
        done = drive(agent, job.id)
    assert done.state == JobState.CONFIRMED, done.last_error
    assert done.result["counts"] == {"confirmed": 3}


def test_an_agent_without_refresher_role_fails_the_refresh_with_a_named_reason(
    chain: CollectionChain, make: Callable[..., Settings], clock: FakeClock
) -> None:
    """AGENT_ROLE no longer refreshes: without REFRESHER_ROLE nothing is sent and the error says what to grant."""
    settings = make()
    f = chain.collection.functions
    chain.transact(f.revokeRole(f.REFRESHER_ROLE().call(), chain.agent), chain.admin)
    with build_agent(settings, clock=clock) as agent:
        job, _ = agent.refresh.queue_manual([1, 2])
        nonce = chain.agent_nonce()
        for _ in range(200):
            agent.poll_once()
            agent.work_once()
            current = agent.store.get(job.id)
            if current.last_error:
                break
        assert current.last_error is not None, current
    assert "does not hold REFRESHER_ROLE" in current.last_error
    assert chain.agent_nonce() == nonce
