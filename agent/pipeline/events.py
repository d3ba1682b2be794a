"""What the agent does with each watcher event: enqueue requests, cancel what the chain took back.

* ``EvolutionRequested`` (directly or through ``fuse``): one job per request, keyed ``evolve:<chain>:<id>``
  (the store ignores a key it has seen, so a re-delivered log does nothing). A ``Fused`` log in the same
  block marks its request as a fusion.
* ``EvolutionCancelled``: the request's job is cancelled (its fee was refunded; nothing must be paid for it).
* ``Evolved``: a fulfilment was mined; the worker settles jobs from the chain itself, so it is only counted.
* ``Transfer``: holding history. The wallet oracle reads it from the chain at each request's block (holding
  time, tokens held), so it is only counted here.
* Reorg: unfinished jobs whose request log was orphaned are cancelled (a re-mined request revives its job with
  the new block); a confirmed job whose fulfilment was mined in an orphaned block is re-checked, and if its
  request is pending again on the new chain a replay job re-sends the same published metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.domain import LogKey
from agent.jobs import JobKind, JobState, JobStore
from agent.metrics import EVENTS_SEEN
from agent.pipeline.collection import CollectionReader
from agent.pipeline.request import EvolutionRequest, job_key

if TYPE_CHECKING:  # pragma: no cover
    from agent.pipeline.reconcile import Reconciler
from agent.watch import NewBlock, Reorg, WatchEvent

log = logging.getLogger("chrysalis.pipeline")

WATCHED_EVENTS = ("EvolutionRequested", "Fused", "Evolved", "EvolutionCancelled", "Transfer")
"""The collection's events the agent watches."""

RECHECK_CONFIRMED = 500
"""How many of the newest confirmed jobs a reorg notice re-checks (reorgs are at most finality_depth deep)."""


class EventRouter:
    """The watcher's handler; see the module docstring.

    Args:
        store: The job store. reader: The collection. chain_id: The chain.
        max_attempts: Attempts of each new job.
        on_job: Called whenever a job was created or revived (wakes the worker).
        reconciler: Finds pending requests whose log was missed (:meth:`reconcile`); None: never.
    """

    def __init__(
        self,
        store: JobStore,
        reader: CollectionReader,
        chain_id: int,
        *,
        max_attempts: int | None = None,
        on_job: Callable[[], None] | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.store = store
        self.reader = reader
        self.chain_id = chain_id
        self.max_attempts = max_attempts
        self.on_job = on_job or (lambda: None)
        self.reconciler = reconciler
        self.events_seen = 0

    def __call__(self, event: WatchEvent) -> None:
        if isinstance(event, NewBlock):
            self._block(event)
        elif isinstance(event, Reorg):
            self._reorg(event)

    def reconcile(self, passed: int | None) -> int:
        """If a sweep is due, recover pending requests opened at or before block ``passed`` (the watcher's
        cursor) that have no job (see :mod:`agent.pipeline.reconcile`); returns how many."""
        if self.reconciler is None or passed is None or not self.reconciler.due():
            return 0
        return self.reconciler.sweep(passed)

    def _block(self, block: NewBlock) -> None:
        fused = {int(e.args["requestId"]): int(e.args["burnId"]) for e in block.events if e.name == "Fused"}
        for event in block.events:
            EVENTS_SEEN.labels(event=event.name).inc()
            self.events_seen += 1
            if event.name == "EvolutionRequested":
                request = EvolutionRequest.from_event(event, fused.get(int(event.args["requestId"])))
                self.enqueue(request)
            elif event.name == "EvolutionCancelled":
                self._cancelled(int(event.args["requestId"]), event.key.tx_hash)

    def enqueue(self, request: EvolutionRequest, *, key: str | None = None) -> None:
        key = key or job_key(self.chain_id, request.request_id)
        source = LogKey(self.chain_id, request.tx_hash, request.log_index, request.block_hash)
        job, created = self.store.enqueue(
            JobKind.EVOLVE,
            key,
            payload=request.to_payload(),
            source=source,
            block_number=request.block_number,
            max_attempts=self.max_attempts,
        )
        if created:
            log.info(
                "job %s: evolve token %s (request %s%s) from block #%d",
                job.id, request.token_id, hex(request.request_id),
                f", fused with token {request.fused_burn_id}" if request.fused_burn_id else "",
                request.block_number,
            )  # fmt: skip
            self.on_job()
            return
        moved = job.source is not None and job.source.block_hash != request.block_hash
        if job.state == JobState.CONFIRMED and moved and self.reader.is_pending(request.request_id):
            # The request was re-mined after a reorg that also orphaned the fulfilment: a fresh job for the
            # request as it is now (new block, new seed and inputs).
            log.warning("request %s re-mined in block %s and pending again; new job", hex(request.request_id),
                        request.block_hash)  # fmt: skip
            self.enqueue(request, key=f"{job.key}@{request.block_hash[:18]}")

    def _cancelled(self, request_id: int, tx_hash: str) -> None:
        job = self.store.get_by_key(job_key(self.chain_id, request_id))
        if job is None or job.state in (JobState.CONFIRMED, JobState.CANCELLED):
            return
        self.store.cancel(
            job.id, f"request {request_id:#x} was cancelled on-chain (fee refunded) in {tx_hash}"
        )

    def _reorg(self, reorg: Reorg) -> None:
        orphaned = {h.lower() for h in reorg.orphaned_hashes}
        cancelled = self.store.cancel_orphaned(orphaned)
        for job in cancelled:
            log.warning("job %s (%s) cancelled: its request log was orphaned by a reorg", job.id, job.key)
        for job in self.store.list_jobs(state=JobState.CONFIRMED, newest_first=True, limit=RECHECK_CONFIRMED):
            mined_in = str((job.result or {}).get("block_hash", "")).lower()
            if mined_in not in orphaned:
                continue
            if job.source is not None and job.source.block_hash in orphaned:
                continue  # the request itself is gone; if re-mined, enqueue() handles it
            request = EvolutionRequest.from_payload(job.payload)
            if not self.reader.is_pending(request.request_id):
                log.info("job %s: its fulfilment was re-mined after the reorg; nothing to do", job.id)
                continue
            log.warning(
                "job %s: its fulfilment %s was mined in orphaned block %s and request %s is pending again; "
                "re-sending the published metadata",
                job.id, (job.result or {}).get("tx_hash"), mined_in, request.request_id,
            )  # fmt: skip
            replay = EvolutionRequest.from_payload({**job.payload, "replay_of": job.id})
            self.enqueue(replay, key=f"{job.key}#replay@{mined_in[:18]}")
