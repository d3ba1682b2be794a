"""The agent: watches the collection, turns evolution requests into jobs and advances them to confirmed.

Public API (used by the ``chrysalis run/status/jobs/retry/evolve`` commands and ``make demo``)::

    with Agent.from_settings(load_settings()) as agent:
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

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Self

from agent.deployment import Deployment
from agent.errors import ChrysalisError, ConfigError
from agent.generate.base import ImageGenerator, LoreWriter
from agent.ipfs.backends.replicated import Replicator
from agent.ipfs.reader import DagLimits
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.jobs import JobState, JobStore, RetryPolicy, Stage
from agent.metrics import CHAIN_HEAD, CURSOR_BLOCK, JOBS_BY_STATE, JOBS_WAITING, WATCH_LAG
from agent.pipeline.accounting import gas_spent
from agent.pipeline.assets import AssetStore
from agent.pipeline.chain import CollectionReader
from agent.pipeline.errors import AgentTimeoutError
from agent.pipeline.events import WATCHED_EVENTS, EventRouter
from agent.pipeline.generate import GenerateStage
from agent.pipeline.inputs import InputsStage, build_oracles
from agent.pipeline.publish import PublishStage
from agent.pipeline.reconcile import Reconciler
from agent.pipeline.submit import Settler, Submitter
from agent.pipeline.worker import Worker, in_flight
from agent.settings import Settings
from agent.watch import ChainResetError, DeepReorgError, SqlCursorStore, WatchConfig, Watcher
from agent.watch.rpc import RpcClient

log = logging.getLogger("chrysalis.pipeline")


def _review_gate(settings: Settings, store: JobStore) -> Any:
    """The studio's review gate on the job store's database when review mode is on (``studio.review``)."""
    studio = getattr(settings, "studio", None)
    if studio is None or not getattr(studio, "review", False):
        return None
    from agent.studio.review import ReviewGate

    return ReviewGate.for_store(store)


@dataclass(frozen=True)
class AgentStatus:
    """A snapshot of the agent for status lines, ``chrysalis status`` and metrics.

    Attributes:
        chain_head: The node's latest block number (None when the node could not be reached).
        cursor_block: The last block the watcher handled (None before the first).
        lag: ``chain_head - cursor_block`` (None when either is unknown).
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
    lag: int | None
    jobs: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    gas_spent: int = 0
    events_seen: int = 0
    worker_id: str = ""
    unsettled: int = 0
    stalled: int = 0

    @property
    def pending(self) -> int:
        """Jobs not finished yet (queued or running)."""
        return self.jobs.get("queued", 0) + self.jobs.get("running", 0)


