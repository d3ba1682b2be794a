"""The job store on SQLite and PostgreSQL: idempotency, stages, leases, retries, outcomes, queries."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from agent.domain import LogKey
from agent.errors import BackendUnavailableError, ConfigError, PermanentError, RetryableError
from agent.jobs import (
    STAGES,
    JobKind,
    JobNotFoundError,
    JobState,
    JobStateError,
    LeaseLostError,
    RetryPolicy,
    Stage,
    StageOrderError,
)
from agent.store import SqlJobStore, open_job_store
from tests.support.clock import FakeClock

SOURCE = LogKey(31337, "0x" + "ab" * 32, 3, "0x" + "01" * 32)


def _enqueue(store: SqlJobStore, key: str = "evolve:31337:1", **kw):
    kw.setdefault("payload", {"requestId": 1, "tokenId": 7})
    kw.setdefault("source", SOURCE)
    kw.setdefault("block_number", 12)
    return store.enqueue(JobKind.EVOLVE, key, **kw)


class FlakyRpc(RetryableError):
    pass


# -- idempotent insert ------------------------------------------------------------------------------------


def test_enqueue_same_key_twice_returns_the_existing_job(store: SqlJobStore) -> None:
    first, created = _enqueue(store)
    again, created_again = _enqueue(store, payload={"requestId": 999})
    assert created and not created_again
    assert again.id == first.id
    assert again.payload == {"requestId": 1, "tokenId": 7}
    assert first.state is JobState.QUEUED and first.stage is None and first.next_stage is Stage.INPUTS
    assert first.source == LogKey(SOURCE.chain_id, SOURCE.tx_hash, SOURCE.log_index, SOURCE.block_hash)
    assert first.block_number == 12 and first.kind is JobKind.EVOLVE
    assert store.counts()[JobState.QUEUED] == 1


def test_concurrent_enqueues_of_one_key_make_one_job(store: SqlJobStore) -> None:
    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        for _ in range(5):
            job, created = _enqueue(store)
            results.append((job.id, created))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(store.list_jobs()) == 1


def test_enqueue_rejects_payload_that_is_not_json(store: SqlJobStore) -> None:
    with pytest.raises(ValueError, match="JSON-serialisable"):
        _enqueue(store, payload={"seed": b"\x00"})


# -- stages persist and resume ----------------------------------------------------------------------------


def test_stage_outputs_persist_and_a_retried_job_resumes_after_the_last_one(
    db_url: str, clock: FakeClock, policy: RetryPolicy
) -> None:
    store = open_job_store(db_url, policy=policy, clock=clock)
    job, _ = _enqueue(store)
    job = store.claim("w1", lease_s=30)
    assert job is not None and job.state is JobState.RUNNING and job.attempts == 1
    store.record_stage(job.id, "w1", Stage.INPUTS, {"snapshot": "sha256:aa", "block": 12})
    job = store.record_stage(job.id, "w1", Stage.GENERATED, {"image": "sha256:bb", "lore": "A cold season."})
    assert job.stage is Stage.GENERATED and job.next_stage is Stage.PUBLISHED
    store.close()  # the worker process dies here

    clock.advance(31)
    reopened = open_job_store(db_url, policy=policy, clock=clock)
    assert [j.id for j in reopened.reap()] == [job.id]
    resumed = reopened.claim("w2")
    assert resumed is not None and resumed.id == job.id and resumed.attempts == 2
    assert resumed.outputs == {
        Stage.INPUTS: {"snapshot": "sha256:aa", "block": 12},
        Stage.GENERATED: {"image": "sha256:bb", "lore": "A cold season."},
    }
    assert resumed.next_stage is Stage.PUBLISHED
    reopened.record_stage(job.id, "w2", Stage.PUBLISHED, {"metadata": "bafkrei...", "replicas": 2})
    done = reopened.record_stage(job.id, "w2", Stage.SUBMITTED, {"tx": "0x01", "nonce": 4})
    assert done.next_stage is None
    done = reopened.confirm(job.id, "w2", {"block": 15, "status": 1})
    assert done.state is JobState.CONFIRMED and done.state.terminal
    assert done.result == {"block": 15, "status": 1} and done.finished_at == clock.now
    assert list(done.outputs) == list(STAGES)
    assert reopened.claim("w3") is None
    reopened.close()


def test_recording_a_stage_twice_keeps_the_first_output(store: SqlJobStore) -> None:
    job, _ = _enqueue(store)
    store.claim("w")
    store.record_stage(job.id, "w", Stage.INPUTS, {"v": 1})
    again = store.record_stage(job.id, "w", Stage.INPUTS, {"v": 2})
    assert again.outputs[Stage.INPUTS] == {"v": 1} and again.stage is Stage.INPUTS


def test_stages_must_be_recorded_in_order(store: SqlJobStore) -> None:
    job, _ = _enqueue(store)
    store.claim("w")
    with pytest.raises(StageOrderError) as err:
        store.record_stage(job.id, "w", Stage.PUBLISHED, {})
    assert err.value.expected == "inputs" and isinstance(err.value, PermanentError)
    assert store.get(job.id).outputs == {}


# -- claiming ---------------------------------------------------------------------------------------------


def test_threads_racing_to_claim_never_get_the_same_job(store: SqlJobStore) -> None:
    n_jobs, n_workers = 30, 4
    for i in range(n_jobs):
        _enqueue(store, key=f"evolve:31337:{i}")
    claimed: dict[str, list[int]] = {f"w{i}": [] for i in range(n_workers)}
    barrier = threading.Barrier(n_workers)

    def work(worker: str) -> None:
        barrier.wait()
        while (job := store.claim(worker)) is not None:
            claimed[worker].append(job.id)

    threads = [threading.Thread(target=work, args=(w,)) for w in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [j for ids in claimed.values() for j in ids]
    assert len(every) == n_jobs and len(set(every)) == n_jobs
    running = store.list_jobs(state=JobState.RUNNING)
    assert {j.worker_id for j in running} <= set(claimed)
    assert all(j.id in claimed[j.worker_id or ""] for j in running)


def test_claim_takes_the_oldest_due_job_and_filters_by_kind(store: SqlJobStore, clock: FakeClock) -> None:
    later, _ = _enqueue(store, key="a", run_after=clock.now + timedelta(seconds=60))
    now_job, _ = _enqueue(store, key="b")
    refresh, _ = store.enqueue(JobKind.REFRESH, "refresh:1")
    assert store.claim("w", kinds=[JobKind.REFRESH]).id == refresh.id  # type: ignore[union-attr]
    assert store.claim("w").id == now_job.id  # type: ignore[union-attr]
    assert store.claim("w") is None
    clock.advance(60)
    assert store.claim("w").id == later.id  # type: ignore[union-attr]


# -- leases and the reaper --------------------------------------------------------------------------------


def test_expired_lease_is_reaped_and_reclaimed_and_the_old_worker_is_fenced_off(
    store: SqlJobStore, clock: FakeClock
) -> None:
    job, _ = _enqueue(store)
    assert store.claim("w1", lease_s=10) is not None
    clock.advance(9)
    assert store.reap() == []
    store.heartbeat(job.id, "w1", lease_s=10)  # lease now runs to t=19
    clock.advance(9)
    assert store.reap() == []  # heartbeat kept it
    clock.advance(2)
    reaped = store.reap()
    assert [j.id for j in reaped] == [job.id]
    assert reaped[0].state is JobState.QUEUED and "w1" in (reaped[0].last_error or "")
    again = store.claim("w2")
    assert again is not None and again.id == job.id and again.worker_id == "w2"
    for late_write in (
        lambda: store.heartbeat(job.id, "w1"),
        lambda: store.record_stage(job.id, "w1", Stage.INPUTS, {}),
        lambda: store.confirm(job.id, "w1"),
        lambda: store.report_error(job.id, "w1", FlakyRpc("boom")),
    ):
        with pytest.raises(LeaseLostError) as err:
            late_write()
        assert err.value.holder == "w2"
    assert store.get(job.id).worker_id == "w2"


def test_reaper_fails_a_job_whose_attempts_are_spent(
    store: SqlJobStore, clock: FakeClock, policy: RetryPolicy
) -> None:
    _enqueue(store)
    for attempt in range(1, policy.max_attempts + 1):
        claimed = store.claim(f"w{attempt}", lease_s=5)
        assert claimed is not None and claimed.attempts == attempt
        clock.advance(6)
        (reaped,) = store.reap()
    assert reaped.state is JobState.FAILED
    assert f"gave up after {policy.max_attempts} attempts" in (reaped.reason or "")
    assert "lease expired" in (reaped.reason or "")


def test_release_gives_the_job_back_without_spending_an_attempt(store: SqlJobStore, clock: FakeClock) -> None:
    job, _ = _enqueue(store)
    store.claim("w")
    released = store.release(job.id, "w", delay_s=5)
    assert released.state is JobState.QUEUED and released.attempts == 0
    assert store.claim("w") is None
    clock.advance(5)
    assert store.claim("w").attempts == 1  # type: ignore[union-attr]


# -- errors, back-off, retry ------------------------------------------------------------------------------


def test_retryable_errors_back_off_exponentially_then_fail_visibly(
    store: SqlJobStore, clock: FakeClock, policy: RetryPolicy
) -> None:
    job, _ = _enqueue(store)
    for attempt in range(1, policy.max_attempts):
        assert store.claim("w") is not None
        after = store.report_error(job.id, "w", FlakyRpc(f"timeout #{attempt}"))
        nominal = policy.nominal_delay(attempt)  # 10 s, then 20 s
        wait = (after.run_after - clock.now).total_seconds()
        assert after.state is JobState.QUEUED
        assert nominal * (1 - policy.jitter) <= wait <= nominal
        assert after.last_error == f"FlakyRpc: timeout #{attempt}"
        assert store.claim("w") is None, "claimable before its back-off passed"
        clock.advance(wait)
    assert store.claim("w") is not None
    failed = store.report_error(job.id, "w", FlakyRpc("timeout #3"))
    assert failed.state is JobState.FAILED and failed.finished_at == clock.now
    assert failed.reason == "gave up after 3 attempts; last error: FlakyRpc: timeout #3"
    assert store.counts()[JobState.FAILED] == 1
    assert store.list_jobs(state=JobState.FAILED)[0].id == job.id


def test_a_permanent_error_fails_the_job_at_once_with_its_reason(store: SqlJobStore) -> None:
    job, _ = _enqueue(store)
    store.claim("w")
    store.record_stage(job.id, "w", Stage.INPUTS, {"ok": True})
    failed = store.report_error(job.id, "w", PermanentError("token 7 was burnt", hint="nothing to do"))
    assert failed.state is JobState.FAILED and failed.attempts == 1
    assert failed.reason is not None and "PermanentError: token 7 was burnt" in failed.reason
    assert "permanent error on attempt 1" in failed.reason


def test_retry_requeues_a_failed_job_which_resumes_from_its_stages(store: SqlJobStore) -> None:
    job, _ = _enqueue(store)
    store.claim("w")
    store.record_stage(job.id, "w", Stage.INPUTS, {"ok": True})
    store.report_error(job.id, "w", "pinning service rejected the CAR")
    requeued = store.retry(job.id)
    assert requeued.state is JobState.QUEUED and requeued.attempts == 0 and requeued.reason is None
    resumed = store.claim("w2")
    assert resumed is not None and resumed.next_stage is Stage.GENERATED
    assert resumed.last_error == "pinning service rejected the CAR"
    with pytest.raises(JobStateError, match="cannot retry job .*: it is running"):
        store.retry(job.id)
    with pytest.raises(JobNotFoundError):
        store.retry(12345)


def test_unknown_exceptions_are_retried_and_retry_after_is_honoured(
    store: SqlJobStore, clock: FakeClock
) -> None:
    job, _ = _enqueue(store)
    store.claim("w")
    after = store.report_error(job.id, "w", KeyError("missing"))
    assert after.state is JobState.QUEUED

    class RateLimited(RetryableError):
        retry_after = 45.0

    clock.advance(60)
    store.claim("w")
    after = store.report_error(job.id, "w", RateLimited("429"))
    assert (after.run_after - clock.now).total_seconds() == pytest.approx(45.0)


# -- cancel and reorgs ------------------------------------------------------------------------------------


def test_cancel_ends_queued_and_running_jobs_but_not_confirmed_ones(store: SqlJobStore) -> None:
    queued, _ = _enqueue(store, key="q")
    running, _ = _enqueue(store, key="r")
    store.claim("w", kinds=[JobKind.EVOLVE])  # takes "q" (older)
    cancelled = store.cancel(queued.id, "operator asked")
    assert cancelled.state is JobState.CANCELLED and cancelled.reason == "operator asked"
    assert store.cancel(queued.id, "again").reason == "operator asked"  # no-op
    store.claim("w")
    store.cancel(running.id, "orphaned")
    with pytest.raises(LeaseLostError):
        store.record_stage(running.id, "w", Stage.INPUTS, {})
    done, _ = _enqueue(store, key="done")
    store.claim("w")
    store.confirm(done.id, "w")
    with pytest.raises(JobStateError):
        store.cancel(done.id, "too late")
    assert store.counts() == {
        JobState.QUEUED: 0,
        JobState.RUNNING: 0,
        JobState.CONFIRMED: 1,
        JobState.FAILED: 0,
        JobState.CANCELLED: 2,
    }


def test_reorg_cancels_orphaned_jobs_and_a_remined_log_revives_them(store: SqlJobStore) -> None:
    orphan_block = "0x" + "0f" * 32
    job, _ = _enqueue(store, source=LogKey(31337, "0x" + "aa" * 32, 0, orphan_block), block_number=20)
    other, _ = _enqueue(store, key="evolve:31337:2")
    store.claim("w")
    store.record_stage(job.id, "w", Stage.INPUTS, {"block": 20})

    assert [j.id for j in store.by_source_blocks([orphan_block.upper().replace("0X", "0x")])] == [job.id]
    (cancelled,) = store.cancel_orphaned([orphan_block])
    assert cancelled.id == job.id and cancelled.state is JobState.CANCELLED
    assert store.get(other.id).state is JobState.QUEUED

    # Re-mined in the new branch: the job comes back, without the stages read at the orphaned block.
    new_source = LogKey(31337, "0x" + "aa" * 32, 1, "0x" + "1e" * 32)
    revived, created = _enqueue(store, source=new_source, block_number=21, payload={"requestId": 1, "v": 2})
    assert created and revived.id == job.id
    assert revived.state is JobState.QUEUED and revived.outputs == {} and revived.attempts == 0
    assert revived.source == new_source and revived.block_number == 21 and revived.payload["v"] == 2


def test_a_log_delivered_again_from_the_same_block_revives_a_job_cancelled_as_orphaned(
    store: SqlJobStore,
) -> None:
    """The watcher delivers only logs of blocks it linked to the canonical chain: a log from a block it had
    reported orphaned means that block is canonical after all (a lagging node taken for a reorg, a flip back)."""
    block = "0x" + "0f" * 32
    source = LogKey(31337, "0x" + "aa" * 32, 0, block)
    job, _ = _enqueue(store, source=source, block_number=20)
    store.cancel_orphaned([block])
    revived, created = _enqueue(store, source=source, block_number=20)
    assert created and revived.id == job.id and revived.state is JobState.QUEUED and revived.reason is None
    # a job an operator cancelled stays cancelled when its log is seen again
    other, _ = _enqueue(store, key="evolve:31337:2", source=LogKey(31337, "0x" + "bb" * 32, 0, block))
    store.cancel(other.id, "operator asked")
    again, created = _enqueue(store, key="evolve:31337:2", source=LogKey(31337, "0x" + "bb" * 32, 0, block))
    assert not created and again.state is JobState.CANCELLED and again.reason == "operator asked"


# -- queries and errors -----------------------------------------------------------------------------------


def test_queries_by_state_kind_and_key(store: SqlJobStore) -> None:
    for i in range(5):
        _enqueue(store, key=f"evolve:1:{i}")
    store.enqueue("refresh", "refresh:x", payload={"tokens": [1, 2]})
    store.claim("w", kinds=["refresh"])
    assert [j.key for j in store.list_jobs(state="queued", limit=2)] == ["evolve:1:0", "evolve:1:1"]
    assert [j.key for j in store.list_jobs(state=JobState.QUEUED, newest_first=True, limit=1)] == [
        "evolve:1:4"
    ]
    assert [j.key for j in store.list_jobs(kind=JobKind.REFRESH)] == ["refresh:x"]
    assert store.get_by_key("refresh:x").state is JobState.RUNNING  # type: ignore[union-attr]
    assert store.get_by_key("nope") is None
    assert store.counts()[JobState.QUEUED] == 5 and store.counts()[JobState.RUNNING] == 1
    with pytest.raises(JobNotFoundError):
        store.get(999)


def test_unreachable_database_and_bad_urls_raise_structured_errors(tmp_path) -> None:
    with pytest.raises(BackendUnavailableError, match="127.0.0.1:1"):
        open_job_store("postgresql+psycopg2://postgres@127.0.0.1:1/nothing")
    with pytest.raises(ConfigError):
        open_job_store("not a url")
    with pytest.raises(ConfigError, match="unsupported database backend"):
        open_job_store("mysql://x@localhost/db")
