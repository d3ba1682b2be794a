"""Cron refresh policies on APScheduler 3 with its SQLAlchemy job store in the agent's database (SQLite and
PostgreSQL), driven by a controllable clock: fires at the right time, survives restarts, follows config changes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest

from agent.app import build_agent
from agent.jobs import Job, JobKind, JobState, JobStore
from agent.refresh.schedule import RefreshScheduler, stored_schedules
from agent.refresh.store import RefreshStore
from agent.refresh.triggers import cron_fired
from agent.settings import RefreshPolicySettings, Settings
from agent.store import SqlJobStore, open_job_store
from tests.refresh.conftest import START, drive, states
from tests.support.clock import FakeClock
from tests.support.databases import BACKENDS, database_url
from tests.support.devchain import CollectionChain
from tests.support.waiting import eventually

CHAIN = 31337


@pytest.fixture
def sched_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """One clock for APScheduler (its ``datetime.now``), the job store and the refresh tables."""
    clock = FakeClock(START)

    class ClockedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            now = clock()
            return now.astimezone(tz) if tz is not None else now.replace(tzinfo=None)

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", ClockedDatetime)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", ClockedDatetime)
    return clock


class Looks:
    """Counts the scheduler threads' looks for due jobs (APScheduler's ``_process_jobs``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.finished = 0

    def wakeup(self, s: RefreshScheduler, timeout_s: float = 20) -> None:
        """``s.wakeup()``, then wait until the scheduler has looked for due jobs, all of it after the call.

        Whatever that look found due is submitted and rescheduled by then (``next_runs`` has moved on).
        """
        with self.lock:
            begun = self.started  # a look that starts after this reads the clock the test just set
        s.wakeup()
        eventually(
            lambda: self.finished > begun, timeout=timeout_s, what="the scheduler to look for due jobs"
        )


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> Looks:
    counter = Looks()
    process_jobs = apscheduler.schedulers.base.BaseScheduler._process_jobs

    def counted(self: apscheduler.schedulers.base.BaseScheduler) -> float | None:
        with counter.lock:
            counter.started += 1
        try:
            return process_jobs(self)  # type: ignore[no-any-return]
        finally:
            with counter.lock:
                counter.finished += 1

    monkeypatch.setattr(apscheduler.schedulers.base.BaseScheduler, "_process_jobs", counted)
    return counter


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as u:
        yield u


def daily(name: str = "daily", cron: str = "0 0 * * *") -> RefreshPolicySettings:
    return RefreshPolicySettings(name=name, cron=cron)


def scheduler(jobs: SqlJobStore, policies: list[RefreshPolicySettings], clock: FakeClock) -> RefreshScheduler:
    store = RefreshStore(jobs.db, clock=clock)
    return RefreshScheduler(
        jobs.db,
        policies,
        lambda policy, at: cron_fired(jobs, store, CHAIN, policy, at),
        scheduler_id=f"{CHAIN}:0xcollection",
        clock=clock,
    )


def refresh_jobs(jobs: JobStore) -> list[Job]:
    return jobs.list_jobs(kind=JobKind.REFRESH, limit=100)


def wait_for_jobs(jobs: JobStore, n: int, timeout_s: float = 20) -> list[Job]:
    """Wait for the scheduler thread to queue ``n`` refresh jobs (it runs on its own thread); returns them all."""
    eventually(
        lambda: len(refresh_jobs(jobs)) >= n, timeout=timeout_s, what=f"{n} refresh job(s) to be queued"
    )
    return refresh_jobs(jobs)


def test_a_cron_policy_fires_at_its_time_and_queues_one_refresh(
    url: str, sched_clock: FakeClock, looks: Looks
) -> None:
    with open_job_store(url, clock=sched_clock) as jobs:
        s = scheduler(jobs, [daily()], sched_clock).start()
        try:
            assert s.next_runs() == {"daily": datetime(2030, 1, 2, tzinfo=UTC)}
            sched_clock.now = datetime(2030, 1, 1, 23, 59, 59, tzinfo=UTC)
            looks.wakeup(s)
            # not yet: a fire would have moved the next run on (and queued a refresh, on the executor's thread)
            assert s.next_runs() == {"daily": datetime(2030, 1, 2, tzinfo=UTC)}
            assert refresh_jobs(jobs) == []
            sched_clock.now = datetime(2030, 1, 2, 0, 0, 2, tzinfo=UTC)
            s.wakeup()
            (job,) = wait_for_jobs(jobs, 1)
        finally:
            s.stop()
        assert job.key == f"refresh:{CHAIN}:cron:daily:2030-01-02T00:00" and job.state == JobState.QUEUED
        assert (
            job.payload["trigger"] == "cron"
            and job.payload["policy"] == "daily"
            and job.payload["tokens"] == "all"
        )
        assert stored_schedules(jobs.db) == {"daily": datetime(2030, 1, 3, tzinfo=UTC)}


