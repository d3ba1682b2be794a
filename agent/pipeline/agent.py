"""The agent: watches the collection, turns evolution requests into jobs and advances them to confirmed.

Public API (used by the ``chrysalis run/status/jobs/retry/evolve`` commands and ``make demo``)::

    with build_agent(load_settings()) as agent:   # agent.app, the composition root
        agent.run(stop)                  # until stop.set() (SIGTERM / SIGINT)
        agent.run_until_idle()           # tests and the demo: until nothing is pending
        agent.status()                   # chain head, cursor, lag, jobs by state, last error, gas spent

Guarantees: no request is lost (the watcher's cursor advances only after its events became jobs, its log answers
are cross-checked against header blooms and re-scanned at finalization, and a periodic on-chain reconciliation
finds any pending request without a job; jobs are durable and leased), none is fulfilled twice (the contract fulfils
a request at most once, every broadcast is recorded before it is sent, and the agent settles every uncertain case
from the chain before sending again), none with the wrong request's metadata (the contract binds a fulfilment to
the request's seed), and nothing is paid for a request that was cancelled or orphaned (the pre-send
``isPendingWith`` check). See :mod:`agent.pipeline.worker` for the stages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from agent.deployment import Deployment
from agent.errors import ChrysalisError
from agent.ipfs.backends.replicated import Replicator
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.jobs import JobState, JobStore, Stage
from agent.metrics import CHAIN_HEAD, CURSOR_BLOCK, JOBS_BY_STATE, JOBS_WAITING, WATCH_LAG
from agent.pipeline.accounting import gas_spent
from agent.pipeline.collection import CollectionReader
from agent.pipeline.errors import AgentTimeoutError
from agent.pipeline.events import EventRouter
from agent.pipeline.ports import Refreshes
from agent.pipeline.worker import Worker
from agent.settings import Settings
from agent.store import Database
from agent.store.roles import SCHEDULE, WATCH, RoleLeases
from agent.watch import ChainResetError, DeepReorgError, Watcher
from agent.watch.cursor import watch_lag

log = logging.getLogger("chrysalis.pipeline")


@dataclass(frozen=True)
class AgentStatus:
    """A snapshot of the agent for status lines, ``chrysalis status`` and metrics.

    Attributes:
        chain_head: The node's latest block number (None when the node could not be reached).
        cursor_block: The last block the watcher handled (None before the first).
        jobs: Number of jobs in each state (``queued``, ``running``, ``confirmed``, ``failed``, ``cancelled``).
        last_error: The most recent error the agent met (or the newest failed job's reason).
        gas_spent: Gas used by the agent's fulfilment transactions (this process's, plus what the job store
            records of earlier runs).
        events_seen: Contract events the watcher delivered to this agent since it started.
        worker_id: This agent's worker id in the job store.
        unsettled: Confirmed jobs whose fulfilment's block the watcher has not passed yet (re-checked until it
            has and the block is still canonical).
        stalled: Unfinished jobs waiting on a fulfilment not mined yet (waiting is not failing).
    """

    chain_head: int | None
    cursor_block: int | None
    jobs: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    gas_spent: int = 0
    events_seen: int = 0
    worker_id: str = ""
    unsettled: int = 0
    stalled: int = 0

    @property
    def lag(self) -> int | None:
        """Blocks the watcher is behind the node (:func:`agent.watch.cursor.watch_lag`; None when unknown)."""
        return watch_lag(self.chain_head, self.cursor_block)

    @property
    def pending(self) -> int:
        """Jobs not finished yet (queued or running)."""
        return self.jobs.get("queued", 0) + self.jobs.get("running", 0)


class Activity:
    """The agent's last error and the gas its fulfilments spent: the worker reports into it, the status line
    reads it.

    Args:
        store: Where earlier runs' gas is counted from (once, on the first read).
    """

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.last_error: str | None = None
        self._gas: int | None = None
        self._lock = threading.Lock()

    def error(self, message: str) -> None:
        self.last_error = message

    def clear_error(self, prefix: str) -> None:
        """Forget the last error if it came from ``prefix`` (``watching:``): the node answers again, so an
        outage it reported is over and must not stay on the status line."""
        last = self.last_error
        if last is not None and last.startswith(prefix):
            self.last_error = None

    def add_gas(self, gas: int) -> None:
        with self._lock:
            self._gas = self._spent_locked() + gas

    def gas_spent(self) -> int:
        with self._lock:
            return self._spent_locked()

    def _spent_locked(self) -> int:
        if self._gas is None:  # once: what earlier runs recorded (the same count as `chrysalis status`)
            self._gas = gas_spent(self.store).gas
        return self._gas


class Agent:
    """Watches one collection and fulfils its evolution requests. Build it with :func:`agent.app.build_agent`.

    Attributes:
        settings, deployment, store, watcher, reader, repo, replicator, worker, router: The parts, for the CLI
            and tests (``store`` lists and retries jobs; ``repo`` serves the published assets).
        db: The agent's database, which the job store, the watcher's cursor, the broadcast journal, the review
            queue and the refreshes share.
        gateway: The embedded IPFS node's read-only gateway (no RPC) when ``agent.serve_gateway`` asks for one.
        refresh: The refreshes (:class:`~agent.pipeline.ports.Refreshes`): the worker runs refresh jobs
            between evolutions, :meth:`poll_once` handles the price triggers, :meth:`run` runs the cron schedules.
        activity: The last error and the gas spent (the worker reports into the same one).
        wake: Set by whatever queues a job (the router, the refresh triggers): the run loop stops waiting.
        roles: The singleton roles (:mod:`agent.store.roles`) when several agents may share the database: only the
            holder of ``watch`` polls the chain (events, reconciliation, price triggers) and only the holder of
            ``schedule`` runs the cron schedules; every agent works jobs. None: this agent does everything.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        deployment: Deployment,
        db: Database,
        store: JobStore,
        watcher: Watcher,
        reader: CollectionReader,
        repo: IpfsRepo,
        replicator: Replicator,
        worker: Worker,
        router: EventRouter,
        activity: Activity,
        wake: threading.Event,
        gateway: NodeServer | None = None,
        closers: list[Callable[[], None]] | None = None,
        refresh: Refreshes | None = None,
        roles: RoleLeases | None = None,
    ) -> None:
        self.settings = settings
        self.roles = roles
        self._watching = roles is None  # whether this agent holds the watch role (always, alone)
        self._scheduling = False
        self.deployment = deployment
        self.store = store
        self.db = db
        self.watcher = watcher
        self.reader = reader
        self.repo = repo
        self.replicator = replicator
        self.worker = worker
        self.router = router
        self.gateway = gateway
        self.refresh = refresh
        self.activity = activity
        self._closers = closers or []
        self._wake = wake
        self._closed = False

    # -- one step at a time ---------------------------------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return self.worker.worker_id

    def poll_once(self) -> int:
        """Watch one round: new logs become jobs, jobs whose source log was orphaned are cancelled.

        Returns the number of contract events seen.

        Raises:
            DeepReorgError: a reorg deeper than ``chain.finality_depth`` (fatal: stop the agent).
            ChainResetError: the chain was replaced under the agent (fatal: stop the agent).
            RetryableError: the node failed; poll again later.
        """
        if not self._hold_watch():
            return 0
        before = self.router.events_seen
        try:
            self.watcher.poll(self.router)
            state = self.watcher.state
            self.router.reconcile(state.tip.number if state is not None else None)
            if self.refresh is not None:
                self.refresh.poll()  # price triggers
        except ChrysalisError as exc:
            self.activity.error(f"watching: {exc.message}")
            raise
        self._update_watch_gauges()
        return self.router.events_seen - before

    def _hold_watch(self) -> bool:
        """Whether this agent watches now: it holds (or just took over, or renewed) the watch role."""
        if self.roles is None:
            return True
        held = self.roles.hold(WATCH)
        if held and not self._watching:
            self.watcher.reload()  # another agent moved the cursor while this one did not watch
            log.info("agent %s took the watch role", self.roles.worker_id)
        elif not held and self._watching:
            log.warning("agent %s lost the watch role to another agent", self.roles.worker_id)
        self._watching = held
        return held

    def _tick_roles(self) -> None:
        """Note that this agent is alive, and run the cron schedules exactly while it holds the schedule role."""
        if self.roles is None:
            return
        self.roles.beat()
        if self.refresh is None:
            return
        held = self.roles.hold(SCHEDULE)
        if held and not self._scheduling:
            log.info("agent %s took the schedule role: starting the cron schedules", self.roles.worker_id)
            self.refresh.start()
        elif not held and self._scheduling:
            log.warning("agent %s lost the schedule role: stopping its cron schedules", self.roles.worker_id)
            self.refresh.stop()
        self._scheduling = held

    def work_once(self, max_jobs: int | None = None, *, until: Stage | None = None) -> int:
        """Advance claimable jobs through their stages; returns how many jobs were advanced.

        Args:
            max_jobs: Most jobs to take (default ``agent.batch_size``).
            until: Stop after recording this stage and give the jobs back (``Stage.PUBLISHED``: pin
                everything, pay nothing).
        """
        return self.worker.work_once(max_jobs, until=until)

    def run_until_idle(self, timeout_s: float = 120) -> AgentStatus:
        """Poll and work until no job is queued or running and the watcher is caught up.

        Jobs backing off after a retryable error, and jobs a dead worker still holds (until their lease expires
        and the reaper re-queues them), count as pending: the loop waits for them. So does the watch role while
        another agent holds it (a killed agent's lapses after ``agent.role_lease_s``).

        Raises:
            AgentTimeoutError: jobs still pending after ``timeout_s`` (it lists them).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.poll_once()
            worked = self.work_once()
            counts = self.store.counts()
            idle = not seen and not worked and not counts[JobState.QUEUED] and not counts[JobState.RUNNING]
            # caught up only once this agent watches (a dead holder's role lapses after agent.role_lease_s)
            if idle and self._watching:
                return self.status()
            if time.monotonic() >= deadline:
                pending = [
                    f"job {j.id} {j.key}: {j.state.value}, stage {j.stage.value if j.stage else '-'}, "
                    f"last error: {j.last_error or '-'}" + (f", {j.waiting}" if j.waiting else "")
                    for state in (JobState.QUEUED, JobState.RUNNING)
                    for j in self.store.list_jobs(state=state, limit=20)
                ]
                raise AgentTimeoutError(timeout_s, pending)
            if not worked:
                time.sleep(0.05)

    # -- the long-running loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_status: Callable[[AgentStatus], None] | None = None) -> None:
        """Watch and work until ``stop`` is set; then return promptly, giving unfinished jobs back.

        Watching runs on its own thread (polling every ``chain.poll_interval_s``, woken early by new heads when
        ``chain.ws_url`` is set); jobs are worked on this thread. ``on_status`` is called about once a second.

        Raises:
            DeepReorgError: the chain reorganised deeper than ``chain.finality_depth`` (after stopping).
            ChainResetError: the chain was replaced under the agent: another genesis, or no contract (after stopping).
        """
        self.worker.stop = stop
        if self.roles is not None:
            self.roles.register()
            self._tick_roles()  # the schedule role, if free
        elif self.refresh is not None:
            self.refresh.start()  # cron schedules
        fatal: list[BaseException] = []
        watch = threading.Thread(
            target=self._watch_loop, args=(stop, fatal), name="chrysalis-watch", daemon=True
        )
        watch.start()
        last_status = 0.0
        try:
            while not stop.is_set():
                try:
                    worked = self.work_once()
                except ChrysalisError as exc:
                    self.activity.error(f"working: {exc.message}")
                    log.warning("work failed: %s", exc)
                    worked = 0
                    stop.wait(1.0)
                if time.monotonic() - last_status >= 1.0:  # also refreshes the jobs / head / lag gauges
                    last_status = time.monotonic()
                    try:
                        self._tick_roles()
                    except Exception as exc:  # noqa: BLE001 - the database blinked: renewed at the next tick
                        log.warning("renewing this agent's roles failed: %s", exc)
                    try:
                        status = self.status()
                        if on_status is not None:
                            on_status(status)
                    except Exception:
                        log.exception("status update failed")
                if not worked and not stop.is_set():
                    self._wake.wait(min(1.0, self.settings.chain.poll_interval_s))
                    self._wake.clear()
        finally:
            stop.set()
            self._wake.set()
            watch.join(30)
            if self.refresh is not None:
                self.refresh.stop()
            if self.roles is not None:
                try:
                    self.roles.stopped()  # the roles go at once to the next agent that asks
                except Exception as exc:  # noqa: BLE001
                    log.warning("could not give back this agent's roles (they lapse by themselves): %s", exc)
        if fatal:
            raise fatal[0]

    def _watch_loop(self, stop: threading.Event, fatal: list[BaseException]) -> None:
        subscription = None
        interval = self.settings.chain.poll_interval_s
        wake = threading.Event()
        failures = 0
        try:
            if self.settings.chain.ws_url:
                from agent.watch.subscribe import WakeUpSubscription

                subscription = WakeUpSubscription(self.settings.chain.ws_url, wake.set).start()
            while not stop.is_set():
                wake.clear()
                try:
                    if self.poll_once():
                        self._wake.set()
                    if failures:
                        log.info("the node answers again after %d failed poll(s)", failures)
                    self.activity.clear_error("watching:")
                    failures = 0
                except (DeepReorgError, ChainResetError) as exc:
                    log.critical("%s", exc)
                    fatal.append(exc)
                    stop.set()
                    return
                except Exception as exc:  # noqa: BLE001 - retried with back-off; logged and kept as last error
                    failures += 1
                    self.activity.error(f"watching: {exc}")
                    log.warning("poll failed (attempt %d): %s", failures, exc)
                delay = min(30.0, interval * 2 ** min(failures, 5)) if failures else interval
                if wake.wait(delay):
                    continue
        finally:
            if subscription is not None:
                subscription.stop()
            self._wake.set()

    # -- status ---------------------------------------------------------------------------------------------

    def status(self) -> AgentStatus:
        """Chain head, cursor block, lag, jobs by state, last error and gas spent (also set as metrics)."""
        try:
            head: int | None = self.reader.rpc.block_number()
        except ChrysalisError as exc:
            self.activity.error(f"status: {exc.message}")
            head = None
        else:
            self.activity.clear_error("status:")
        state = self.watcher.state
        cursor = state.tip.number if state is not None else None
        counts = {s.value: n for s, n in self.store.counts().items()}
        for name, n in counts.items():
            JOBS_BY_STATE.labels(state=name).set(n)
        if head is not None:
            CHAIN_HEAD.set(head)
        self._update_watch_gauges(head)
        waiting = self.store.waiting_counts()
        for why, n in waiting.items():
            JOBS_WAITING.labels(why=why).set(n)
        last = self.activity.last_error
        if last is None:
            failed = self.store.list_jobs(state=JobState.FAILED, newest_first=True, limit=1)
            last = failed[0].reason if failed else None
        return AgentStatus(
            chain_head=head,
            cursor_block=cursor,
            jobs=counts,
            last_error=last,
            gas_spent=self.activity.gas_spent(),
            events_seen=self.router.events_seen,
            worker_id=self.worker_id,
            unsettled=waiting["unsettled"],
            stalled=waiting["stalled"],
        )

    def _update_watch_gauges(self, head: int | None = None) -> None:
        state = self.watcher.state
        if state is not None:
            CURSOR_BLOCK.set(state.tip.number)
            lag = watch_lag(head, state.tip.number)
            if lag is not None:
                WATCH_LAG.set(lag)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Give back this agent's roles, stop the gateway and release the IPFS backends and the database.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.roles is not None:  # before the database closes: the next agent takes the roles at once
            try:
                self.roles.stopped()
            except Exception:  # noqa: BLE001 - they lapse by themselves
                log.warning("could not give back this agent's roles; they lapse after agent.role_lease_s")
        for close in [*self._closers, self.worker.inputs.close]:
            try:
                close()
            except Exception:
                log.exception("closing %r failed", close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
