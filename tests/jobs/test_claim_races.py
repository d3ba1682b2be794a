"""Two workers never hold the same job: a property test over random interleavings of claims, heartbeats, clock
jumps, reaps, errors and outcomes, on both backends; and PostgreSQL's SKIP LOCKED under a held row lock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from agent.errors import PermanentError, RetryableError
from agent.jobs import JobKind, JobState, LeaseLostError, Stage
from agent.store import SqlJobStore, open_job_store
from tests.support.clock import FakeClock
from tests.support.databases import postgres_schema_url

WORKERS = ("w1", "w2", "w3")
LEASE_S = 10.0


def test_random_interleavings_never_give_one_job_to_two_workers(store: SqlJobStore, clock: FakeClock) -> None:
    class Queue(RuleBasedStateMachine):
        """Model: who the store says holds each job, and until when; checked against the store after every step."""

        def __init__(self) -> None:
            super().__init__()
            with store.db.begin() as conn:
                conn.execute(sa.text("DELETE FROM job_stages"))
                conn.execute(sa.text("DELETE FROM jobs"))
            self.holder: dict[int, tuple[str, datetime]] = {}
            self.terminal: set[int] = set()
            self.keys = 0

        @rule()
        def enqueue(self) -> None:
            self.keys += 1
            store.enqueue(JobKind.EVOLVE, f"k{self.keys}")

        @rule(worker=st.sampled_from(WORKERS))
        def claim(self, worker: str) -> None:
            job = store.claim(worker, lease_s=LEASE_S)
            if job is not None:
                assert job.id not in self.holder, (
                    f"job {job.id} handed to {worker} while {self.holder[job.id]}"
                )
                assert job.id not in self.terminal
                self.holder[job.id] = (worker, clock.now + timedelta(seconds=LEASE_S))

        @rule(seconds=st.sampled_from([1.0, 4.0, 9.0, 11.0]))
        def tick(self, seconds: float) -> None:
            clock.advance(seconds)

        @rule()
        def reap(self) -> None:
            for job in store.reap():
                worker, until = self.holder.pop(job.id)
                assert until < clock.now, f"reaped job {job.id} of {worker} before its lease ran out"
                if job.state is JobState.FAILED:
                    self.terminal.add(job.id)

        @rule(worker=st.sampled_from(WORKERS), data=st.data())
        def act(self, worker: str, data: st.DataObject) -> None:
            """The worker does something with a job it believes it holds (maybe wrongly, after a reap)."""
            mine = sorted(self.holder) + sorted(self.terminal)
            if not mine:
                return
            job_id = data.draw(st.sampled_from(mine))
            action = data.draw(st.sampled_from(["heartbeat", "stage", "retryable", "permanent", "confirm"]))
            holds = self.holder.get(job_id, ("", clock.now))[0] == worker
            try:
                if action == "heartbeat":
                    store.heartbeat(job_id, worker, lease_s=LEASE_S)
                elif action == "stage":
                    job = store.get(job_id)
                    if job.next_stage is not None:
                        store.record_stage(job_id, worker, job.next_stage, {"by": worker})
                elif action in ("retryable", "permanent"):
                    error = RetryableError("flaky") if action == "retryable" else PermanentError("broken")
                    job = store.report_error(job_id, worker, error)
                    del self.holder[job_id]
                    if job.state.terminal:
                        self.terminal.add(job_id)
                else:
                    store.confirm(job_id, worker)
                    del self.holder[job_id]
                    self.terminal.add(job_id)
            except LeaseLostError:
                assert not holds, f"{worker} holds job {job_id} but was refused"
                return
            assert holds, f"{worker} wrote job {job_id} without holding it"
            if action == "heartbeat":
                self.holder[job_id] = (worker, clock.now + timedelta(seconds=LEASE_S))

        @invariant()
        def store_agrees_with_the_model(self) -> None:
            running = {j.id: j.worker_id for j in store.list_jobs(state=JobState.RUNNING, limit=1000)}
            assert running == {job_id: w for job_id, (w, _) in self.holder.items()}
            for job in store.list_jobs(limit=1000):
                assert (job.id in self.terminal) == job.state.terminal
                if job.stage is not None:
                    assert list(job.outputs)[-1] is Stage(job.stage)

    run_state_machine_as_test(
        Queue,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )


@pytest.mark.postgres
def test_postgres_claims_skip_rows_locked_by_another_claimer() -> None:
    """SQLite has no row locks: its write transactions (BEGIN IMMEDIATE) are serial, so this is PostgreSQL's."""
    with postgres_schema_url() as url:
        store = open_job_store(url)
        try:
            _skip_locked(store)
        finally:
            store.close()


def _skip_locked(store: SqlJobStore) -> None:
    first, _ = store.enqueue(JobKind.EVOLVE, "a")
    second, _ = store.enqueue(JobKind.EVOLVE, "b")
    with store.db.connect() as other:
        other.begin()
        other.execute(sa.text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": first.id})
        job = store.claim("w")  # would block on "a" without SKIP LOCKED
        assert job is not None and job.id == second.id
        other.rollback()
    job = store.claim("w")
    assert job is not None and job.id == first.id