class Agent:
    """Watches one collection and fulfils its evolution requests. Build it with :meth:`from_settings`.

    Attributes:
        settings, deployment, store, watcher, reader, repo, replicator, worker, router: The parts, for the CLI
            and tests (``store`` lists and retries jobs; ``repo`` serves the published assets).
        gateway: The embedded IPFS node's read-only gateway (no RPC) when ``agent.serve_gateway`` asks for one.
        refresh: The refreshes (:class:`~agent.refresh.service.RefreshService`): the worker runs refresh jobs
            between evolutions, :meth:`poll_once` handles the price triggers, :meth:`run` runs the cron schedules.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        deployment: Deployment,
        store: JobStore,
        watcher: Watcher,
        reader: CollectionReader,
        repo: IpfsRepo,
        replicator: Replicator,
        worker: Worker,
        router: EventRouter,
        gateway: NodeServer | None = None,
        closers: list[Callable[[], None]] | None = None,
        refresh: Any = None,
    ) -> None:
        self.settings = settings
        self.deployment = deployment
        self.store = store
        self.watcher = watcher
        self.reader = reader
        self.repo = repo
        self.replicator = replicator
        self.worker = worker
        self.router = router
        self.gateway = gateway
        self.refresh = refresh
        self._closers = closers or []
        self._last_error: str | None = None
        self._gas: int | None = None
        self._gas_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        worker._on_error = self._error
        worker._on_gas = self._add_gas
        router.on_job = self._wake.set
        if refresh is not None:
            for trigger in refresh.triggers:
                trigger.on_job = self._wake.set

    # -- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        worker_id: str | None = None,
        image: ImageGenerator | None = None,
        lore: LoreWriter | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Agent:
        """Open everything the agent needs from ``settings``.

        The job store (``database.url``, migrated), the watcher (``chain``, the deployment record's address,
        ABI and deploy block), the embedded IPFS repo (``ipfs.repo`` if set, else ``<data_dir>/ipfs``) and its
        replicating backends, the oracles and their guard (wallet; price feed: ``agent.price_feed`` or the
        deployment's DevPriceFeed; the ``[oracles]`` section: :func:`~agent.pipeline.inputs.build_oracles`),
        the rules (``agent.rules``), the models (``models``, unless ``image``/``lore`` are given) and the signer
        and sender (``signer``, ``submit``).

        Args:
            settings: The configuration.
            worker_id: This worker's id in the job store (default ``agent.worker_id``, else ``<host>:<pid>``).
            image: An :class:`~agent.generate.base.ImageGenerator` to use instead of the configured one
                (e.g. a null generator to measure the pipeline's own overhead).
            lore: A :class:`~agent.generate.base.LoreWriter` to use instead of the configured one.
            clock: UTC now for the job store and the refresh budgets (tests move it; default: the system's).

        Raises:
            NotFoundError: no deployment record, rules file or model.
            ConfigError: a setting is wrong, or the signer does not hold ``AGENT_ROLE`` on the collection.
            BackendUnavailableError: the database or the node cannot be reached.
        """
        from agent.generate.factory import load_image_generator, load_lore_writer
        from agent.rules import DEFAULT_RULES, load_rules
        from agent.submit import FulfilmentBatcher, KeystoreSigner, Web3TxSender

        s = settings
        cfg = s.agent
        deployment = Deployment.load(s.chain.deployment)
        abi = deployment.abi()
        address = deployment.address()
        worker_id = worker_id or cfg.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        # what only needs the settings first: bad rules or oracles fail before the database, the IPFS repo and
        # the data directory are created
        oracles, guard = build_oracles(s, deployment)
        # every declared feature must come from a configured oracle: a feature misspelt the same way in
        # [features] and in its rule is refused here, not by every evolution at runtime
        rules = load_rules(cfg.rules or DEFAULT_RULES, features=[n for o in oracles for n in o.provides])
        data_dir = Path(s.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)

        with contextlib.ExitStack() as stack:
            policy = RetryPolicy(
                max_attempts=cfg.max_attempts, base_s=cfg.retry_base_s, cap_s=cfg.retry_cap_s
            )
            store = JobStore.open(
                s.database.url, policy=policy, busy_timeout_ms=s.database.busy_timeout_ms, clock=clock
            )
            stack.callback(store.close)
            rpc = RpcClient.from_settings(s.chain)
            watcher = Watcher(
                rpc,
                SqlCursorStore(store.engine),  # type: ignore[attr-defined]
                WatchConfig.from_settings(
                    s.chain,
                    address=address,
                    abi=abi,
                    start_block=deployment.deploy_block,
                    chain_id=deployment.chain_id,
                    events=WATCHED_EVENTS,
                    start_block_hash=deployment.deploy_block_hash,
                ),
            )
            _ = watcher.chain_id  # checks the node serves the deployment's chain
            reader = CollectionReader(
                RpcClient.from_settings(s.chain), address, max_range=s.chain.max_block_range
            )

            repo_path = s.ipfs.repo if "repo" in s.ipfs.model_fields_set else data_dir / "ipfs"
            repo = IpfsRepo(repo_path, limits=DagLimits.from_settings(s.ipfs))
            replicator = Replicator.from_settings(s.ipfs, repo)
            stack.callback(replicator.close)
            gateway = None
            serve = cfg.serve_gateway
            if serve is None:
                serve = any(p.mode == "origins" for p in s.ipfs.pinning_services)
            if serve:  # read-only: what a pinning service fetches from; the RPC (writes) is never served here
                gateway = NodeServer(
                    repo, rpc=False, host=s.ipfs.gateway_host, port=s.ipfs.gateway_port
                ).start()
                stack.callback(gateway.stop)

            # the key before the models: a wrong password or role fails in a second, not after a model load
            signer = KeystoreSigner.from_settings(s.signer)
            if not reader.is_agent(signer.address):
                raise ConfigError(
                    f"the agent key {signer.address} does not hold AGENT_ROLE on the collection {address}",
                    hint="grant it (the admin calls grantRole(AGENT_ROLE, address)), or point signer.keystore at "
                    "the key the deployment named as agent",
                )
            image = image or load_image_generator(s.models)
            lore = lore or load_lore_writer(s.models)
            unfinished = store.list_jobs(state=JobState.QUEUED, limit=10_000) + store.list_jobs(
                state=JobState.RUNNING, limit=10_000
            )
            from agent.jobs.broadcasts import SqlBroadcastJournal

            journal = SqlBroadcastJournal(store.engine)  # type: ignore[attr-defined]
            sender = Web3TxSender.connect(
                s.chain.rpc_url,
                signer,
                s.submit,
                abis=[abi],
                in_flight=in_flight(unfinished),
                journal=journal,
            )
            # Before anything new is signed: every recorded broadcast's nonce is settled from the chain
            # (mined, and by which hash?), and what is still open stays taken (re-broadcast if forgotten).
            sender.settle_recorded()
            batcher = FulfilmentBatcher(sender, sender.rpc, address, s.submit)
            assets = AssetStore(data_dir / "assets")
            worker = Worker(
                store,
                worker_id,
                inputs=InputsStage(
                    reader,
                    oracles,
                    rules,
                    repo,
                    token_name=cfg.token_name,
                    collection_name=reader.name(),
                    guard=guard,
                ),
                generate=GenerateStage(image, lore, repo, assets),
                publish=PublishStage(repo, replicator, assets, {"image": image.info, "lore": lore.info}),
                submitter=Submitter(
                    batcher,
                    sender,
                    wait_chunk_s=cfg.wait_chunk_s,
                    receipt_timeout_s=s.submit.receipt_timeout_s,
                ),
                settler=Settler(reader, signer.address),
                lease_s=cfg.lease_s,
                batch_size=cfg.batch_size,
                batch_wait_s=cfg.batch_wait_s,
                review=_review_gate(s, store),
                review_poll_s=max(1.0, s.chain.poll_interval_s),
                watched=partial(watcher.cursors.load, watcher.stream),
            )
            router = EventRouter(store, reader, deployment.chain_id, max_attempts=cfg.max_attempts)
            router.reconciler = Reconciler(
                reader.rpc, address, abi, watcher.decoder, store, deployment.chain_id, router,
                start_block=deployment.deploy_block, interval_s=cfg.reconcile_interval_s, stream=watcher.stream,
            )  # fmt: skip
            from agent.refresh.service import RefreshService

            refresh = RefreshService.build(
                settings=s, deployment=deployment, jobs=store, reader=reader, repo=repo, inputs=worker.inputs,
                generate=worker.generate, publish=worker.publish, sender=sender, clock=clock,
            )  # fmt: skip
            worker.refresher = refresh.runner
            agent = cls(
                settings=s,
                deployment=deployment,
                store=store,
                watcher=watcher,
                reader=reader,
                repo=repo,
                replicator=replicator,
                worker=worker,
                router=router,
                gateway=gateway,
                closers=[
                    c
                    for c in (refresh.stop, gateway.stop if gateway else None, replicator.close, store.close)
                    if c
                ],
                refresh=refresh,
            )
            stack.pop_all()
        log.info(
            "agent %s watching %s on chain %d from block %d (agent key %s)",
            worker_id, address, deployment.chain_id, deployment.deploy_block, signer.address,
        )  # fmt: skip
        return agent

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
        before = self.router.events_seen
        try:
            self.watcher.poll(self.router)
            state = self.watcher.state
            self.router.reconcile(state.tip.number if state is not None else None)
            if self.refresh is not None:
                self.refresh.poll()  # price triggers
        except ChrysalisError as exc:
            self._error(f"watching: {exc.message}")
            raise
        self._update_watch_gauges()
        return self.router.events_seen - before

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
        and the reaper re-queues them), count as pending: the loop waits for them.

        Raises:
            AgentTimeoutError: jobs still pending after ``timeout_s`` (it lists them).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.poll_once()
            worked = self.work_once()
            counts = self.store.counts()
            if not seen and not worked and not counts[JobState.QUEUED] and not counts[JobState.RUNNING]:
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
        if self.refresh is not None:
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
                    self._error(f"working: {exc.message}")
                    log.warning("work failed: %s", exc)
                    worked = 0
                    stop.wait(1.0)
                if time.monotonic() - last_status >= 1.0:  # also refreshes the jobs / head / lag gauges
                    last_status = time.monotonic()
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
                    self._clear_error("watching:")
                    failures = 0
                except (DeepReorgError, ChainResetError) as exc:
                    log.critical("%s", exc)
                    fatal.append(exc)
                    stop.set()
                    return
                except Exception as exc:  # noqa: BLE001 - retried with back-off; logged and kept as last error
                    failures += 1
                    self._error(f"watching: {exc}")
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
            self._error(f"status: {exc.message}")
            head = None
        else:
            self._clear_error("status:")
        state = self.watcher.state
        cursor = state.tip.number if state is not None else None
        # a node behind the cursor (a lagging backend) is no negative lag: the watcher waits for it
        lag = max(0, head - cursor) if head is not None and cursor is not None else None
        counts = {s.value: n for s, n in self.store.counts().items()}
        for name, n in counts.items():
            JOBS_BY_STATE.labels(state=name).set(n)
        if head is not None:
            CHAIN_HEAD.set(head)
        self._update_watch_gauges(head)
        waiting = self.store.waiting_counts()
        for why, n in waiting.items():
            JOBS_WAITING.labels(why=why).set(n)
        last = self._last_error
        if last is None:
            failed = self.store.list_jobs(state=JobState.FAILED, newest_first=True, limit=1)
            last = failed[0].reason if failed else None
        return AgentStatus(
            chain_head=head,
            cursor_block=cursor,
            lag=lag,
            jobs=counts,
            last_error=last,
            gas_spent=self._gas_spent(),
            events_seen=self.router.events_seen,
            worker_id=self.worker_id,
            unsettled=waiting["unsettled"],
            stalled=waiting["stalled"],
        )

    def _update_watch_gauges(self, head: int | None = None) -> None:
        state = self.watcher.state
        if state is not None:
            CURSOR_BLOCK.set(state.tip.number)
            if head is not None:
                WATCH_LAG.set(max(0, head - state.tip.number))

    def _error(self, message: str) -> None:
        self._last_error = message

    def _clear_error(self, prefix: str) -> None:
        """Forget the last error if it came from ``prefix`` (``watching:``): the node answers again, so an
        outage it reported is over and must not stay on the status line."""
        last = self._last_error
        if last is not None and last.startswith(prefix):
            self._last_error = None

    def _add_gas(self, gas: int) -> None:
        with self._gas_lock:
            self._gas = self._gas_spent_locked() + gas

    def _gas_spent(self) -> int:
        with self._gas_lock:
            return self._gas_spent_locked()

    def _gas_spent_locked(self) -> int:
        if self._gas is None:  # once: what earlier runs recorded (the same count as `chrysalis status`)
            self._gas = gas_spent(self.store).gas
        return self._gas

    # -- lifecycle ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the gateway and release the IPFS backends and the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for close in [*self._closers, self.worker.inputs.close]:
            try:
                close()
            except Exception:
                log.exception("closing %r failed", close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
