"""What queues a refresh: a cron fire, a price move, or a person (``chrysalis refresh``, the studio).

Every trigger queues a ``refresh`` job; the worker runs it. A trigger does not queue a second refresh while one
that covers the same tokens is still queued and has not taken its block yet: that one reads the newest data
when it starts anyway.

Price trigger: a :class:`~agent.watch.Watcher` follows the feed's ``AnswerUpdated`` logs (its own cursor, so
restarts resume and reorgs are seen). A log whose answer moved more than a policy's ``price_change_pct`` away
from the baseline -- the feed's answer at the last refresh, whatever triggered it -- queues a refresh (key
``refresh:<chain>:price:<policy>:<block hash>:<log index>``, with the log as the job's source, so a reorg that
orphans the price update cancels the refresh if it has not started). The first time a price trigger is armed,
the baseline is the feed's answer at the head and earlier history is not replayed.
"""

from __future__ import annotations

import getpass
import logging
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from eth_typing import HexStr
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3
from web3.exceptions import ContractLogicError

from agent.domain import ChainEvent, LogKey
from agent.errors import ConfigError
from agent.jobs import Job, JobKind, JobState, JobStore
from agent.metrics import REFRESHES_QUEUED
from agent.refresh.runner import payload_tokens
from agent.refresh.store import RefreshStore
from agent.settings import RefreshPolicySettings
from agent.tokens import ALL, format_tokens, parse_tokens
from agent.watch import NewBlock, Reorg, SqlCursorStore, WatchConfig, Watcher, WatchEvent
from agent.watch.rpc import RpcClient

log = logging.getLogger("chrysalis.refresh")

ANSWER_UPDATED_ABI: list[dict[str, Any]] = [
    {
        "type": "event",
        "name": "AnswerUpdated",
        "anonymous": False,
        "inputs": [
            {"name": "current", "type": "int256", "indexed": True},
            {"name": "roundId", "type": "uint256", "indexed": True},
            {"name": "updatedAt", "type": "uint256", "indexed": False},
        ],
    }
]
_LATEST_ROUND = function_signature_to_4byte_selector("latestRoundData()")


def refresh_key(chain_id: int, trigger: str, *parts: object) -> str:
    """The idempotency key of a refresh job: ``refresh:<chain>:<trigger>:<parts...>``."""
    return ":".join(["refresh", str(chain_id), trigger, *(str(p) for p in parts)])


