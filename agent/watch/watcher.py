"""The chain watcher: a contract's logs, in order, across restarts and reorgs, as ``block | reorg | finalize``.

Model (Ponder's): a durable cursor (the last handled block's number and hash) and the unfinalized window
behind it, linked by parent hash. Each poll

1. checks the window against the chain and, if the tip was replaced, emits a :class:`Reorg` naming the
   orphaned blocks and rolls back to the common ancestor (deeper than the finality depth: :class:`DeepReorgError`);
2. fetches logs from the cursor up to ``head - confirmations`` with ``eth_getLogs`` in adaptive ranges,
   emitting one :class:`NewBlock` per block (per block with logs, through finalized history);
3. emits :class:`Finalize` as blocks sink ``finality_depth`` below the head.

An ``eth_getLogs`` answer is not taken on trust: providers answer ``[]`` for a range their backend has not indexed
yet, or when a load-balanced backend lags. Each followed block's header carries ``logsBloom``; a block whose bloom
says it may hold one of the contract's logs while the answer had none is asked for again (:data:`BLOOM_RECHECKS`).
When blocks are finalized their logs are fetched once more, and any log not delivered yet is delivered then
(``NewBlock(recovered=True)``). What neither catches (a provider that lies consistently, in the header too) the
agent's on-chain reconciliation does: see :mod:`agent.pipeline.reconcile`.

Delivery: the cursor is saved after the caller has handled each event, so a restart resumes after the last
handled block, losing nothing and repeating nothing that was handled. An event whose handler did not return
(crash, exception) is delivered again: handle events idempotently, keyed by ``ChainEvent.key`` (the job store's
idempotency keys do that).

Three ways to consume it::

    watcher.poll(handler)              # one pass: handle everything up to the head now, return
    watcher.run(handler)               # poll forever (until watcher.stop()), waking early on WebSocket heads
    for event in watcher.events():     # the same loop as an iterator; the cursor advances when you ask for
        ...                            # the next event, i.e. after you handled this one
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3

from agent.errors import ConfigError, RetryableError
from agent.metrics import (
    WATCH_BLOCK,
    WATCH_FINALIZED,
    WATCH_LOGS,
    WATCH_LOGS_RECOVERED,
    WATCH_POLL_ERRORS,
    WATCH_REORGS,
)
from agent.settings import ChainSettings
from agent.watch.bloom import may_hold
from agent.watch.cursor import CursorState, CursorStore
from agent.watch.errors import ChainResetError
from agent.watch.events import BlockRef, Finalize, NewBlock, WatchEvent
from agent.watch.logs import AdaptiveRange, LogDecoder, fetch_logs
from agent.watch.reorg import advance, detect_reorg, finalize
from agent.watch.rpc import RpcClient
from agent.watch.subscribe import WakeUpSubscription

log = logging.getLogger("chrysalis.watch")

Handler = Callable[[WatchEvent], None]

BLOOM_RECHECKS = 2
"""How many more times the logs of a block are asked for when its header's bloom says it may hold one of ours and
the answer had none (a bloom's false positive costs this many requests; a real miss is found)."""


@dataclass(frozen=True)
class WatchConfig:
    """What to watch and how.

    Attributes:
        address: Contract address (or addresses) whose logs are fetched.
        abi: The contract ABI (a list of entries); its events are decoded.
        start_block: The deploy block: the first block searched.
        events: Event names to watch (default: every event in the ABI).
        confirmations: Blocks a log must be buried under before it is reported (0: at the head).
        finality_depth: Blocks after which a block is final; a reorg deeper than this is fatal.
        max_range: Largest ``eth_getLogs`` span in blocks (halved on refusals, regrown slowly).
        poll_interval_s: Time between polls when nothing wakes the watcher earlier.
        ws_url: Optional WebSocket endpoint whose ``newHeads`` wake the poller early.
        stream: Cursor name (default ``<chain id>:<address>``).
        chain_id: Expected chain id (e.g. the deployment record's): checked against the node.
        start_block_hash: The deploy block's hash (the deployment record's ``deploy_block_hash``): a node whose
            block ``start_block`` has another hash serves another chain (checked at the first poll and on every
            reorg).
    """

    address: str | Sequence[str]
    abi: Sequence[Mapping[str, Any]]
    start_block: int
    events: Sequence[str] | None = None
    confirmations: int = 0
    finality_depth: int = 64
    max_range: int = 2000
    poll_interval_s: float = 2.0
    ws_url: str | None = None
    stream: str | None = None
    chain_id: int | None = None
    start_block_hash: str | None = None
    max_error_backoff_s: float = field(default=30.0, repr=False)

    def __post_init__(self) -> None:
        problems = []
        if self.start_block < 0:
            problems.append(f"start_block must be >= 0 (got {self.start_block})")
        if self.confirmations < 0:
            problems.append(f"confirmations must be >= 0 (got {self.confirmations})")
        if self.finality_depth < 0:
            problems.append(f"finality_depth must be >= 0 (got {self.finality_depth})")
        if self.max_range < 1:
            problems.append(f"max_range must be >= 1 (got {self.max_range})")
        if self.poll_interval_s <= 0:
            problems.append(f"poll_interval_s must be > 0 (got {self.poll_interval_s})")
        if problems:
            raise ConfigError(
                "invalid watcher config: " + "; ".join(problems), hint="fix the [chain] settings"
            )

    @classmethod
    def from_settings(
        cls,
        chain: ChainSettings,
        *,
        address: str | Sequence[str],
        abi: Sequence[Mapping[str, Any]],
        start_block: int,
        chain_id: int | None = None,
        events: Sequence[str] | None = None,
        start_block_hash: str | None = None,
    ) -> WatchConfig:
        """A config from :class:`agent.settings.ChainSettings` plus the deployment record's address, ABI and
        deploy block."""
        return cls(
            address=address,
            abi=abi,
            start_block=start_block,
            events=events,
            confirmations=chain.confirmations,
            finality_depth=chain.finality_depth,
            max_range=chain.max_block_range,
            poll_interval_s=chain.poll_interval_s,
            ws_url=chain.ws_url,
            chain_id=chain_id,
            start_block_hash=start_block_hash,
        )


class Watcher:
    """Watches one contract's logs on one chain; see the module docstring.

    Args:
        rpc: The chain's RPC client (all requests go through it).
        cursors: Where the cursor is kept (``SqlCursorStore(db)``, on the agent's database).
        config: What to watch.
    """

    def __init__(self, rpc: RpcClient, cursors: CursorStore, config: WatchConfig) -> None:
        self.rpc = rpc
        self.cursors = cursors
        self.config = config
        self.span = AdaptiveRange(max_size=config.max_range)
        addresses = [config.address] if isinstance(config.address, str) else list(config.address)
        try:
            checksummed: list[str] = [Web3.to_checksum_address(a) for a in addresses]
        except ValueError as exc:
            raise ConfigError(
                f"invalid contract address in {addresses}: {exc}", hint="use 0x + 40 hex digits"
            ) from None
        self._addresses: str | list[str] = checksummed[0] if len(checksummed) == 1 else checksummed
        self._chain_id: int | None = None
        self._decoder: LogDecoder | None = None
        self._state: CursorState | None = None
        self._genesis: str | None = None  # the chain's genesis hash, read at the first poll
        # _check_chain ran at the first poll (once, even if the node does not serve block 0)
        self._chain_checked = False
        # the last poll found the node's head below the cursor (logged once per episode)
        self._behind = False
        # (block number, block hash, tx hash, log index) of the logs delivered and not final yet: a finalize
        # re-scan delivers what is not in it. It covers the blocks this watcher followed since it started
        # (from _rescan_from): blocks handled before a restart are not re-scanned.
        self._delivered: set[tuple[int, str, str, int]] = set()
        self._rescan_from: int | None = None
        self._loaded = False
        self._wake = threading.Event()
        self._stopped = threading.Event()

    # -- identity -------------------------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            chain_id = self.rpc.chain_id()
            if self.config.chain_id is not None and chain_id != self.config.chain_id:
                raise ConfigError(
                    f"the node at {self.rpc.url} serves chain {chain_id}, the deployment is on chain "
                    f"{self.config.chain_id}",
                    hint="point chain.rpc_url at the deployment's chain, or load the right deployment record",
                )
            self._chain_id = chain_id
        return self._chain_id

    @property
    def stream(self) -> str:
        if self.config.stream:
            return self.config.stream
        address = self.config.address
        addresses = [address] if isinstance(address, str) else list(address)
        return f"{self.chain_id}:{','.join(a.lower() for a in addresses)}"

    @property
    def decoder(self) -> LogDecoder:
        if self._decoder is None:
            self._decoder = LogDecoder(self.config.abi, self.chain_id, events=self.config.events)
        return self._decoder

    @property
    def state(self) -> CursorState | None:
        """The last committed cursor state (``None`` before the first handled block)."""
        self._load()
        return self._state

    def reload(self) -> None:
        """Read the cursor from the store again at the next use (another agent may have moved it)."""
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._state = self.cursors.load(self.stream)
            if self._state is not None and self._state.chain_id != self.chain_id:
                raise ConfigError(
                    f"cursor {self.stream} belongs to chain {self._state.chain_id}, the node serves {self.chain_id}",
                    hint="use a different database or stream name for each chain",
                )
            self._loaded = True

    def _commit(self, state: CursorState | None) -> None:
        if state is None:
            self.cursors.reset(self.stream)
        else:
            self.cursors.save(self.stream, state)
            WATCH_BLOCK.labels(self.stream).set(state.tip.number)
            if state.finalized is not None:
                WATCH_FINALIZED.labels(self.stream).set(state.finalized.number)
        self._state = state

    # -- one pass -------------------------------------------------------------------------------------------

    def poll(self, handler: Handler) -> int:
        """Handle every event up to the current head (minus confirmations); return how many were emitted.

        The cursor is saved after each event's handler returns. If the handler raises, the error propagates
        and that event is delivered again by the next poll (or after a restart).
        """
        count = 0
        for event, state in self._steps():
            handler(event)
            self._commit(state)
            count += 1
        return count

    def _steps(self) -> Iterator[tuple[WatchEvent, CursorState | None]]:
        """Events with the cursor state to save once each is handled. Reads ``self._state``, which the caller
        commits between steps."""
        self._load()
        cfg = self.config
        head = self.rpc.block_number()
        if not self._chain_checked:
            self._check_chain()
        if self._state is not None and head < self._state.tip.number:
            # A head below the cursor is a node that lags (load-balanced providers answer from nodes a few blocks
            # apart), not a reorg: nothing the cursor reported is known to be orphaned. Wait for the node, unless
            # the chain itself was replaced (a restarted dev chain starts again below the cursor).
            if not self._behind:
                self._check_chain()
                log.warning(
                    "the node's head #%d is behind the cursor #%d: it lags (a load-balanced provider?); waiting",
                    head, self._state.tip.number,
                )  # fmt: skip
            self._behind = True
            return
        self._behind = False
        if self._state is not None:
            found = detect_reorg(
                self._state,
                self._canonical_hash(head),
                stream=self.stream,
                finality_depth=cfg.finality_depth,
                start_block=cfg.start_block,
            )
            if found is not None:
                # A reset chain (a restarted dev chain that grew past the cursor) looks like a reorg from here:
                # before rolling anything back, check the chain is still the one followed (genesis, deploy
                # block, code at the address); a reset stops the watcher loudly instead.
                self._check_chain()
                reorg, rolled_back = found
                WATCH_REORGS.labels(self.stream).inc()
                log.warning(
                    "reorg on %s: %d block(s) orphaned (#%d..#%d), common ancestor %s",
                    self.stream, reorg.depth, *reorg.orphaned_range, reorg.common_ancestor,
                )  # fmt: skip
                yield reorg, rolled_back
        target = head - cfg.confirmations
        final_target = head - cfg.finality_depth
        while True:
            state = self._state
            start = state.tip.number + 1 if state is not None else cfg.start_block
            if start > target:
                return
            if start <= final_target:
                yield from self._catch_up(start, min(target, final_target))
            else:
                completed = yield from self._follow(start, target)
                if not completed:
                    return  # the chain moved under us; the next poll reconciles
            state = self._state
            if state is not None:
                done = finalize(state, final_target)
                if done is not None:
                    finalized_state, block = done
                    yield from self._rescan(state, block)
                    yield Finalize(block), finalized_state
                    self._delivered = {d for d in self._delivered if d[0] > block.number}

    def _catch_up(self, start: int, end: int) -> Iterator[tuple[WatchEvent, CursorState | None]]:
        """Finalized history: one range request, blocks with logs, then the range's last block."""
        to, raws = fetch_logs(self.rpc, self._addresses, self.decoder.topics, start, end, self.span)
        by_block = self._group(raws)
        for number in sorted(by_block):
            block_hash, events = by_block[number]
            block = BlockRef(number, block_hash)
            yield self._new_block(block, events)
        if to not in by_block:
            header = self.rpc.get_block(to)
            if header is None:
                raise _lagging(self.rpc.url, to)
            yield self._new_block(header, ())

    def _follow(
        self, start: int, target: int
    ) -> Generator[tuple[WatchEvent, CursorState | None], None, bool]:
        """Unfinalized blocks: logs for the range plus every header, checked to link to the cursor; returns
        whether every block up to ``target`` was followed (False: a reorg is under way, or the node lags)."""
        to, raws = fetch_logs(self.rpc, self._addresses, self.decoder.topics, start, target, self.span)
        headers: list[BlockRef] = []
        for number in range(start, to + 1):
            header = self.rpc.get_block(number)
            if header is None:
                break
            headers.append(header)
        raws += self._recheck_blooms(headers, raws)
        by_block = self._group(raws)
        parent = self._state.tip.hash if self._state is not None else None
        for header in headers:
            if parent is not None and header.parent_hash != parent:
                log.info(
                    "block %s does not link to %s: a reorg is under way; re-checking", header, parent[:10]
                )
                return False
            logged = by_block.get(header.number)
            if logged is not None and logged[0] != header.hash:
                log.info("logs of block #%d came from another branch; re-checking", header.number)
                return False
            parent = header.hash
        if headers and self._rescan_from is None:
            self._rescan_from = headers[0].number
        for header in headers:
            yield self._new_block(header, by_block.get(header.number, ("", ()))[1])
        return len(headers) == to - start + 1

    def _recheck_blooms(
        self, headers: Sequence[BlockRef], raws: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Logs the answer left out: asked for again, block by block, where a header's bloom says the block may
        hold one of ours and the answer had none."""
        answered = {int(r["blockNumber"]) for r in raws}
        addresses = [self._addresses] if isinstance(self._addresses, str) else self._addresses
        topics0 = self.decoder.topics[0]
        found: list[dict[str, Any]] = []
        for header in headers:
            bloom = header.logs_bloom
            if header.number in answered or bloom is None or not may_hold(bloom, addresses, topics0):
                continue
            for _ in range(BLOOM_RECHECKS):
                again = [
                    r
                    for r in self.rpc.get_logs(
                        header.number, header.number, self._addresses, self.decoder.topics
                    )
                    if int(r["blockNumber"]) == header.number
                ]
                if again:
                    WATCH_LOGS_RECOVERED.labels(self.stream, "bloom").inc(len(again))
                    log.warning(
                        "eth_getLogs left out %d log(s) of block %s that its logsBloom announces; found on asking "
                        "again (a lagging or lying provider?)",
                        len(again), header,
                    )  # fmt: skip
                    found += again
                    break
            else:
                log.debug("block %s: its bloom matched, no log of ours (a bloom false positive)", header)
        return found

    def _rescan(self, state: CursorState, final: BlockRef) -> Iterator[tuple[WatchEvent, CursorState | None]]:
        """Blocks about to be finalized, fetched once more: logs not delivered yet are delivered now
        (``NewBlock(recovered=True)``; the cursor stays where it is)."""
        if self._rescan_from is None:
            return
        window = {b.number: b for b in state.window}
        start = max(state.window[0].number, self._rescan_from)
        if state.finalized is not None:
            start = max(start, state.finalized.number + 1)
        while start <= final.number:
            to, raws = fetch_logs(
                self.rpc, self._addresses, self.decoder.topics, start, final.number, self.span
            )
            for number, (block_hash, events) in sorted(self._group(raws).items()):
                block = window.get(number)
                if block is None:
                    continue
                if block_hash != block.hash:
                    raise RetryableError(
                        f"re-scanning block #{number} before finalizing it found logs of block {block_hash[:10]}, "
                        f"not of {block}: the chain is reorganising",
                        hint="transient: the next poll checks the window again",
                    )
                missed = tuple(e for e in events if _delivery(e) not in self._delivered)
                if missed:
                    WATCH_LOGS_RECOVERED.labels(self.stream, "rescan").inc(len(missed))
                    log.warning(
                        "%d log(s) of block %s were missing from the first eth_getLogs answer; delivering them now",
                        len(missed), block,
                    )  # fmt: skip
                    yield NewBlock(block, missed, recovered=True), self._state
                    self._delivered.update(_delivery(e) for e in missed)  # handled (the caller came back)
            start = to + 1

    def _new_block(self, block: BlockRef, events: tuple[Any, ...]) -> tuple[NewBlock, CursorState]:
        WATCH_LOGS.labels(self.stream).inc(len(events))
        self._delivered.update(_delivery(e) for e in events)
        return NewBlock(block, events), advance(self._state, self.chain_id, block)

    def _group(self, raws: list[dict[str, Any]]) -> dict[int, tuple[str, tuple[Any, ...]]]:
        """Decoded events by block number, deduplicated by log key, in log-index order."""
        blocks: dict[int, tuple[str, dict[int, Any]]] = {}
        for raw in raws:
            if raw.get("removed"):
                continue
            event = self.decoder.decode(raw)
            if event is None:
                continue
            block_hash, events = blocks.setdefault(event.block_number, (event.key.block_hash, {}))
            if event.key.block_hash != block_hash:
                raise RetryableError(
                    f"eth_getLogs returned two hashes for block {event.block_number} ({block_hash}, "
                    f"{event.key.block_hash}): the node is reorganising",
                    hint="transient: the next poll retries",
                )
            events.setdefault(event.key.log_index, event)
        return {n: (h, tuple(e[i] for i in sorted(e))) for n, (h, e) in blocks.items()}

    def _check_chain(self) -> None:
        """Stop loudly when the chain is not the one being followed: its genesis block changed while this watcher
        ran, the deploy block has another hash than the deployment recorded, or the watched contract has no code
        (:class:`ChainResetError`)."""
        self._chain_checked = True
        expected = self.config.start_block_hash
        if expected:
            deployed = self.rpc.get_block(self.config.start_block)
            if deployed is not None and deployed.hash.lower() != expected.lower():
                raise ChainResetError(
                    stream=self.stream, url=self.rpc.url,
                    reason=f"its block #{self.config.start_block} (the deploy block) is {deployed.hash[:18]}..., "
                    f"the deployment record says {expected[:18]}...",
                )  # fmt: skip
        genesis = self.rpc.get_block(0)
        if genesis is not None:
            if self._genesis is not None and genesis.hash != self._genesis:
                raise ChainResetError(
                    stream=self.stream, url=self.rpc.url,
                    reason=f"its genesis block is now {genesis.hash[:18]}..., not {self._genesis[:18]}...",
                )  # fmt: skip
            self._genesis = genesis.hash
        if self._state is not None:
            for address in [self._addresses] if isinstance(self._addresses, str) else self._addresses:
                if not self.rpc.get_code(address):
                    raise ChainResetError(
                        stream=self.stream, url=self.rpc.url,
                        reason=f"no contract at {address} (the cursor is at block #{self._state.tip.number})",
                    )  # fmt: skip

    def _canonical_hash(self, head: int) -> Callable[[int], str | None]:
        def canonical(number: int) -> str | None:
            if number < 0 or number > head:
                return None
            block = self.rpc.get_block(number)
            return block.hash if block is not None else None

        return canonical

    # -- loops ----------------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Poll now instead of at the next interval (the WebSocket subscription calls this)."""
        self._wake.set()

    def stop(self) -> None:
        """Make :meth:`run` / :meth:`events` return after the current step."""
        self._stopped.set()
        self._wake.set()

    def events(self) -> Iterator[WatchEvent]:
        """Every event, forever (until :meth:`stop`). The cursor is saved when the next event is requested.

        Retryable errors (RPC down, rate limits) are logged and retried with back-off; permanent ones
        (:class:`DeepReorgError`, a wrong ABI) are raised.
        """
        subscription: WakeUpSubscription | None = None
        failures = 0
        try:
            while not self._stopped.is_set():
                self._wake.clear()
                try:
                    for event, state in self._steps():
                        yield event
                        self._commit(state)
                        if self._stopped.is_set():
                            return
                    failures = 0
                except RetryableError as exc:
                    failures += 1
                    label = self.stream if self._chain_id is not None else str(self.config.address)
                    WATCH_POLL_ERRORS.labels(label).inc()
                    log.warning("poll of %s failed (%s), attempt %d; retrying", label, exc.message, failures)
                if subscription is None and self.config.ws_url and self._chain_id is not None:
                    subscription = self._subscribe()  # after the first contact with the node
                delay = self.config.poll_interval_s
                if failures:
                    delay = min(self.config.max_error_backoff_s, delay * 2 ** min(failures, 10))
                self._wake.wait(delay)
        finally:
            if subscription is not None:
                subscription.stop()

    def run(self, handler: Handler) -> None:
        """Handle every event until :meth:`stop` is called (see :meth:`events`)."""
        for event in self.events():
            handler(event)

    def _subscribe(self) -> WakeUpSubscription:
        assert self.config.ws_url
        logs_filter = {"address": self._addresses, "topics": self.decoder.topics}
        return WakeUpSubscription(self.config.ws_url, self.wake, logs_filter=logs_filter).start()


def _delivery(event: Any) -> tuple[int, str, str, int]:
    key = event.key
    return int(event.block_number), key.block_hash, key.tx_hash, int(key.log_index)


def _lagging(url: str, number: int) -> RetryableError:
    return RetryableError(
        f"RPC {url} returned logs up to block {number} but not the block itself (a lagging node behind a load "
        "balancer?)",
        hint="transient: the next poll retries",
    )
