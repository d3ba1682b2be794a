"""Issue 11, anomalies 5 and 7, on anvil: a confirmation is final only once the watcher has passed its block
(and the block is still canonical); a stall is waited for, never counted as a failed attempt; a restart settles
what was broadcast from the records, not from the node's "pending" state. Counted every time: 0 requests lost,
0 fulfilled twice, 0 reverted agent transactions."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import build_agent
from agent.jobs import JobState, Stage
from agent.pipeline import hooks
from agent.settings import Settings
from agent.submit.journal_sql import SqlBroadcastJournal
from tests.support.agent_settings import Keystore, agent_settings
from tests.support.devchain import CollectionChain
from tests.support.rpc_proxy import FaultProxy
from tests.support.waiting import eventually


def _key(chain: CollectionChain, rid: int) -> str:
    return f"evolve:{chain.w3.eth.chain_id}:{rid}"


def _agent_txs(chain: CollectionChain) -> list[tuple[str, int]]:
    """(hash, status) of every agent transaction on the canonical chain."""
    out = []
    for n in range(chain.w3.eth.block_number + 1):
        for tx in chain.w3.eth.get_block(n, full_transactions=True)["transactions"]:
            if tx["from"].lower() == chain.agent.lower():
                receipt = chain.w3.eth.get_transaction_receipt(tx["hash"])
                out.append(("0x" + bytes(tx["hash"]).hex(), int(receipt["status"])))
    return out


def _agent_pool(chain: CollectionChain) -> list[str]:
    pending = chain.rpc("txpool_content")["pending"]
    txs = next((t for s, t in pending.items() if s.lower() == chain.agent.lower()), {})
    return [tx["hash"].lower() for tx in txs.values()]


def _exactly_once(chain: CollectionChain, rids: list[int]) -> None:
    evolved = [int(e["args"]["requestId"]) for e in chain.evolved()]
    assert sorted(evolved) == sorted(rids), evolved  # none lost, none fulfilled twice
    assert [h for h, status in _agent_txs(chain) if status != 1] == []  # no reverted agent transaction


def test_a_fulfilment_orphaned_before_the_watcher_reaches_its_block_is_rechecked_and_sent_again(
    chain: CollectionChain, settings: Settings
) -> None:
    rid = chain.request(1)
    chain.mine(2)  # the request is buried under blocks the reorg keeps
    with build_agent(settings) as agent:
        agent.poll_once()  # the watcher sees the request ... and then lags: it is not polled again
        eventually(
            lambda: agent.work_once() == 0 and agent.store.counts()[JobState.CONFIRMED] == 1, timeout=60
        )
        first = agent.store.get_by_key(_key(chain, rid))
        assert first is not None and first.state == JobState.CONFIRMED
        assert not first.settled and first.settle_block == first.result["block_number"]  # not final yet
        assert agent.status().unsettled == 1

        mined_in = first.result["block_number"]
        chain.rpc("anvil_reorg", chain.w3.eth.block_number - mined_in + 1, [])  # the fulfilment's block goes
        assert chain.is_pending(rid) and chain.evolved() == []

        def replayed() -> bool:
            agent.work_once()
            replays = [j for j in agent.store.list_jobs() if j.payload.get("replay_of") == first.id]
            return bool(replays) and replays[0].state == JobState.CONFIRMED

        eventually(replayed, timeout=60, what="the orphaned fulfilment re-sent and confirmed")
        assert not chain.is_pending(rid)
        original = agent.store.get(first.id)
        assert original.settled and original.result["orphaned"] == first.result["tx_hash"]

        status = agent.run_until_idle(timeout_s=60)  # the watcher catches up: everything becomes final
        eventually(lambda: agent.work_once() == 0 and agent.status().unsettled == 0, timeout=30)
        replays = [j for j in agent.store.list_jobs() if j.payload.get("replay_of") == first.id]

    assert len(replays) == 1 and replays[0].settled
    assert replays[0].output(Stage.PUBLISHED) == first.output(Stage.PUBLISHED)  # the same metadata
    assert status.pending == 0
    _exactly_once(chain, [rid])


def test_a_confirmation_becomes_final_once_the_watcher_passes_its_block(
    chain: CollectionChain, settings: Settings
) -> None:
    rid = chain.request(2)
    with build_agent(settings) as agent:
        agent.poll_once()
        agent.work_once()
        job = agent.store.get_by_key(_key(chain, rid))
        assert job is not None and job.state == JobState.CONFIRMED and not job.settled
        agent.work_once()
        assert not agent.store.get(job.id).settled  # the watcher has not passed it: still re-checked
        agent.poll_once()
        eventually(lambda: agent.work_once() == 0 and agent.store.get(job.id).settled, timeout=20)
        assert agent.status().unsettled == 0
    _exactly_once(chain, [rid])


def test_a_fulfilment_stalled_longer_than_the_attempts_allow_is_waited_for_not_failed(
    chain: CollectionChain, keystore: Keystore, tmp_path: Path, tiny_lm: Path
) -> None:
    settings = agent_settings(
        chain, keystore, tmp_path / "data", f"sqlite:///{tmp_path / 'agent.db'}", tiny_lm,
        max_attempts=2, wait_chunk_s=0.1,
    )  # fmt: skip
    settings.submit.receipt_timeout_s = 0.3
    settings.submit.stuck_after_s = 0.1
    settings.submit.max_replacements = 2
    rid = chain.request(3)
    with build_agent(settings) as agent:
        agent.poll_once()
        agent.work_once(until=Stage.PUBLISHED)
        chain.automine(False)  # the fulfilment stalls in the pool
        for _ in range(8):  # 8 waits of 0.3 s each: four times what 2 attempts would have allowed
            agent.work_once()
        job = agent.store.get_by_key(_key(chain, rid))
        assert job is not None and job.state == JobState.QUEUED, (job.state, job.reason)
        assert job.attempts == 0 and job.last_error is None
        assert job.waiting is not None and "waiting" in job.waiting and "nonce 0" in job.waiting
        status = agent.status()
        assert status.stalled == 1 and status.jobs["failed"] == 0
        assert len(_agent_pool(chain)) == 1  # replaced within the cap, one transaction for the nonce
        journal = SqlBroadcastJournal(agent.db)
        assert journal.replacements(chain.agent, 0) == 2

        chain.automine(True)
        chain.mine()
        agent.run_until_idle(timeout_s=30)
        job = agent.store.get(job.id)
        assert agent.status().stalled == 0

    assert job.state == JobState.CONFIRMED and job.waiting is None
    assert chain.agent_nonce() == 1
    _exactly_once(chain, [rid])


class _Crash(Exception):
    """The agent dies right after broadcasting, before the ``submitted`` record."""


def test_a_restart_between_broadcast_and_record_behind_pending_as_latest_sends_nothing_twice(
    chain: CollectionChain, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FaultProxy(chain.url, pending_as_latest=True)
    settings.chain.rpc_url = proxy.url
    settings.submit.receipt_timeout_s = 0.5
    rids = [chain.request(4), chain.request(5)]
    try:
        with build_agent(settings) as agent:
            agent.poll_once()
            agent.work_once(until=Stage.PUBLISHED)
            chain.automine(False)
            real = hooks.reached

            def crash(point: str) -> None:
                real(point)
                if point == "sent":
                    raise _Crash

            monkeypatch.setattr(hooks, "reached", crash)
            with pytest.raises(_Crash):
                agent.work_once()
            monkeypatch.setattr(hooks, "reached", real)
            jobs = agent.store.list_jobs()
        assert all(j.stage == Stage.PUBLISHED for j in jobs)  # the broadcast was never recorded on a job
        (sent,) = _agent_pool(chain)
        # The fee market moves while the agent is down: whatever it signed now would differ from what is in
        # the pool (the provider's "pending" shows nothing of it: the nonce count and the pre-send checks see
        # the request open and the nonce free).
        settings.submit.priority_fee_gwei = 5.0
        assert chain.is_pending(rids[0]) and chain.agent_nonce() == 0

        with build_agent(settings) as restarted:  # same settings, same database
            restarted.work_once()  # finds the recorded broadcast: waits for it (a stall), sends nothing
            assert _agent_pool(chain) == [sent]
            assert {j.stage for j in restarted.store.list_jobs()} == {Stage.SUBMITTED}
            assert proxy.injected["pending_as_latest"] > 0
            with chain.mining(0.2):
                status = restarted.run_until_idle(timeout_s=60)
            jobs = restarted.store.list_jobs()
    finally:
        proxy.close()

    assert status.jobs["confirmed"] == 2 and status.pending == 0
    assert {j.result["tx_hash"].lower() for j in jobs} == {sent}
    assert [h for h, _ in _agent_txs(chain)] == [sent] and chain.agent_nonce() == 1
    _exactly_once(chain, rids)