def requested_by() -> str:
    """``user@host`` of the person running the command."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def queue_refresh(
    jobs: JobStore,
    store: RefreshStore,
    key: str,
    *,
    trigger: str,
    tokens: Sequence[int] | None = None,
    policy: str | None = None,
    force: bool = False,
    extra: dict[str, Any] | None = None,
    source: LogKey | None = None,
    block_number: int | None = None,
    coalesce: bool = True,
) -> tuple[Job, bool]:
    """Queue a refresh job; returns ``(job, created)``.

    With ``coalesce``, a queued refresh that has not started and covers ``tokens`` (and is forced if this one
    is) is returned instead of queueing another.
    """
    wanted = None if tokens is None else set(tokens)
    if coalesce:
        for job_id, state, queued in store.open_refresh_jobs():
            if state != JobState.QUEUED.value or store.run(job_id) is not None:
                continue
            covers = payload_tokens(queued)
            if (covers is None or (wanted is not None and wanted <= set(covers))) and (
                bool(queued.get("force")) or not force
            ):
                log.info("%s refresh%s not queued: job %s, queued and not started, covers it", trigger,
                         f" {policy!r}" if policy else "", job_id)  # fmt: skip
                return jobs.get(job_id), False
    payload: dict[str, Any] = {
        "trigger": trigger,
        "policy": policy,
        "tokens": ALL if tokens is None else format_tokens(tokens),
        "force": force,
        **(extra or {}),
    }
    job, created = jobs.enqueue(
        JobKind.REFRESH, key, payload=payload, source=source, block_number=block_number
    )
    if created:
        REFRESHES_QUEUED.labels(trigger=trigger).inc()
        log.info("refresh job %s queued (%s%s, tokens %s)", job.id, trigger, f" {policy!r}" if policy else "",
                 payload["tokens"])  # fmt: skip
    return job, created


def cron_fired(
    jobs: JobStore, store: RefreshStore, chain_id: int, policy: RefreshPolicySettings, fired_at: datetime
) -> tuple[Job, bool]:
    """Queue the refresh of a cron policy that fired at ``fired_at`` (one per policy and minute)."""
    return queue_refresh(
        jobs,
        store,
        refresh_key(chain_id, "cron", policy.name, fired_at.strftime("%Y-%m-%dT%H:%M")),
        trigger="cron",
        tokens=parse_tokens(policy.tokens),
        policy=policy.name,
        extra={"fired_at": fired_at.isoformat(), "cron": policy.cron},
    )


def queue_manual(
    jobs: JobStore,
    store: RefreshStore,
    chain_id: int,
    tokens: Sequence[int] | None,
    *,
    force: bool = False,
    by: str | None = None,
) -> tuple[Job, bool]:
    """Queue a manual refresh (``chrysalis refresh``); never coalesced: a person asked for it."""
    return queue_refresh(
        jobs,
        store,
        refresh_key(chain_id, "manual", secrets.token_hex(6)),
        trigger="manual",
        tokens=tokens,
        force=force,
        extra={"requested_by": by or requested_by()},
        coalesce=False,
    )


class PriceTrigger:
    """Queues refreshes when a feed's answer moves; see the module docstring.

    Args:
        jobs, store: The job store and the refresh tables.
        rpc: The chain (the watcher's client).
        feed: The Chainlink-compatible feed.
        policies: The ``price_change_pct`` policies on this feed.
        chain_id: The chain.
        watch: Watcher settings (confirmations, ranges, finality) as a template; address, ABI, start and
            stream are this trigger's.
        on_job: Called when a refresh was queued (wakes the worker).
    """

    def __init__(
        self,
        *,
        jobs: JobStore,
        store: RefreshStore,
        rpc: RpcClient,
        feed: str,
        policies: Sequence[RefreshPolicySettings],
        chain_id: int,
        watch: WatchConfig,
        on_job: Callable[[], None] | None = None,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.rpc = rpc
        self.feed = Web3.to_checksum_address(feed)
        self.policies = sorted(
            (p for p in policies if p.price_change_pct), key=lambda p: p.price_change_pct or 0
        )
        self.chain_id = chain_id
        self.on_job = on_job or (lambda: None)
        baseline = store.baseline(self.feed)
        if baseline is None:
            head = rpc.block_number()
            answer = self.answer_at(head)
            store.set_baseline(self.feed, answer, head)
            log.info("price trigger on %s armed: baseline %d at block #%d", self.feed, answer, head)
            start = head + 1
        else:
            start = baseline[1] + 1
        config = WatchConfig(
            address=self.feed,
            abi=ANSWER_UPDATED_ABI,
            start_block=start,
            events=["AnswerUpdated"],
            confirmations=watch.confirmations,
            finality_depth=watch.finality_depth,
            max_range=watch.max_range,
            poll_interval_s=watch.poll_interval_s,
            stream=f"refresh-trigger:{chain_id}:{self.feed.lower()}",
            chain_id=chain_id,
        )
        self.watcher = Watcher(rpc, SqlCursorStore(store.db), config)

    def answer_at(self, block: int) -> int:
        """The feed's latest answer at ``block`` (``latestRoundData``).

        Raises:
            ConfigError: the address does not answer ``latestRoundData()`` like a Chainlink feed.
        """
        try:
            raw = bytes(
                self.rpc.call(
                    "eth_call",
                    lambda: self.rpc.w3.eth.call(
                        {"to": self.feed, "data": HexStr("0x" + _LATEST_ROUND.hex())}, block
                    ),
                )
            )
        except ContractLogicError as exc:
            raw, why = b"", f"it reverted ({exc})"
        else:
            why = "it returned no data (no contract there?)"
        if len(raw) < 160:
            raise ConfigError(
                f"the price feed {self.feed} does not answer latestRoundData() at block {block}: {why}",
                hint="point the price policy's feed (or agent.price_feed) at a Chainlink-compatible aggregator",
            )
        return int.from_bytes(raw[32:64], "big", signed=True)

    def poll(self) -> int:
        """Handle the feed's new logs; returns how many refreshes were queued."""
        self._queued = 0
        self.watcher.poll(self.handle)
        return self._queued

    def handle(self, event: WatchEvent) -> None:
        if isinstance(event, NewBlock):
            for e in event.events:
                if e.name == "AnswerUpdated":
                    self._answer(e)
        elif isinstance(event, Reorg):
            orphaned = {h.lower() for h in event.orphaned_hashes}
            for job in self.jobs.by_source_blocks(orphaned):
                if (
                    job.kind == JobKind.REFRESH
                    and job.state == JobState.QUEUED
                    and self.store.run(job.id) is None
                ):
                    self.jobs.cancel(
                        job.id, "its price update was orphaned by a reorg before the refresh started"
                    )
                    log.warning("refresh job %s cancelled: its AnswerUpdated log was orphaned", job.id)

    def _answer(self, e: ChainEvent) -> None:
        answer = int(e.args["current"])
        baseline = self.store.baseline(self.feed)
        if baseline is None or baseline[0] == 0:
            self.store.set_baseline(self.feed, answer, e.block_number)
            return
        base = baseline[0]
        moved = abs(answer - base) * 100 / abs(base)
        fired = [p for p in self.policies if moved > (p.price_change_pct or 0)]
        if not fired:
            log.debug("price %d at block #%d: %.3f%% from the baseline %d; no refresh", answer, e.block_number,
                      moved, base)  # fmt: skip
            return
        source = LogKey(self.chain_id, e.key.tx_hash, e.key.log_index, e.key.block_hash)
        for policy in fired:
            log.info(
                "price moved %.3f%% (%d -> %d) at block #%d, more than %g%%: refresh policy %r fires",
                moved, base, answer, e.block_number, policy.price_change_pct, policy.name,
            )  # fmt: skip
            _job, created = queue_refresh(
                self.jobs,
                self.store,
                refresh_key(self.chain_id, "price", policy.name, e.key.block_hash.lower(), e.key.log_index),
                trigger="price",
                tokens=parse_tokens(policy.tokens),
                policy=policy.name,
                extra={
                    "answer": str(answer), "baseline": str(base), "moved_pct": round(moved, 6),
                    "round_id": str(e.args["roundId"]), "event_block": e.block_number,
                },
                source=source,
                block_number=e.block_number,
            )  # fmt: skip
            if created:
                self._queued += 1
                self.on_job()
        self.store.set_baseline(self.feed, answer, e.block_number)

    _queued = 0
