"""The refresh parts an agent runs, wired from settings: the runner (the worker advances refresh jobs with it),
the cron scheduler and the price triggers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from agent.deployment import PRICE_FEED, Deployment
from agent.ipfs.repo import IpfsRepo
from agent.jobs import Job, JobStore
from agent.pipeline.collection import CollectionReader
from agent.pipeline.generate import GenerateStage
from agent.pipeline.inputs import InputsStage
from agent.pipeline.ports import Review
from agent.pipeline.publish import PublishStage
from agent.refresh.inputs import RefreshInputs
from agent.refresh.runner import RefreshRunner
from agent.refresh.schedule import RefreshScheduler
from agent.refresh.store import RefreshStore
from agent.refresh.triggers import PriceTrigger, cron_fired, queue_manual
from agent.settings import RefreshPolicySettings, Settings
from agent.store import Database
from agent.submit.batcher import RefreshBatcher
from agent.submit.errors import GWEI
from agent.submit.fees import FeeOracle
from agent.submit.sender import Web3TxSender
from agent.watch import WatchConfig
from oracles.guard import OracleGuard

log = logging.getLogger("chrysalis.refresh")


class RefreshService:
    """Runner, scheduler and price triggers of one collection. Build it with :meth:`build`.

    Attributes:
        runner: Advances refresh jobs (the worker calls it when no evolution is claimable).
        scheduler: The cron policies (None without any); started by :meth:`start`.
        triggers: One price trigger per watched feed; :meth:`poll` handles their new logs.
        store: The refresh tables. jobs: The job store. chain_id: The chain.
    """

    def __init__(
        self,
        *,
        runner: RefreshRunner,
        jobs: JobStore,
        store: RefreshStore,
        chain_id: int,
        scheduler: RefreshScheduler | None = None,
        triggers: Sequence[PriceTrigger] = (),
    ) -> None:
        self.runner = runner
        self.jobs = jobs
        self.store = store
        self.chain_id = chain_id
        self.scheduler = scheduler
        self.triggers = list(triggers)

    @classmethod
    def build(
        cls,
        *,
        settings: Settings,
        deployment: Deployment,
        db: Database,
        jobs: JobStore,
        reader: CollectionReader,
        repo: IpfsRepo,
        inputs: InputsStage,
        generate: GenerateStage,
        publish: PublishStage,
        sender: Web3TxSender,
        review: Review | None = None,
        on_job: Callable[[], None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> RefreshService:
        """Wire the refresh parts from ``settings`` and the agent's own database, job store, stages, reader, repo
        and sender (``db`` holds the refresh tables, the price triggers' cursors and the cron schedules).

        The refresh sends from the agent's key with the agent's nonce manager (so refreshes and fulfilments
        are ordered by nonce), under its own fee cap ``refresh.max_fee_per_gas_gwei``.

        Raises:
            ConfigError: a price policy names no feed and the deployment has no DevPriceFeed; bad guard limits.
        """
        from agent.errors import ConfigError

        r = settings.refresh
        store = RefreshStore(db, clock=clock)
        cap_gwei = min(r.max_fee_per_gas_gwei, settings.submit.max_fee_per_gas_gwei)
        s = settings.submit
        fees = FeeOracle(
            sender.rpc,
            max_fee_per_gas_wei=int(cap_gwei * GWEI),
            priority_fee_wei=int(s.priority_fee_gwei * GWEI) if s.priority_fee_gwei is not None else None,
            fallback_priority_fee_wei=int(s.fallback_priority_fee_gwei * GWEI),
            base_fee_multiplier=s.base_fee_multiplier,
        )
        refresh_sender = Web3TxSender(
            sender.rpc,
            sender.signer,
            s,
            decoder=sender.decoder,
            fees=fees,
            nonces=sender.nonces,
            tracker=sender.tracker,
            journal=sender.journal,  # its broadcasts are recorded before they are sent, as the evolutions' are
        )
        address = deployment.address()
        default_feed = settings.agent.price_feed or (
            deployment.address(PRICE_FEED) if PRICE_FEED in deployment.contracts else None
        )
        by_feed: dict[str, list[RefreshPolicySettings]] = {}
        for policy in r.policies:
            if policy.price_change_pct is None:
                continue
            feed = policy.feed or default_feed
            if feed is None:
                raise ConfigError(
                    f"refresh policy {policy.name!r} watches the price, but no feed is known",
                    hint="set its feed = '0x...', or agent.price_feed",
                )
            by_feed.setdefault(feed.lower(), []).append(policy)
        guard = _guard(settings, inputs)
        runner = RefreshRunner(
            jobs=jobs,
            store=store,
            inputs=RefreshInputs(
                reader,
                sender.rpc,
                inputs.oracles,
                inputs.rules,
                repo,
                guard,
                token_name=inputs.token_name,
                collection_name=inputs.collection_name,
                first_render=r.first_render,
                remote=inputs.remote,
            ),
            generate=generate,
            publish=publish,
            batcher=RefreshBatcher(refresh_sender, sender.rpc, address, s),
            sender=refresh_sender,
            settings=r,
            confirmations=settings.chain.confirmations,
            price_feeds=list(by_feed),
            wait_chunk_s=settings.agent.wait_chunk_s,
            receipt_timeout_s=s.receipt_timeout_s,
            clock=clock,
            review=review,
            review_poll_s=max(1.0, settings.chain.poll_interval_s),
        )
        chain_id = deployment.chain_id
        triggers = [
            PriceTrigger(
                jobs=jobs,
                store=store,
                rpc=reader.rpc,
                feed=feed,
                policies=policies,
                chain_id=chain_id,
                watch=WatchConfig.from_settings(settings.chain, address=feed, abi=[], start_block=0),
                on_job=on_job,
            )
            for feed, policies in sorted(by_feed.items())
        ]
        scheduler = None
        if any(p.cron for p in r.policies):
            scheduler = RefreshScheduler(
                db,
                r.policies,
                lambda policy, fired_at: cron_fired(jobs, store, chain_id, policy, fired_at),
                scheduler_id=f"{chain_id}:{address.lower()}",
                timezone=r.timezone,
                table=r.scheduler_table,
                clock=clock,
            )
        return cls(
            runner=runner, jobs=jobs, store=store, chain_id=chain_id, scheduler=scheduler, triggers=triggers
        )

    def poll(self) -> int:
        """Handle new price-feed logs; returns how many refreshes were queued."""
        return sum(t.poll() for t in self.triggers)

    def start(self) -> None:
        """Start the cron scheduler (if any policy has a cron)."""
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()

    def queue_manual(
        self, tokens: Sequence[int] | None, *, force: bool = False, by: str | None = None
    ) -> tuple[Job, bool]:
        return queue_manual(self.jobs, self.store, self.chain_id, tokens, force=force, by=by)


def _guard(settings: Settings, inputs: InputsStage) -> OracleGuard:
    """The guard a refresh screens readings with: the evolution pipeline's limits (``oracles.guard``) with
    ``refresh.guard`` on top (a refresh may be stricter: it rewrites many tokens at once)."""
    limits: dict[str, dict[str, Any]] = {}
    oracles = getattr(settings, "oracles", None)
    for source in (getattr(oracles, "guard", None), settings.refresh.guard):
        for reading, spec in (source or {}).items():
            limits[reading] = {**limits.get(reading, {}), **dict(spec)}
    return OracleGuard.from_mapping(limits)
