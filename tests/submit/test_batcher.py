"""Batched fulfilments and refreshes: pre-checked on-chain, grouped under count and gas caps."""

from __future__ import annotations

from typing import Any

import pytest
from web3.logs import DISCARD

from agent.settings import SubmitSettings
from agent.submit import Fulfilment, FulfilmentBatcher, Refresh, RefreshBatcher
from tests.submit.conftest import SubmitChain, digest


def _batcher(chain: SubmitChain, **settings: Any) -> FulfilmentBatcher:
    sender = chain.sender(**settings)
    return FulfilmentBatcher(sender, sender.rpc, chain.collection.address, sender.settings)


def _fulfilments(chain: SubmitChain, rids: list[int]) -> list[Fulfilment]:
    """One fulfilment per request, bound to the request's seed (from its EvolutionRequested log)."""
    return [Fulfilment(r, chain.seed(r), digest(r)) for r in rids]


def _evolved(chain: SubmitChain, tx_hash: str) -> list[Any]:
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    return list(chain.collection.events.Evolved().process_receipt(receipt, errors=DISCARD))


def test_several_requests_fulfilled_in_one_transaction(chain: SubmitChain) -> None:
    rids = [chain.request(t) for t in range(1, 6)]
    batcher = _batcher(chain)
    report = batcher.submit([Fulfilment(r, chain.seed(r), digest(r), digest(1000 + r)) for r in rids])

    assert report.tx_count == 1 and report.dropped == () and report.failed == []
    assert sorted(f.request_id for f in report.confirmed) == rids
    (result,) = report.results
    assert result.confirmation is not None and result.confirmation.status == 1
    events = _evolved(chain, result.confirmation.tx_hash)
    assert [e["args"]["requestId"] for e in events] == rids
    assert [e["args"]["metadataDigest"] for e in events] == [digest(r) for r in rids]
    assert [e["args"]["provenance"] for e in events] == [digest(1000 + r) for r in rids]
    for t in range(1, 6):
        assert chain.collection.functions.stageOf(t).call() == 1
    assert not any(batcher.check_pending(rids).values())
    assert not any(batcher.check_pending_with(_fulfilments(chain, rids)).values())


def test_pre_check_drops_fulfilled_cancelled_unknown_and_duplicate_requests(chain: SubmitChain) -> None:
    rids = [chain.request(t) for t in range(1, 7)]
    fulfilled, cancelled = rids[1], rids[3]
    chain.fulfil_directly(fulfilled)
    chain.cancel(cancelled)
    unknown = (30 << 32) | 1  # token 30 never had a request
    batcher = _batcher(chain)
    nonce = chain.w3.eth.get_transaction_count(chain.agent)
    items = _fulfilments(chain, rids) + [
        Fulfilment(unknown, bytes(32), digest(1)),
        Fulfilment(rids[0], chain.seed(rids[0]), digest(2)),
    ]
    items.append(Fulfilment((31 << 32) | 1, bytes(32), bytes(32)))

    report = batcher.submit(items)

    reasons = {d.key: d.reason for d in report.dropped}
    assert set(reasons) == {fulfilled, cancelled, unknown, rids[0], (31 << 32) | 1}
    assert "not pending" in reasons[fulfilled] and "not pending" in reasons[cancelled]
    assert "listed twice" in reasons[rids[0]] and "digest" in reasons[(31 << 32) | 1]
    assert report.tx_count == 1 and report.failed == []
    assert sorted(f.request_id for f in report.confirmed) == sorted(set(rids) - {fulfilled, cancelled})
    assert (
        chain.w3.eth.get_transaction_count(chain.agent) == nonce + 1
    )  # no reverted transaction was paid for


def test_sequential_and_batched_pre_checks_agree(chain: SubmitChain) -> None:
    rids = [chain.request(t) for t in range(1, 5)]
    chain.fulfil_directly(rids[2])
    batched = _batcher(chain, precheck_batch_size=3)
    sequential = FulfilmentBatcher(
        batched.sender, batched.rpc, batched.collection, batched.settings, precheck="sequential"
    )
    ids = [*rids, (35 << 32) | 9]
    expected = {rids[0]: True, rids[1]: True, rids[2]: False, rids[3]: True, (35 << 32) | 9: False}
    assert batched.check_pending(ids) == expected == sequential.check_pending(ids)


def test_count_and_gas_caps_split_batches(chain: SubmitChain) -> None:
    rids = [chain.request(t) for t in range(1, 8)]
    by_count = _batcher(chain, batch_max_count=3).plan(_fulfilments(chain, rids))
    assert [len(b.items) for b in by_count.batches] == [3, 3, 1]

    one = by_count.batches[0].gas
    by_gas = _batcher(chain, batch_max_gas=max(100_000, int(one * 0.8)))
    plan = by_gas.plan(_fulfilments(chain, rids))
    assert all(b.gas <= by_gas.settings.batch_max_gas for b in plan.batches)
    assert sum(len(b.items) for b in plan.batches) == 7 and len(plan.batches) >= 3
    report = by_gas.submit(_fulfilments(chain, rids))
    assert report.tx_count == len(plan.batches) and len(report.confirmed) == 7