def test_schedules_survive_a_restart_and_a_fire_missed_while_down_runs_once_at_start(
    url: str, sched_clock: FakeClock
) -> None:
    with open_job_store(url, clock=sched_clock) as jobs:
        first = scheduler(jobs, [daily()], sched_clock).start()
        first.stop()  # the agent stops at 12:00 ...
        assert jobs.db.has_table("refresh_schedules")
        assert stored_schedules(jobs.db) == {"daily": datetime(2030, 1, 2, tzinfo=UTC)}

    sched_clock.now = datetime(2030, 1, 4, 0, 30, tzinfo=UTC)  # ... and is down over three midnights
    with open_job_store(url, clock=sched_clock) as jobs:  # a new process: nothing but the database is left
        second = scheduler(jobs, [daily()], sched_clock).start()
        try:
            found = wait_for_jobs(jobs, 1)
            eventually(
                lambda: second.next_runs() == {"daily": datetime(2030, 1, 5, tzinfo=UTC)},
                what="the next run to move on to 2030-01-05",
            )
        finally:
            second.stop()  # waits for the fire in progress
        assert len(refresh_jobs(jobs)) == 1  # coalesced: one catch-up refresh, not three
        assert found[0].payload["fired_at"] == "2030-01-04T00:30:00+00:00"


def test_a_changed_cron_is_rescheduled_and_a_removed_policy_is_unscheduled(
    url: str, sched_clock: FakeClock
) -> None:
    with open_job_store(url, clock=sched_clock) as jobs:
        s = scheduler(jobs, [daily(), daily("weekly", "0 6 * * 1")], sched_clock).start()
        s.stop()
        assert stored_schedules(jobs.db) == {
            "daily": datetime(2030, 1, 2, tzinfo=UTC),
            "weekly": datetime(2030, 1, 7, 6, tzinfo=UTC),  # Monday 2030-01-07 (cron numbering)
        }
        s = scheduler(jobs, [daily(cron="30 12 * * *")], sched_clock).start()  # weekly removed, daily moved
        s.stop()
        assert stored_schedules(jobs.db) == {"daily": datetime(2030, 1, 1, 12, 30, tzinfo=UTC)}
        assert refresh_jobs(jobs) == []


def test_a_cron_refresh_runs_on_the_chain(
    chain: CollectionChain, make: Callable[..., Settings], sched_clock: FakeClock
) -> None:
    settings = make(policies=[{"name": "nightly", "cron": "0 0 * * *", "tokens": "10-11"}])
    with build_agent(settings, clock=sched_clock) as agent:
        assert agent.refresh.scheduler is not None
        agent.refresh.start()
        try:
            sched_clock.now = datetime(2030, 1, 2, 0, 0, 1, tzinfo=UTC)
            agent.refresh.scheduler.wakeup()
            (job,) = wait_for_jobs(agent.store, 1)
        finally:
            agent.refresh.stop()
        done = drive(agent, job.id)
        assert done.state == JobState.CONFIRMED, done.last_error
        assert states(agent, job.id) == {10: "confirmed", 11: "confirmed"}
        assert agent.refresh.store.run(job.id).trigger == "cron"


@pytest.mark.parametrize(
    ("expr", "first"),
    [
        (
            "0 6 * * 1",
            datetime(2030, 1, 7, 6, tzinfo=UTC),
        ),  # Monday, as in cron (APScheduler 3 alone: Tuesday)
        ("0 6 * * 0", datetime(2030, 1, 6, 6, tzinfo=UTC)),  # Sunday
        ("0 6 * * 7", datetime(2030, 1, 6, 6, tzinfo=UTC)),  # Sunday again
        ("0 6 * * 6-7", datetime(2030, 1, 5, 6, tzinfo=UTC)),  # the weekend starts on Saturday
        ("0 6 * * mon-fri", datetime(2030, 1, 2, 6, tzinfo=UTC)),
    ],
)
def test_crontab_weekdays_are_numbered_as_in_cron(expr: str, first: datetime) -> None:
    from agent.cron import crontab_trigger

    assert (
        crontab_trigger(expr, timezone=UTC).get_next_fire_time(None, datetime(2030, 1, 1, 12, tzinfo=UTC))
        == first
    )


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"name": "a", "cron": "0 0 * *"}, "Wrong number of fields"),
        ({"name": "a", "cron": "0 0 * * 9"}, "weekday '9' is out of range"),
        ({"name": "a"}, "needs exactly one of cron"),
        ({"name": "a", "cron": "0 0 * * *", "price_change_pct": 5}, "needs exactly one of cron"),
        ({"name": "a", "price_change_pct": 5, "tokens": "3-x"}, "'x' is not a token id"),
        ({"name": "bad name!", "cron": "0 0 * * *"}, "refresh.policies.0.name"),
    ],
)
def test_bad_policies_are_config_errors_naming_the_problem(policy: dict, message: str) -> None:
    from agent.errors import ConfigError
    from agent.settings import load_settings

    with pytest.raises(ConfigError) as err:
        load_settings(refresh={"policies": [policy]})
    assert message in err.value.message and err.value.hint


def test_two_policies_with_one_name_are_refused() -> None:
    from agent.errors import ConfigError
    from agent.settings import load_settings

    with pytest.raises(ConfigError, match="refresh policy names must be unique; twice"):
        load_settings(refresh={"policies": [{"name": "twice", "cron": "0 0 * * *"},
                                            {"name": "twice", "price_change_pct": 3}]})  # fmt: skip
