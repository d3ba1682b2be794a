"""On-chain reconciliation: every request the chain holds pending has a job, whatever the logs said.

The watcher trusts ``eth_getLogs`` only so far (it checks headers' blooms and re-scans blocks when they are
finalized), but a provider can lie consistently, or a log can be lost in ways no check of the log stream sees.
The contract itself is the ground truth: ``pendingRequestOf(tokenId)`` names the open request of every token.
:class:`Reconciler` sweeps the tokens every ``agent.reconcile_interval_s``; a pending request with no job (or only
a job cancelled as orphaned) that was opened in a block the watcher has passed is looked up -- its block found by
its ``requestedAt`` timestamp, its log fetched -- and handed to the agent's event handler as a recovered block, so
the job is created exactly as the watcher would have created it (same key, same payload).

Cost: one ``eth_call`` per minted token per sweep, plus ~log2(chain length) header reads and one or two
``eth_getLogs`` per request found missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eth_utils import event_abi_to_log_topic
from web3 import Web3

from agent.jobs import JobState, JobStore
from agent.jobs.store import ORPHANED_REASON
from agent.metrics import WATCH_LOGS_RECOVERED
from agent.pipeline.request import job_key
from agent.watch.events import BlockRef, NewBlock, WatchEvent
from agent.watch.logs import AdaptiveRange, LogDecoder, fetch_logs
from agent.watch.rpc import RpcClient, hex0x

log = logging.getLogger("chrysalis.reconcile")

SCAN_BLOCKS = 64
"""Blocks searched forward from the first block at a request's ``requestedAt`` time for its log."""


class Reconciler:
    """Finds pending requests without a job and hands their logs to ``handler``; see the module docstring.

    Args:
        rpc: The chain (every call goes through its retrying client).
        address: The collection. abi: Its ABI (the deployment record's).
        decoder: The watcher's decoder (the agent's watched events).
        store: The job store.
        chain_id: The chain (job keys).
        handler: The agent's event handler (the watcher's): gets a ``NewBlock(recovered=True)``.
        start_block: The collection's deploy block.
        interval_s: Time between sweeps (0: never).
    """

    def __init__(
        self,
        rpc: RpcClient,
        address: str,
        abi: Sequence[Mapping[str, Any]],
        decoder: LogDecoder,
        store: JobStore,
        chain_id: int,
        handler: Callable[[WatchEvent], None],
        *,
        start_block: int,
        interval_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        stream: str = "",
    ) -> None:
        self.rpc = rpc
        self.address = Web3.to_checksum_address(address)
        self.contract = rpc.w3.eth.contract(address=self.address, abi=list(abi))
        requested = next(e for e in abi if e.get("type") == "event" and e.get("name") == "EvolutionRequested")
        self._requested_topic = hex0x(event_abi_to_log_topic(requested))  # type: ignore[arg-type]
        self.decoder = decoder
        self.store = store
        self.chain_id = chain_id
        self.handler = handler
        self.start_block = start_block
        self._span = AdaptiveRange(max_size=SCAN_BLOCKS)  # what the provider accepts, kept between sweeps
        self.interval_s = interval_s
        self.stream = stream or f"{chain_id}:{self.address.lower()}"
        self._clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        """Whether a sweep is due (``interval_s`` since the last one; the first is due at once)."""
        if self.interval_s <= 0:
            return False
        return self._last is None or self._clock() - self._last >= self.interval_s

    def sweep(self, passed: int) -> int:
        """Check every token's pending request; recover those opened at or before block ``passed`` (a block the
        watcher has handled) that have no job. Returns how many requests were recovered."""
        self._last = self._clock()
        minted = int(self.rpc.call("eth_call", self.contract.functions.totalMinted().call))
        recovered = 0
        for token_id in range(1, minted + 1):
            request_id, _, _, requested_at = self.rpc.call(
                "eth_call", self.contract.functions.pendingRequestOf(token_id).call
            )
            if request_id == 0 or not self._missing(int(request_id)):
                continue
            found = self._find(int(request_id), int(requested_at), passed)
            if found is None:
                continue
            block, events = found
            log.warning(
                "request %s of token %d is pending on-chain but no job had it (its log was missed); recovered from "
                "block %s",
                hex(int(request_id)), token_id, block,
            )  # fmt: skip
            WATCH_LOGS_RECOVERED.labels(self.stream, "reconcile").inc()
            self.handler(NewBlock(block, events, recovered=True))
            recovered += 1
        return recovered

    def _missing(self, request_id: int) -> bool:
        job = self.store.get_by_key(job_key(self.chain_id, request_id))
        return job is None or (job.state == JobState.CANCELLED and job.reason == ORPHANED_REASON)

    def _timestamp(self, number: int) -> int:
        return int(
            self.rpc.call("eth_getBlockByNumber", lambda: self.rpc.w3.eth.get_block(number))["timestamp"]
        )

    def _find(
        self, request_id: int, requested_at: int, passed: int
    ) -> tuple[BlockRef, tuple[Any, ...]] | None:
        """The block holding the request's log and the block's decoded events, if it is at or below ``passed``."""
        lo, hi = self.start_block, passed
        if hi < lo or self._timestamp(hi) < requested_at:
            return None  # opened after the watcher's position: the watcher will see it
        while lo < hi:  # the first block with timestamp >= requested_at
            mid = (lo + hi) // 2
            if self._timestamp(mid) < requested_at:
                lo = mid + 1
            else:
                hi = mid
        end = min(passed, lo + SCAN_BLOCKS - 1)
        topics = [self._requested_topic, "0x" + request_id.to_bytes(32, "big").hex()]
        hits: list[Any] = []
        start = lo
        while not hits and start <= end:  # in ranges the provider accepts (a capped one refuses 64 blocks)
            covered, hits = fetch_logs(self.rpc, self.address, topics, start, end, self._span)
            start = covered + 1
        if not hits:
            log.info(
                "request %s: no log found in blocks %d..%d yet; the next sweep looks again",
                hex(request_id),
                lo,
                end,
            )
            return None
        number, block_hash = int(hits[0]["blockNumber"]), hex0x(hits[0]["blockHash"])
        raws = [r for r in self.rpc.get_logs(number, number, self.address, self.decoder.topics)
                if r["blockHash"] == block_hash]  # fmt: skip
        decoded = [e for e in (self.decoder.decode(r) for r in raws) if e is not None]
        return BlockRef(number, block_hash), tuple(sorted(decoded, key=lambda e: e.key.log_index))
