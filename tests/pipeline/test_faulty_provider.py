"""The whole agent behind a provider that lies and fails (issue 11): real anvil, the shipped contracts, the fault
proxy of tests/support/rpc_proxy.py between the agent and the node."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from agent.app import build_agent
from agent.jobs import JobState
from agent.metrics import REGISTRY
from agent.settings import Settings
from agent.watch.watcher import BLOOM_RECHECKS
from tests.support.devchain import CollectionChain
from tests.support.rpc_proxy import FaultProxy, Faults
from tests.support.waiting import eventually


def behind(settings: Settings, proxy: FaultProxy, **agent: Any) -> Settings:
    """``settings`` with every RPC call of the agent going through ``proxy``."""
    return settings.model_copy(
        update={
            "chain": settings.chain.model_copy(update={"rpc_url": proxy.url}),
            "agent": settings.agent.model_copy(update=agent),
        }
    )


def _recovered(how: str) -> float:
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "chrysalis_watch_logs_recovered"
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("how") == how
    )


@pytest.mark.parametrize("max_span", [None, 2], ids=["uncapped", "range-capped"])
def test_a_request_whose_log_every_answer_left_out_is_found_on_chain_and_fulfilled_once(
    chain: CollectionChain, settings: Settings, max_span: int | None
) -> None:
    """Range-capped: the reconciliation's search for the request's log keeps to what the provider accepts too
    (it once asked for 64 blocks at once, and a capped provider failed every poll until the test timed out)."""
    proxy = FaultProxy(chain.url, max_span=max_span, style="unknown")
    try:
        with build_agent(behind(settings, proxy, reconcile_interval_s=0.001)) as agent:
            agent.poll_once()
            rid = chain.request(1)
            chain.mine(4)  # blocks above the request: its search range is wider than the cap
            proxy.empty_logs_next = 1 + BLOOM_RECHECKS  # the range answer and every re-ask leave it out
            before = _recovered("reconcile")
            agent.poll_once()
            assert proxy.injected["empty_logs"] == 1 + BLOOM_RECHECKS
            job = agent.store.get_by_key(f"evolve:{chain.w3.eth.chain_id}:{rid}")
            assert job is not None, "the reconciliation sweep did not find the pending request"
            assert _recovered("reconcile") == before + 1
            status = agent.run_until_idle(timeout_s=90)
            job = agent.store.get(job.id)
    finally:
        proxy.close()
    assert job.state == JobState.CONFIRMED and status.pending == 0
    assert [int(e["args"]["requestId"]) for e in chain.evolved()] == [rid]
    assert not chain.is_pending(rid)


SOAK_FAULTS = Faults(
    seed=2026,
    drop=0.02,
    http_5xx=0.03,
    rate_limit=0.03,
    latency_s=(0.0, 0.004),
    stale_head=0.08,
    max_stale=2,
    empty_logs=0.15,
)
"""The soak's transport and lying faults, per request to the provider."""


@pytest.mark.slow
def test_soak_32_requests_through_a_faulty_provider_are_each_fulfilled_exactly_once(
    chain: CollectionChain, settings: Settings
) -> None:
    """Drops, 5xx, 429, latency, stale heads, empty log answers and a range cap in an unknown wording, all at
    once, for 32 requests in two waves over the 16 tokens: every request is fulfilled exactly once, without an
    operator's retry, and no agent transaction reverts."""
    proxy = FaultProxy(chain.url, max_span=8, style="unknown", faults=SOAK_FAULTS)
    started = time.monotonic()
    stop = threading.Event()
    requests: list[int] = []
    try:
        s = behind(settings, proxy, reconcile_interval_s=2.0, batch_size=8)
        with build_agent(s) as agent:
            statuses: list[Any] = []
            runner = threading.Thread(
                target=agent.run, args=(stop,), kwargs={"on_status": statuses.append}, daemon=True
            )
            runner.start()
            try:
                for wave in range(2):
                    opened = [chain.request(token, holder=(token - 1) // 8) for token in range(1, 17)]
                    chain.mine(3)  # blocks above the requests (the range cap then has ranges to refuse)
                    requests += opened
                    eventually(
                        lambda opened=opened: not any(chain.is_pending(r) for r in opened),
                        timeout=150,
                        interval=0.2,
                        what=f"wave {wave + 1}: every request fulfilled",
                    )
                eventually(  # and the agent knows it: every job confirmed and final, nothing left to do
                    lambda: (
                        statuses
                        and statuses[-1].jobs.get("confirmed") == 32
                        and statuses[-1].pending == 0
                        and statuses[-1].unsettled == 0
                    ),
                    timeout=60,
                    interval=0.2,
                    what="every job confirmed and final",
                )
            finally:
                stop.set()
                runner.join(60)
            status = statuses[-1]
    finally:
        proxy.close()
    took = time.monotonic() - started

    fulfilled = Counter(int(e["args"]["requestId"]) for e in chain.evolved())
    assert sorted(fulfilled) == sorted(requests) and len(requests) == 32  # 0 lost, 0 unknown
    assert set(fulfilled.values()) == {1}  # 0 fulfilled twice
    assert status.jobs.get("failed", 0) == 0 and status.stalled == 0, status  # no operator's retry needed
    reverted = []
    for number in range(0, chain.w3.eth.block_number + 1):
        for tx in chain.w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == chain.agent and chain.w3.eth.get_transaction_receipt(tx["hash"])["status"] != 1:
                reverted.append(tx["hash"].hex())
    assert reverted == []  # 0 reverted agent transactions
    for kind in ("drop", "http_5xx", "rate_limit", "stale_head", "empty_logs", "range_refused"):
        assert proxy.injected[kind] > 0, f"the soak never injected {kind}: {dict(proxy.injected)}"
    print(f"soak: 32 requests in {took:.0f} s; faults injected: {dict(proxy.injected)}")