def test_a_request_fulfilled_after_the_pre_check_is_skipped_on_chain_not_confirmed(
    chain: SubmitChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A race: the pre-check said pending, then it was fulfilled. The batch no longer reverts: the contract skips
    that request (FulfilmentSkipped), which the report lists as skipped, never as confirmed; the rest are
    fulfilled in the same transaction."""
    rids = [chain.request(t) for t in range(1, 5)]
    batcher = _batcher(chain)
    monkeypatch.setattr(batcher, "check_pending_with", lambda items: {f.request_id: True for f in items})
    chain.fulfil_directly(rids[1])

    report = batcher.submit(_fulfilments(chain, rids))

    assert report.dropped == () and report.tx_count == 1 and report.failed == []
    assert [f.request_id for f in report.skipped] == [rids[1]]
    assert sorted(f.request_id for f in report.confirmed) == [rids[0], rids[2], rids[3]]
    (result,) = report.results
    assert result.confirmation is not None
    assert batcher.skipped(result.confirmation.tx_hash) == {rids[1]}
    assert [e["args"]["requestId"] for e in _evolved(chain, result.confirmation.tx_hash)] == [
        rids[0],
        rids[2],
        rids[3],
    ]


def test_a_fulfilment_bound_to_a_stale_seed_is_dropped_before_sending(chain: SubmitChain) -> None:
    """A reorg re-mined a request (same id) with a new seed: a fulfilment made from the orphaned log names the
    old seed. The pre-check (isPendingWith) drops it with its reason and spends no gas on it; the others go out."""
    before = chain.rpc("evm_snapshot")
    rids = [chain.request(t) for t in range(1, 4)]
    orphaned = _fulfilments(chain, rids)
    chain.rpc("evm_revert", before)  # the requests' block is gone ...
    chain.mine(2)  # ... the chain goes on differently ...
    assert [chain.request(t) for t in range(1, 4)] == rids  # ... and the same requests are mined again
    stale = orphaned[1]
    assert chain.seed(stale.request_id) != stale.seed
    assert chain.collection.functions.isPending(stale.request_id).call()  # the old pre-check passed
    batcher = _batcher(chain)
    assert batcher.check_pending_with([stale]) == {stale.request_id: False}
    items = [_fulfilments(chain, [rids[0]])[0], stale, _fulfilments(chain, [rids[2]])[0]]
    nonce = chain.w3.eth.get_transaction_count(chain.agent)

    plan = batcher.plan([stale])
    assert plan.batches == () and [d.key for d in plan.dropped] == [stale.request_id]
    assert "re-mined after a reorg" in plan.dropped[0].reason
    report = batcher.submit(items)

    assert [d.key for d in report.dropped] == [stale.request_id]
    assert "pending with another seed" in report.dropped[0].reason
    assert report.tx_count == 1 and report.failed == []
    assert sorted(f.request_id for f in report.confirmed) == [rids[0], rids[2]]
    assert chain.w3.eth.get_transaction_count(chain.agent) == nonce + 1  # nothing was sent for the stale one
    assert chain.collection.functions.isPending(stale.request_id).call()  # left for the canonical job
    assert chain.collection.functions.metadataDigestOf(2).call() == bytes(32)


def test_a_seed_that_changed_after_the_pre_check_is_skipped_on_chain(
    chain: SubmitChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-check passed; the contract skips the request named with another seed and fulfils the rest in one
    transaction; the skipped request stays pending for its canonical seed."""
    rids = [chain.request(t) for t in range(1, 4)]
    items = _fulfilments(chain, rids)
    wrong = Fulfilment(rids[1], bytes(31) + b"\x01", digest(rids[1]))
    items[1] = wrong
    batcher = _batcher(chain)
    monkeypatch.setattr(batcher, "check_pending_with", lambda fs: {f.request_id: True for f in fs})

    report = batcher.submit(items)

    assert report.dropped == () and [f.request_id for f in report.skipped] == [rids[1]]
    assert report.tx_count == 1 and len(report.confirmed) == 2
    assert chain.collection.functions.isPendingWith(rids[1], chain.seed(rids[1])).call()


def test_refresh_batches_are_sized_to_the_gas_cap(chain: SubmitChain) -> None:
    sender = chain.sender()
    probe = RefreshBatcher(sender, sender.rpc, chain.collection.address, SubmitSettings())
    ten = [Refresh(t, digest(500 + t)) for t in range(1, 11)]
    whole = probe.plan(ten).batches
    assert len(whole) == 1
    cap = max(100_000, whole[0].gas // 3)
    batcher = RefreshBatcher(
        sender, sender.rpc, chain.collection.address, SubmitSettings(refresh_max_gas=cap)
    )

    items = list(reversed(ten)) + [Refresh(999, digest(1)), Refresh(3, digest(3333))]
    report = batcher.submit(items, provenance=b"\x42" * 32)

    assert {d.key for d in report.dropped} == {999, 3}  # never minted; listed twice (last digest kept)
    assert report.tx_count >= 3 and report.failed == []
    assert all(r.batch.gas <= cap for r in report.results)
    ids = [r.token_id for res in report.results for r in res.batch.items]
    assert ids == sorted(ids) == list(range(1, 11))
    for t in range(1, 11):
        expected = digest(3333) if t == 3 else digest(500 + t)
        assert chain.collection.functions.metadataDigestOf(t).call() == expected


def test_refresh_cap_defaults_to_half_the_block_gas_limit(chain: SubmitChain) -> None:
    sender = chain.sender()
    batcher = RefreshBatcher(sender, sender.rpc, chain.collection.address, SubmitSettings())
    assert batcher.max_gas() == chain.w3.eth.get_block("latest")["gasLimit"] // 2
