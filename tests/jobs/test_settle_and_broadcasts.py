"""Unsettled confirmations, waiting notes and the broadcast journal on both backends (SQLite, PostgreSQL)."""

from __future__ import annotations

import pytest

from agent.domain import Submission
from agent.jobs import JobKind, JobState, JobStateError, Stage
from agent.store import SqlJobStore
from agent.submit.journal_sql import SqlBroadcastJournal

SENDER = "0x" + "ab" * 20


def _sub(nonce: int, n: int, *, replaced: tuple[str, ...] = ()) -> Submission:
    return Submission(
        tx_hash="0x" + f"{n:064x}", raw_tx="0x02" + f"{n:02x}", sender=SENDER, nonce=nonce, to="0x" + "cd" * 20,
        data="0x", value=0, gas=21_000, max_fee_per_gas=10 + n, max_priority_fee_per_gas=1, chain_id=31337,
        replaced=replaced,
    )  # fmt: skip


def _running(store: SqlJobStore, key: str = "evolve:1:1") -> int:
    job, _ = store.enqueue(JobKind.EVOLVE, key, payload={"request_id": 1})
    claimed = store.claim("w1")
    assert claimed is not None and claimed.id == job.id
    return job.id


def test_a_confirmation_with_a_settle_block_is_listed_until_settled(store: SqlJobStore) -> None:
    job_id = _running(store)
    done = store.confirm(job_id, "w1", {"tx_hash": "0x1", "block_number": 7}, settle_block=7)
    assert done.state == JobState.CONFIRMED and not done.settled and done.settle_block == 7
    assert [j.id for j in store.unsettled()] == [job_id]
    assert store.waiting_counts() == {"unsettled": 1, "stalled": 0}

    moved = store.settle(job_id, {"block_number": 9}, settle_block=9)  # re-mined in another block
    assert moved.result == {"tx_hash": "0x1", "block_number": 9} and moved.settle_block == 9
    final = store.settle(job_id)
    assert final.settled and final.state == JobState.CONFIRMED and store.unsettled() == []
    assert store.waiting_counts() == {"unsettled": 0, "stalled": 0}


def test_only_confirmed_jobs_are_settled(store: SqlJobStore) -> None:
    job_id = _running(store)
    with pytest.raises(JobStateError):
        store.settle(job_id)


def test_a_release_with_a_waiting_note_costs_no_attempt_and_is_counted_as_stalled(store: SqlJobStore) -> None:
    job_id = _running(store)
    store.record_stage(job_id, "w1", Stage.INPUTS, {})
    waiting = store.release(job_id, "w1", waiting="waiting: fulfilment 0xabc (nonce 0) is not mined yet")
    assert waiting.state == JobState.QUEUED and waiting.attempts == 0 and waiting.waiting is not None
    assert store.waiting_counts() == {"unsettled": 0, "stalled": 1}
    again = store.claim("w1")
    assert again is not None and again.waiting == waiting.waiting  # kept while it waits
    store.record_stage(job_id, "w1", Stage.GENERATED, {})  # moving on clears it
    assert store.get(job_id).waiting is None and store.waiting_counts()["stalled"] == 0


def test_the_journal_keeps_every_version_of_a_nonce(store: SqlJobStore) -> None:
    journal = SqlBroadcastJournal(store.db)
    first = _sub(0, 1)
    journal.record(first, "send", ["5", "6"])
    journal.record(first, "rebroadcast")  # the same signed transaction again: no new row
    bumped = _sub(0, 2, replaced=(first.tx_hash,))
    journal.record(bumped, "replace")  # inherits the nonce's keys
    other = _sub(1, 3)
    journal.record(other, "send", ["7"])

    latest = journal.latest(SENDER, 0)
    assert latest is not None and latest.replacements == 1 and latest.keys == ("5", "6")
    assert latest.submission.tx_hash == bumped.tx_hash and latest.submission.replaced == (first.tx_hash,)
    assert latest.submission.sent_at > 0  # when it was recorded, just before it was sent
    found = journal.for_key("6")
    assert found is not None and found.submission.nonce == 0 and journal.for_key("60") is None
    assert [r.submission.nonce for r in journal.open(SENDER)] == [0, 1]

    journal.settle(SENDER, 0, "mined", bumped.tx_hash)
    settled = journal.for_key("5")
    assert settled is not None and settled.outcome == "mined" and settled.mined_hash == bumped.tx_hash
    assert [r.submission.nonce for r in journal.open(SENDER.upper().replace("0X", "0x"))] == [1]
    journal.discard(other.tx_hash)  # refused by the node: it never left
    assert journal.open(SENDER) == [] and journal.latest(SENDER, 1) is None
