"""The broadcast journal on anvil: every signed transaction is recorded before it is sent, a restarted sender
settles its nonces from the records (not from the node's "pending" state), and the replacement cap holds
across restarts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.settings import SubmitSettings
from agent.store import Database
from agent.submit import KeystoreSigner, StuckTransactionError, TxRequest, Web3TxSender
from agent.submit.journal_sql import SqlBroadcastJournal
from tests.submit.conftest import SubmitChain
from tests.support.rpc_proxy import FaultProxy


def _fulfil(chain: SubmitChain, request_id: int) -> TxRequest:
    """A transaction from the agent's key, tagged with ``request_id`` through the journal's keys (a plain
    transfer: what is recorded, replaced and settled does not depend on the calldata)."""
    return TxRequest(to=chain.admin, value=request_id, gas=21_000, label="transfer")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqlBroadcastJournal]:
    db = Database.open(f"sqlite:///{tmp_path / 'agent.db'}")
    yield SqlBroadcastJournal(db)
    db.close()


def _agent_pool(chain: SubmitChain) -> dict[str, dict]:
    pending = chain.rpc("txpool_content")["pending"]
    return next((txs for sender, txs in pending.items() if sender.lower() == chain.agent.lower()), {})


def test_every_broadcast_is_recorded_before_it_is_sent_and_settled_when_mined(
    chain: SubmitChain, journal: SqlBroadcastJournal
) -> None:
    rid = 20
    sender = chain.sender()
    sender.journal = journal
    sub = sender.send(_fulfil(chain, rid), keys=[str(rid)])
    recorded = journal.for_key(str(rid))
    assert recorded is not None and recorded.submission.tx_hash.lower() == sub.tx_hash.lower()
    assert recorded.submission.raw_tx == sub.raw_tx and recorded.keys == (str(rid),)
    conf = sender.wait(sub)
    after = journal.latest(sub.sender, sub.nonce)
    assert after is not None and after.outcome == "mined" and after.mined_hash == conf.tx_hash.lower()
    assert journal.open(chain.agent) == []


def test_the_replacement_cap_counts_replacements_recorded_before_a_restart(
    chain: SubmitChain, journal: SqlBroadcastJournal
) -> None:
    rid = 21
    chain.automine(False)
    first = chain.sender(stuck_after_s=0.05, max_replacements=3)
    first.journal = journal
    sub = first.send(_fulfil(chain, rid), keys=[str(rid)])
    with pytest.raises(StuckTransactionError):
        first.wait(sub, timeout_s=3)
    assert journal.replacements(sub.sender, sub.nonce) == 3

    # A restart: a new sender (fresh nonce manager, tracker, watch state), the same database, and only the
    # submission the job recorded before any replacement.
    second = chain.sender(stuck_after_s=0.05, max_replacements=3)
    second.journal = journal
    with pytest.raises(StuckTransactionError):
        second.wait(sub, timeout_s=1.5)
    assert journal.replacements(sub.sender, sub.nonce) == 3  # not 3 more: the cap held across the restart
    latest = journal.latest(sub.sender, sub.nonce)
    assert latest is not None and len(latest.submission.replaced) == 3
    assert len(_agent_pool(chain)) == 1

    chain.automine(True)
    chain.mine()
    conf = second.wait(sub)  # the original's record: the mined replacement is found through the journal
    assert conf.status == 1 and conf.tx_hash.lower() == latest.submission.tx_hash.lower()
    assert set(conf.replaced) == set(latest.submission.replaced)


def test_a_restart_settles_recorded_nonces_from_records_when_pending_means_latest(
    chain: SubmitChain, journal: SqlBroadcastJournal
) -> None:
    """Behind a provider answering "pending" as "latest", the pool is invisible to the nonce count: only the
    records keep a restarted sender from signing a second transaction for a nonce still in the pool."""
    proxy = FaultProxy(chain.url, pending_as_latest=True)
    try:
        rid_a, rid_b = 22, 23
        chain.automine(False)
        settings = SubmitSettings(poll_interval_s=0.02, receipt_timeout_s=20, stuck_after_blocks=None)
        signer = KeystoreSigner.from_private_key(chain.agent_key)
        before = Web3TxSender.connect(
            proxy.url, signer, settings, abis=[chain.collection.abi], journal=journal
        )
        first = before.send(_fulfil(chain, rid_a), dry_run=False, keys=[str(rid_a)])
        chain.rpc("anvil_dropTransaction", first.tx_hash)  # and the node forgets it (eviction, restart)

        after = Web3TxSender.connect(
            proxy.url, signer, settings, abis=[chain.collection.abi], journal=journal
        )
        assert after.rpc.nonce(chain.agent, "pending") == first.nonce  # the provider cannot tell
        still_open = after.settle_recorded()  # re-broadcasts the recorded signed transaction
        assert [s.nonce for s in still_open] == [first.nonce]
        assert first.tx_hash.lower() in {tx["hash"].lower() for tx in _agent_pool(chain).values()}
        second = after.send(_fulfil(chain, rid_b), dry_run=False, keys=[str(rid_b)])
        assert second.nonce == first.nonce + 1  # the recorded nonce was not handed out again
        assert proxy.injected["pending_as_latest"] > 0

        chain.automine(True)
        chain.mine()
        assert after.wait(first).status == 1 and after.wait(second).status == 1
        # A later start settles what is recorded from receipts: mined, and by which hash.
        again = Web3TxSender.connect(
            proxy.url, signer, settings, abis=[chain.collection.abi], journal=journal
        )
        assert again.settle_recorded() == []
        rec = journal.latest(chain.agent, first.nonce)
        assert rec is not None and rec.outcome == "mined" and rec.mined_hash == first.tx_hash.lower()
    finally:
        proxy.close()
