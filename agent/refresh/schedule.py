"""Cron refresh policies on APScheduler 3, whose persistent job store lives in the agent's own database.

Each ``[[refresh.policies]]`` with ``cron`` becomes one APScheduler job (id ``refresh:<policy>``) in the table
``refresh.scheduler_table`` of ``database.url`` (SQLite or PostgreSQL, beside the agent's jobs), so schedules
survive restarts:

* On start, a policy whose job is already stored with the same trigger is kept as it is, next run time included:
  a fire that fell due while the agent was down runs once when it starts (``coalesce``, no misfire limit). A
  policy whose cron changed is rescheduled; a stored schedule whose policy was removed from the config is deleted.
* A fire does not refresh anything itself: it queues a ``refresh`` job (key
  ``refresh:<chain>:cron:<policy>:<minute>``), which the worker runs between evolutions. The key makes two agent
  processes sharing a database queue one refresh per fire (APScheduler 3 does not share a job store between
  schedulers; the job store's idempotent keys do it).

APScheduler pickles a job's function by reference and its arguments by value, so the stored job names
:func:`fire` and the scheduler's id; the live :class:`RefreshScheduler` with that id is looked up when it fires.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from agent.cron import crontab_trigger
from agent.settings import RefreshPolicySettings
from agent.store.db import Database

log = logging.getLogger("chrysalis.refresh")

JOB_PREFIX = "refresh:"
_LIVE: dict[str, RefreshScheduler] = {}
_LIVE_LOCK = threading.Lock()


def fire(scheduler_id: str, policy: str) -> None:
    """What a stored cron job runs: queue the policy's refresh through the live scheduler with that id."""
    with _LIVE_LOCK:
        scheduler = _LIVE.get(scheduler_id)
    if scheduler is None:
        log.warning(
            "cron refresh %r fired, but no refresh scheduler %r runs in this process", policy, scheduler_id
        )
        return
    scheduler.fired(policy)


class RefreshScheduler:
    """Runs the cron policies; see the module docstring.

    Args:
        db: The agent's database (APScheduler keeps its job table there).
        policies: The cron policies (others are ignored).
        on_fire: Queues the refresh: ``on_fire(policy, fired_at)``.
        scheduler_id: Stable name of this collection's scheduler (``<chain id>:<collection>``).
        timezone: Time zone of the cron expressions.
        table: APScheduler's job table.
        clock: UTC now, for the fire time recorded with the refresh.
    """

    def __init__(
        self,
        db: Database,
        policies: Sequence[RefreshPolicySettings],
        on_fire: Callable[[RefreshPolicySettings, datetime], Any],
        *,
        scheduler_id: str,
        timezone: str = "UTC",
        table: str = "refresh_schedules",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.policies = {p.name: p for p in policies if p.cron}
        self.on_fire = on_fire
        self.scheduler_id = scheduler_id
        self.timezone = ZoneInfo(timezone)
        self.table = table
        self.clock = clock or (lambda: datetime.now(UTC))
        self._scheduler: BackgroundScheduler | None = None

    def trigger(self, policy: RefreshPolicySettings) -> CronTrigger:
        assert policy.cron is not None
        return crontab_trigger(policy.cron, timezone=self.timezone)

    def start(self) -> RefreshScheduler:
        """Start the scheduler thread, reconciling the stored schedules with the policies (see the module
        docstring). Returns self."""
        if self._scheduler is not None:
            return self
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.db.engine, tablename=self.table)},
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=self.timezone,
        )
        with _LIVE_LOCK:
            _LIVE[self.scheduler_id] = self
        scheduler.start(paused=True)
        self._scheduler = scheduler
        stored = {job.id: job for job in scheduler.get_jobs() if job.id.startswith(JOB_PREFIX)}
        for name, policy in sorted(self.policies.items()):
            job_id = JOB_PREFIX + name
            trigger = self.trigger(policy)
            job = stored.pop(job_id, None)
            if job is None:
                job = scheduler.add_job(
                    "agent.refresh.schedule:fire", trigger, id=job_id, name=f"refresh policy {name}",
                    args=[self.scheduler_id, name],
                )  # fmt: skip
                log.info("refresh policy %r scheduled (%s): next at %s", name, policy.cron, job.next_run_time)
            elif str(job.trigger) != str(trigger) or list(job.args) != [self.scheduler_id, name]:
                job = scheduler.modify_job(job_id, args=[self.scheduler_id, name])
                job = scheduler.reschedule_job(job_id, trigger=trigger)
                log.info(
                    "refresh policy %r rescheduled (%s): next at %s", name, policy.cron, job.next_run_time
                )
            else:
                log.info("refresh policy %r (%s): next at %s (kept from the database)", name, policy.cron,
                         job.next_run_time)  # fmt: skip
        for job_id in stored:
            scheduler.remove_job(job_id)
            log.info("stored schedule %s removed: its policy is no longer configured", job_id)
        scheduler.resume()
        return self

    def next_runs(self) -> dict[str, datetime | None]:
        """Policy name -> its next fire time (None: paused or finished)."""
        if self._scheduler is None:
            return stored_schedules(self.db, self.table)
        return {
            job.id[len(JOB_PREFIX) :]: job.next_run_time
            for job in self._scheduler.get_jobs()
            if job.id.startswith(JOB_PREFIX)
        }

    def wakeup(self) -> None:
        """Look for due schedules now (after the clock moved)."""
        if self._scheduler is not None:
            self._scheduler.wakeup()

    def fired(self, name: str) -> None:
        policy = self.policies.get(name)
        if policy is None:
            log.warning("cron refresh %r fired but is no longer configured", name)
            return
        try:
            self.on_fire(policy, self.clock())
        except Exception:
            log.exception("queueing the cron refresh %r failed", name)

    def stop(self) -> None:
        """Stop the scheduler thread (waits for a fire in progress). The schedules stay stored."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        with _LIVE_LOCK:
            if _LIVE.get(self.scheduler_id) is self:
                del _LIVE[self.scheduler_id]


def stored_schedules(db: Database, table: str = "refresh_schedules") -> dict[str, datetime | None]:
    """The stored cron schedules' next fire times, read without running a scheduler (``chrysalis refresh
    status``)."""
    if not db.has_table(table):
        return {}
    meta = sa.MetaData()
    t = sa.Table(table, meta, autoload_with=db.engine)
    with db.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.next_run_time)).all()
    return {
        str(job_id)[len(JOB_PREFIX) :]: (datetime.fromtimestamp(ts, UTC) if ts is not None else None)
        for job_id, ts in rows
        if str(job_id).startswith(JOB_PREFIX)
    }
