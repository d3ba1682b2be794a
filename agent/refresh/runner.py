"""Advancing one refresh, a step at a time: plan, evaluate, generate, publish, send, confirm.

A refresh is a ``refresh`` job. The worker claims it only when no evolution job is claimable, and each
:meth:`RefreshRunner.step` does a bounded amount of work (``refresh.chunk_size`` tokens per phase) and gives the
job back, so a holder's request never waits behind a 10,000-token refresh. Everything a step does is recorded in
the refresh tables before the next step, so a restart, a crash or a budget pause resumes where it stopped.

One step::

    plan (first step only)   the ONE block B (head - chain.confirmations); block-level oracles read and screened
                             once; one pending item per token; older refreshes' unsent items of the same tokens
                             superseded; the price triggers' baseline moved to the answer at B
    confirm                  wait for refreshMetadata transactions in flight; settle them by chain truth
    evaluate                 a chunk of pending tokens at B (see agent.refresh.inputs); until every token is read,
                             a step does nothing else (a node keeps the state of recent blocks only)
    generate, publish        a chunk of changed tokens, within the max_tokens allowance, through the evolution
                             pipeline's own generate and publish stages (previous image -> img2img, parent CID)
    send                     when send_batch tokens are published (or nothing else is left): the pre-send race
                             check, the fee and gas-per-day budgets, refreshMetadata batches sized to the gas cap
                             (RefreshBatcher), each recorded before it is waited for

The order with a holder's request (a refresh never races an evolution):

* A token with a request pending at B is deferred when it is evaluated; right before a batch is sent, every
  token is checked again at the head: a pending request, or a digest that is no longer the one read at B (the
  token evolved meanwhile), defers it. The evolution goes first; the next refresh picks the token up (from
  the evolved metadata).
* Refreshes and fulfilments are sent from the agent's one key, in nonce order. A request opened in the moment
  between the pre-send check and the refresh being mined is fulfilled by a later transaction, so it lands
  after the refresh and the evolution is what the token ends with (its parent is the metadata at its request's
  block: the refreshed version is then a side branch of the history, never a regression).

Budgets (a paused refresh keeps its items; the job is queued again for when the pause ends):

* ``refresh.max_tokens``: tokens regenerated per go; then it pauses ``refresh.pause_s`` and gets as many again.
* ``refresh.max_gas_per_day``: refreshMetadata gas per UTC day (used gas, plus the limit of transactions in
  flight); a batch that does not fit is cut to what does, then the refresh pauses until 00:00 UTC.
* ``refresh.max_fee_per_gas_gwei``: the refresh's own fee cap (its sender quotes under it); when the network
  needs more, nothing is sent and the refresh pauses ``refresh.pause_s``.

Every token is read at B first, before anything is generated or sent, and reading goes on while a refresh is
paused: a full node keeps the state of recent blocks only (about 128), so reading must not wait for a budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.domain import (
    Artwork,
    Confirmation,
    CuratorRejection,
    Inputs,
    RenderTask,
    Submission,
    canonical_json,
)
from agent.errors import ChrysalisError, PermanentError, RetryableError
from agent.jobs import Job, JobKind, JobStore
from agent.metrics import REFRESH_GAS, REFRESH_PAUSED, REFRESH_RUNS, REFRESH_TOKENS
from agent.pipeline.generate import GenerateStage, gate_failure
from agent.pipeline.ports import Review, StepOutcome
from agent.pipeline.publish import PublishStage
from agent.refresh.inputs import Block, RefreshInputs, read_token_states
from agent.refresh.models import REGENERATED_STATES, ItemState
from agent.refresh.store import RefreshItem, RefreshRun, RefreshStore, RefreshTx
from agent.settings import RefreshSettings
from agent.submit.batcher import Batch, Refresh, RefreshBatcher, RefreshBlockedError
from agent.submit.errors import FeeCapExceededError, StuckTransactionError, TransactionRevertedError
from agent.submit.sender import Web3TxSender
from agent.tokens import format_tokens, parse_tokens

log = logging.getLogger("chrysalis.refresh")

ZERO32 = "0x" + "00" * 32
PROVENANCE_SCHEMA = "chrysalis.refresh-batch/1"


@dataclass
class _Pause:
    budget: str
    until: datetime
    detail: str


@dataclass
class _Step:
    gas_used: int = 0
    pause: _Pause | None = None
    awaiting_review: int = 0


def batch_provenance(block_hash: str, items: Sequence[tuple[int, str, str]]) -> bytes:
    """The ``provenance`` of one ``refreshMetadata`` transaction: sha256 of the canonical JSON
    ``{"schema", "block_hash", "items": [[token id, metadata digest, receipt sha256], ...]}`` in the order the
    transaction lists the tokens. Anyone can recompute it from the calldata (ids, digests) and each token's
    metadata (its receipt; its inputs name the block)."""
    doc = {"schema": PROVENANCE_SCHEMA, "block_hash": block_hash, "items": [list(i) for i in items]}
    return hashlib.sha256(canonical_json(doc)).digest()


def next_utc_midnight(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def payload_tokens(payload: Mapping[str, Any]) -> list[int] | None:
    """The tokens a refresh job asks for (None: all). Reads the CLI's / triggers' ``tokens`` and the studio's
    ``token_id``."""
    if payload.get("token_id") is not None and payload.get("tokens") is None:
        return parse_tokens([int(payload["token_id"])])
    return parse_tokens(payload.get("tokens"))


def payload_trigger(payload: Mapping[str, Any]) -> str:
    trigger = payload.get("trigger")
    if trigger:
        return str(trigger)
    return "studio" if payload.get("source") == "studio" else "manual"


class RefreshRunner:
    """Advances refresh jobs; see the module docstring.

    Args:
        jobs: The job store (re-planning after a reorg queues a fresh refresh job).
        store: The refresh tables.
        inputs: Reads and evaluates tokens at the refresh's block.
        generate, publish: The evolution pipeline's stages (the same models, receipts, metadata and pins).
        batcher: Plans ``refreshMetadata`` batches under ``submit.refresh_max_gas``.
        sender: The refresh's sender: the agent's key and nonces, its fee cap ``refresh.max_fee_per_gas_gwei``.
        settings: The ``[refresh]`` section.
        confirmations: Blocks under the head a refresh reads (``chain.confirmations``).
        price_feeds: Feeds whose price-trigger baseline a new refresh moves to its block's answer.
        wait_chunk_s: Longest single wait for a transaction before the stop flag is checked again.
        clock: UTC now (the job store's clock).
        review: The review gate (:class:`~agent.review.ReviewGate`) in review mode (``studio.review``): each
            regenerated token waits as a review item (key ``refresh:<job>:<token>``) and is published and written
            only once a curator approves it (with ``approved_by`` in its metadata); a rejection skips the token.
        review_poll_s: How often a refresh waiting for curators looks again.
    """

    def __init__(
        self,
        *,
        jobs: JobStore,
        store: RefreshStore,
        inputs: RefreshInputs,
        generate: GenerateStage,
        publish: PublishStage,
        batcher: RefreshBatcher,
        sender: Web3TxSender,
        settings: RefreshSettings,
        confirmations: int = 0,
        price_feeds: Sequence[str] = (),
        wait_chunk_s: float = 2.0,
        receipt_timeout_s: float = 1800.0,
        clock: Callable[[], datetime] | None = None,
        review: Review | None = None,
        review_poll_s: float = 5.0,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.inputs = inputs
        self.generate = generate
        self.publish = publish
        self.batcher = batcher
        self.sender = sender
        self.settings = settings
        self.confirmations = confirmations
        self.price_feeds = [f.lower() for f in price_feeds]
        self.wait_chunk_s = wait_chunk_s
        self.receipt_timeout_s = receipt_timeout_s
        self.clock = clock or store.clock
        self.review = review
        self.review_poll_s = review_poll_s

    # -- the step ---------------------------------------------------------------------------------------------

    def step(self, job: Job, stop: threading.Event | None = None) -> StepOutcome:
        """Advance ``job`` by one bounded step; see the module docstring.

        Raises:
            RetryableError: the node, the database or an IPFS backend failed; the step is retried with back-off
                and resumes from what was recorded.
        """
        stop = stop or threading.Event()
        if job.kind != JobKind.REFRESH:
            raise PermanentError(
                f"job {job.id} is a {job.kind.value} job, not a refresh", hint="a bug: report it"
            )
        run = self.store.run(job.id) or self.plan(job)
        now = self.clock()
        if run.paused_until is not None and now >= run.paused_until:
            add = self.settings.max_tokens if run.pause_reason == "max_tokens" else 0
            self.store.resume(job.id, add_allowance=add)
            log.info("refresh job %s resumes after its %s pause", job.id, run.pause_reason)
            run = self.store.run(job.id) or run
        paused = run.paused_until is not None
        step = _Step()

        if not self._canonical(run):  # B was orphaned: nothing more is read or sent for this run
            self._orphaned(job, run)
            self.confirm(run, stop, step)  # transactions already in flight still settle
            return self._outcome(job, run, step)
        self.confirm(run, stop, step)
        if stop.is_set():
            return StepOutcome("continue", gas_used=step.gas_used)
        self.evaluate(run)
        if self.store.counts(job.id)[ItemState.PENDING]:
            return StepOutcome("continue", gas_used=step.gas_used)  # read every token at B before spending
        if not paused and not stop.is_set():
            self.generate_chunk(run)
            step.awaiting_review = self.publish_chunk(run)[1]
            counts = self.store.counts(job.id)
            if counts[ItemState.PUBLISHED] and (
                counts[ItemState.PUBLISHED] >= self.settings.send_batch
                or not self._more_to_publish(run, counts)
                or step.awaiting_review  # curators decide at their pace: write what they approved so far
            ):
                self.send(run, stop, step)
                self.confirm(run, stop, step)
        return self._outcome(job, run, step)

    def _outcome(self, job: Job, run: RefreshRun, step: _Step) -> StepOutcome:
        counts = self.store.counts(job.id)
        open_ = {s: n for s, n in counts.items() if n and not s.terminal}
        if not open_:
            return StepOutcome("finish", result=self.summary(job.id), gas_used=step.gas_used)
        if counts[ItemState.PENDING]:
            return StepOutcome("continue", gas_used=step.gas_used)  # evaluate everything at B first
        run = self.store.run(job.id) or run
        if step.pause is None and run.paused_until is None and not self._workable(run, counts):
            step.pause = _Pause(
                "max_tokens",
                self.clock() + timedelta(seconds=self.settings.pause_s),
                f"regenerated its allowance of {run.allowance} token(s) (refresh.max_tokens = "
                f"{self.settings.max_tokens}); {counts[ItemState.CHANGED]} changed token(s) wait",
            )
        if step.pause is not None and run.paused_until is None:
            self.store.pause(job.id, step.pause.until, step.pause.budget, step.pause.detail)
            REFRESH_PAUSED.labels(budget=step.pause.budget).inc()
            log.warning(
                "refresh job %s paused until %s by its %s budget: %s; its remaining work is recorded (%s)",
                job.id, step.pause.until.isoformat(timespec="seconds"), step.pause.budget, step.pause.detail,
                ", ".join(f"{n} {s.value}" for s, n in open_.items()),
            )  # fmt: skip
            run = self.store.run(job.id) or run
        if step.awaiting_review and not self._workable(run, counts, ignore_generated=True):
            return StepOutcome("continue", delay_s=self.review_poll_s, gas_used=step.gas_used)
        if run.paused_until is not None:
            if counts[ItemState.SUBMITTED]:
                return StepOutcome("continue", delay_s=1.0, gas_used=step.gas_used)  # still waiting for those
            delay = max(0.0, (run.paused_until - self.clock()).total_seconds())
            return StepOutcome("pause", delay_s=delay, reason=run.pause_detail, gas_used=step.gas_used)
        return StepOutcome("continue", gas_used=step.gas_used)

    def _room(self, run: RefreshRun, counts: Mapping[ItemState, int]) -> int:
        return run.allowance - sum(counts[s] for s in REGENERATED_STATES)

    def _more_to_publish(self, run: RefreshRun, counts: Mapping[ItemState, int]) -> bool:
        return bool(
            counts[ItemState.PENDING]
            or counts[ItemState.GENERATED]
            or (counts[ItemState.CHANGED] and self._room(run, counts) > 0)
        )

    def _workable(
        self, run: RefreshRun, counts: Mapping[ItemState, int], *, ignore_generated: bool = False
    ) -> bool:
        return bool(
            (counts[ItemState.GENERATED] and not ignore_generated)
            or counts[ItemState.PUBLISHED]
            or counts[ItemState.SUBMITTED]
            or (counts[ItemState.CHANGED] and self._room(run, counts) > 0)
        )

    # -- plan -------------------------------------------------------------------------------------------------

    def plan(self, job: Job) -> RefreshRun:
        """Fix the refresh's block, read the block-level oracles, record one pending item per token."""
        payload = dict(job.payload)
        trigger = payload_trigger(payload)
        tokens = payload_tokens(payload)
        block = self.inputs.block(self.confirmations)
        shared = self.inputs.read_shared(block)
        ids = tokens if tokens is not None else self.inputs.all_tokens(block)
        run, superseded = self.store.create_run(
            job.id,
            trigger=trigger,
            policy=payload.get("policy"),
            block_number=block.number,
            block_hash=block.hash,
            block_timestamp=block.timestamp,
            feed_answer=self.inputs.feed_answer(shared, None),
            force=bool(payload.get("force")),
            allowance=self.settings.max_tokens,
            shared=shared,
            token_ids=ids,
        )
        for feed in self.price_feeds:
            answer = self.inputs.feed_answer(shared, feed)
            if answer is not None:
                self.store.set_baseline(feed, answer, block.number)
        REFRESH_RUNS.labels(trigger=trigger).inc()
        policy = f" {payload['policy']!r}" if payload.get("policy") else ""
        log.info(
            "refresh job %s (%s%s): %d token(s) [%s] read at block #%d %s%s",
            job.id, trigger, policy, len(ids), format_tokens(ids) if len(ids) <= 50 else f"{ids[0]}..{ids[-1]}",
            block.number, block.hash[:18], f"; superseded {superseded} unsent item(s) of older refreshes"
            if superseded else "",
        )  # fmt: skip
        for skip in shared.get("skipped", []):
            log.warning(
                "refresh job %s: oracle %r skipped at block #%d (%s: %s); tokens whose rules read %s keep their "
                "metadata in this refresh",
                job.id, skip["oracle"], block.number, skip["reason"], skip["detail"], ", ".join(skip["readings"]),
            )  # fmt: skip
        return run

    def _canonical(self, run: RefreshRun) -> bool:
        header = self.sender.rpc.block(run.block_number)
        return header is not None and header.hash.lower() == run.block_hash.lower()

    def _orphaned(self, job: Job, run: RefreshRun) -> None:
        """B was orphaned by a reorg: unsent items are superseded by a fresh refresh of the same tokens."""
        unsent = [ItemState.PENDING, ItemState.CHANGED, ItemState.GENERATED, ItemState.PUBLISHED]
        left = self.store.items(job.id, unsent)
        reason = f"block #{run.block_number} {run.block_hash[:18]} was orphaned by a reorg; re-planned"
        self.store.move(
            job.id, [(i.token_id, unsent, {"state": ItemState.SUPERSEDED, "reason": reason}) for i in left]
        )
        if left:
            payload = {
                **dict(job.payload),
                "tokens": format_tokens(i.token_id for i in left),
                "replan_of": job.id,
            }
            new, _ = self.jobs.enqueue(
                JobKind.REFRESH, f"{job.key}@replan:{run.block_hash[:18]}", payload=payload
            )
            log.warning("refresh job %s: %s as job %s (%d token(s))", job.id, reason, new.id, len(left))

    # -- evaluate ---------------------------------------------------------------------------------------------

    def evaluate(self, run: RefreshRun) -> int:
        """Evaluate one chunk of pending tokens at the refresh's block."""
        pending = self.store.items(run.job_id, [ItemState.PENDING], limit=self.settings.chunk_size)
        if not pending:
            return 0
        block = Block(run.block_number, run.block_hash, run.block_timestamp)
        started = time.monotonic()
        verdicts = self.inputs.evaluate(block, run.shared, [i.token_id for i in pending], force=run.force)
        self.store.move(run.job_id, [(v.token_id, [ItemState.PENDING], v.values()) for v in verdicts])
        tally: dict[str, int] = {}
        for v in verdicts:
            tally[v.state.value] = tally.get(v.state.value, 0) + 1
            if v.state.terminal:
                REFRESH_TOKENS.labels(outcome=v.state.value).inc()
            if v.state in (ItemState.FAILED, ItemState.DEFERRED):
                log.warning(
                    "refresh job %s: token %s %s: %s", run.job_id, v.token_id, v.state.value, v.reason
                )
        log.debug("refresh job %s: evaluated %d token(s) in %.2f s: %s", run.job_id, len(verdicts),
                  time.monotonic() - started, tally)  # fmt: skip
        return len(verdicts)

    # -- generate and publish ---------------------------------------------------------------------------------

    def _task(self, run: RefreshRun, item: RefreshItem) -> RenderTask:
        """What the pipeline's stages render for a refreshed token: the token at the refresh block, in its
        current stage, with the block's hash as the on-chain seed (so anyone can re-derive the seed)."""
        return RenderTask(
            token_id=item.token_id,
            stage=int(item.stage or 0),
            seed=run.block_hash,
            block_number=run.block_number,
            block_hash=run.block_hash,
            label=f"token {item.token_id} (refresh job {run.job_id})",
        )

    def generate_chunk(self, run: RefreshRun) -> int:
        """Generate a chunk of changed tokens within the ``max_tokens`` allowance."""
        room = self._room(run, self.store.counts(run.job_id))
        if room <= 0:
            return 0
        todo = self.store.items(run.job_id, [ItemState.CHANGED], limit=min(room, self.settings.chunk_size))
        if not todo:
            return 0
        batch = [(self._task(run, i), Inputs.from_json(i.inputs or {})) for i in todo]
        try:
            outputs = self.generate.run(batch)
        except PermanentError as exc:
            self._fail_items(run, todo, [ItemState.CHANGED], exc)
            return 0
        kept = []
        for i, out in zip(todo, outputs, strict=True):
            failed = gate_failure(out, f"token {i.token_id}") if self.review is None else None
            if failed is not None:  # failed the quality gates on every try, and no curator reviews it
                self._fail_items(run, [i], [ItemState.CHANGED], failed)
            else:
                kept.append((i, out))
        self.store.move(
            run.job_id,
            [
                (i.token_id, [ItemState.CHANGED], {"state": ItemState.GENERATED, "generated": out.to_json()})
                for i, out in kept
            ],
        )
        return len(todo)

    def publish_chunk(self, run: RefreshRun) -> tuple[int, int]:
        """Pin (and replicate) a chunk of generated tokens' image and metadata; in review mode only approved
        ones. Returns how many were published and how many wait for a curator."""
        todo = self.store.items(run.job_id, [ItemState.GENERATED], limit=self.settings.chunk_size)
        retry: ChrysalisError | None = None
        done = waiting = 0
        for item in todo:
            artwork, approved_by = Artwork.from_json(item.generated or {}), None
            if self.review is not None:
                verdict = self._review(run, item)
                if verdict is None:
                    waiting += 1
                    continue
                if isinstance(verdict, str):
                    self.store.move(run.job_id, [(item.token_id, [ItemState.GENERATED], {
                        "state": ItemState.SKIPPED, "reason": verdict})])  # fmt: skip
                    REFRESH_TOKENS.labels(outcome="skipped").inc()
                    continue
                artwork, approved_by = verdict
            try:
                record = self.publish.run(
                    self._task(run, item),
                    Inputs.from_json(item.inputs or {}),
                    artwork,
                    approved_by=approved_by,
                )
            except PermanentError as exc:
                self._fail_items(run, [item], [ItemState.GENERATED], exc)
                continue
            except RetryableError as exc:  # a backend is down: the rest wait for the retry
                retry = exc
                break
            self.store.move(
                run.job_id,
                [(item.token_id, [ItemState.GENERATED], {
                    "state": ItemState.PUBLISHED, "published": record.to_json(), "digest": record.digest})],
            )  # fmt: skip
            done += 1
        if retry is not None and not done:
            raise retry
        return done, waiting

    def _review(self, run: RefreshRun, item: RefreshItem) -> tuple[Artwork, str] | str | None:
        """Review mode: ``(artwork, approved_by)`` once approved, the reason once rejected, None meanwhile."""
        assert self.review is not None
        inputs = Inputs.from_json(item.inputs or {})
        decision = self.review.review(
            f"refresh:{run.job_id}:{item.token_id}", token_id=item.token_id, stage=int(item.stage or 0),
            artwork=Artwork.from_json(item.generated or {}), traits=inputs.rules.traits, name=inputs.token.name,
            kind="refresh",
        )  # fmt: skip
        if isinstance(decision, CuratorRejection):
            return decision.reason
        if decision is None:
            return None
        return decision.artwork, decision.approved_by

    def _fail_items(
        self,
        run: RefreshRun,
        items: Sequence[RefreshItem],
        expected: Sequence[ItemState],
        exc: ChrysalisError,
    ) -> None:
        reason = f"{type(exc).__name__}: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
        self.store.move(
            run.job_id, [(i.token_id, expected, {"state": ItemState.FAILED, "reason": reason}) for i in items]
        )
        REFRESH_TOKENS.labels(outcome="failed").inc(len(items))
        log.warning("refresh job %s: %d token(s) failed: %s", run.job_id, len(items), reason)

    # -- send -------------------------------------------------------------------------------------------------

    def send(self, run: RefreshRun, stop: threading.Event, step: _Step) -> int:
        """Check, budget, plan and send the published tokens; returns how many were sent."""
        ready = self._precheck(run, self.store.items(run.job_id, [ItemState.PUBLISHED]))
        if not ready:
            return 0
        try:
            self.sender.fees.quote()
        except FeeCapExceededError as exc:
            step.pause = self._fee_pause(exc)
            return 0
        try:
            self.batcher.check_writable()
        except RefreshBlockedError as exc:
            if exc.kind != "paused":
                raise  # a missing role: the job fails (retried with back-off) with the error's hint
            step.pause = _Pause(
                "paused", self.clock() + timedelta(seconds=self.settings.pause_s), exc.message
            )
            return 0
        by_token = {i.token_id: i for i in ready}
        plan = self.batcher.plan([Refresh(i.token_id, bytes.fromhex(str(i.digest)[2:])) for i in ready])
        for dropped in plan.dropped:
            state = (
                ItemState.SKIPPED
                if "does not exist" in dropped.reason or "UnknownToken" in dropped.reason
                else ItemState.FAILED
            )
            self.store.move(run.job_id, [(dropped.key, [ItemState.PUBLISHED], {
                "state": state, "reason": f"not written: {dropped.reason}"})])  # fmt: skip
            REFRESH_TOKENS.labels(outcome=state.value).inc()
            log.warning("refresh job %s: token %s not written: %s", run.job_id, dropped.key, dropped.reason)
        sent = 0
        for planned in plan.batches:
            if stop.is_set():
                break
            batch, pause = self._fit_gas_budget(planned)
            if batch is not None:
                batch = self._with_provenance(run, batch, by_token)
                try:
                    submission = self.sender.send(batch.request(), dry_run=False)
                except FeeCapExceededError as exc:
                    step.pause = self._fee_pause(exc)
                    break
                except ChrysalisError as exc:
                    lost = getattr(exc, "submission", None)
                    if not isinstance(lost, Submission):
                        raise
                    log.warning("broadcast of %s may have failed (%s); waiting for it", lost.tx_hash, exc)
                    submission = lost
                ids = [r.token_id for r in batch.items]
                self.store.record_sent(
                    run.job_id, submission, ids, "0x" + self._provenance(run, batch, by_token).hex()
                )
                sent += len(ids)
                log.info(
                    "refresh job %s: refreshMetadata of %d token(s) sent as %s (gas limit %d, nonce %d)",
                    run.job_id, len(ids), submission.tx_hash, submission.gas, submission.nonce,
                )  # fmt: skip
            if pause is not None:
                step.pause = pause
                break
        return sent

    def _precheck(self, run: RefreshRun, items: Sequence[RefreshItem]) -> list[RefreshItem]:
        """Defer tokens that a holder's request or an evolution got to since B; return the rest."""
        if not items:
            return []
        head = self.sender.rpc.block("latest")
        assert head is not None
        latest = Block(head.number, head.hash, head.timestamp)
        states = read_token_states(
            self.sender.rpc, self.inputs.collection, [i.token_id for i in items], latest
        )
        ready = []
        changes = []
        for item, now in zip(items, states, strict=True):
            reason = None
            state = ItemState.DEFERRED
            if now.owner is None:
                state, reason = (
                    ItemState.SKIPPED,
                    f"token {item.token_id} was burnt after block #{run.block_number}",
                )
            elif now.pending_request:
                reason = (
                    f"request {now.pending_request:#x} for token {item.token_id} was opened after block "
                    f"#{run.block_number}: the holder's evolution goes first; the next refresh picks the token up"
                )
            elif now.digest.lower() != str(item.parent_digest or ZERO32).lower():
                reason = (
                    f"token {item.token_id}'s metadata changed after block #{run.block_number} (it evolved to "
                    f"stage {now.stage}); the next refresh starts from it"
                )
            if reason is None:
                ready.append(item)
            else:
                changes.append((item.token_id, [ItemState.PUBLISHED], {"state": state, "reason": reason}))
                REFRESH_TOKENS.labels(outcome=state.value).inc()
                log.info("refresh job %s: token %s %s: %s", run.job_id, item.token_id, state.value, reason)
        self.store.move(run.job_id, changes)
        return ready

    def _fee_pause(self, exc: FeeCapExceededError) -> _Pause:
        return _Pause(
            "fee",
            self.clock() + timedelta(seconds=self.settings.pause_s),
            f"the network needs {exc.required_wei / 1e9:.3f} gwei per gas, above refresh.max_fee_per_gas_gwei "
            f"({exc.cap_wei / 1e9:.3f} gwei)",
        )

    def _fit_gas_budget(self, batch: Batch[Refresh]) -> tuple[Batch[Refresh] | None, _Pause | None]:
        """``batch`` if it fits today's gas budget; else the part that does (or None), and the pause."""
        cap = self.settings.max_gas_per_day
        if cap is None:
            return batch, None
        now = self.clock()
        start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        spent = self.store.gas_between(start, start + timedelta(days=1))
        left = cap - spent
        if batch.gas <= left:
            return batch, None
        pause = _Pause(
            "gas_per_day",
            next_utc_midnight(now),
            f"{spent:,} of refresh.max_gas_per_day = {cap:,} gas spent today (UTC); the next batch needs "
            f"{batch.gas:,}",
        )
        per_token = batch.gas / len(batch.items)
        k = math.floor(left * 0.9 / per_token)
        while k >= 1:
            sub = self.batcher.plan(list(batch.items[:k])).batches
            if len(sub) == 1 and sub[0].gas <= left:
                return sub[0], pause
            k = k // 2 if len(sub) != 1 else math.floor(k * left / sub[0].gas * 0.95)
        return None, pause

    def _provenance(
        self, run: RefreshRun, batch: Batch[Refresh], by_token: Mapping[int, RefreshItem]
    ) -> bytes:
        entries = []
        for r in batch.items:
            item = by_token[r.token_id]
            receipt = (item.generated or {}).get("receipt_sha256") or ""
            entries.append((r.token_id, "0x" + r.digest.hex(), str(receipt)))
        return batch_provenance(run.block_hash, entries)

    def _with_provenance(
        self, run: RefreshRun, batch: Batch[Refresh], by_token: Mapping[int, RefreshItem]
    ) -> Batch[Refresh]:
        data = self.batcher.encoder(self._provenance(run, batch, by_token))(batch.items)
        return dataclasses.replace(batch, data=data)

    # -- confirm ----------------------------------------------------------------------------------------------

    def confirm(self, run: RefreshRun, stop: threading.Event, step: _Step) -> None:
        """Wait for the run's transactions in flight and settle their tokens."""
        sent = self.store.sent(run.job_id)
        if not sent:
            return
        current = {tx.tx_hash: tx.submission for tx in sent}
        originals = {tx.submission.nonce: tx.tx_hash for tx in sent}

        def replaced(new: Submission) -> None:
            original = originals.get(new.nonce)
            if original is not None:
                current[original] = new
                self.store.replace_submission(original, new)

        if stop.is_set():
            return
        # One chunk per step: a transaction still in flight is waited for again in the next step, after any
        # evolution that came in meanwhile (its submission, replacements included, is recorded).
        outcomes = self.sender.wait_all(
            list(current.values()), timeout_s=self.wait_chunk_s, on_replace=replaced
        )
        now = self.clock()
        for tx, outcome in zip(sent, outcomes, strict=True):
            waited = (now - tx.sent_at).total_seconds()
            if isinstance(outcome, StuckTransactionError) and waited < self.receipt_timeout_s:
                continue
            step.gas_used += self._settle_tx(run, tx, outcome)

    def _settle_tx(self, run: RefreshRun, tx: RefreshTx, outcome: Confirmation | ChrysalisError) -> int:
        items = [i for i in self.store.items(run.job_id, [ItemState.SUBMITTED]) if i.tx_hash == tx.tx_hash]
        if isinstance(outcome, Confirmation) and outcome.status == 1:
            self.store.finish_tx(
                tx.tx_hash, "confirmed", gas_used=outcome.gas_used, fee_wei=outcome.fee_wei,
                block_number=outcome.block_number, final_hash=outcome.tx_hash,
            )  # fmt: skip
            self.store.move(
                run.job_id,
                [
                    (i.token_id, [ItemState.SUBMITTED], {"state": ItemState.CONFIRMED, "reason": None})
                    for i in items
                ],
            )
            REFRESH_TOKENS.labels(outcome="confirmed").inc(len(items))
            REFRESH_GAS.inc(outcome.gas_used)
            log.info(
                "refresh job %s: %s confirmed in block #%d: %d token(s), %d gas (%d per token)",
                run.job_id, outcome.tx_hash, outcome.block_number, len(items), outcome.gas_used,
                outcome.gas_used // max(1, len(items)),
            )  # fmt: skip
            return outcome.gas_used
        gas = 0
        if isinstance(outcome, TransactionRevertedError):
            gas = outcome.gas_used
            REFRESH_GAS.inc(gas)
            self.store.finish_tx(tx.tx_hash, "reverted", gas_used=gas, block_number=outcome.block_number)
        else:
            self.store.finish_tx(tx.tx_hash, "dropped")
        log.warning("refresh job %s: %s did not confirm (%s); settling its %d token(s) from the chain",
                    run.job_id, tx.tx_hash, outcome, len(items))  # fmt: skip
        self._settle_items(run, items)
        return gas

    def _settle_items(self, run: RefreshRun, items: Sequence[RefreshItem]) -> None:
        """Chain truth for tokens whose transaction failed: written -> confirmed, untouched -> published again
        (re-checked and re-sent), anything else (evolved meanwhile) -> deferred."""
        if not items:
            return
        head = self.sender.rpc.block("latest")
        assert head is not None
        states = read_token_states(
            self.sender.rpc,
            self.inputs.collection,
            [i.token_id for i in items],
            Block(head.number, head.hash, head.timestamp),
        )
        changes: list[tuple[int, list[ItemState], dict[str, Any]]] = []
        for item, now in zip(items, states, strict=True):
            if now.digest.lower() == str(item.digest).lower():
                changes.append(
                    (
                        item.token_id,
                        [ItemState.SUBMITTED],
                        {"state": ItemState.CONFIRMED, "reason": "found on-chain"},
                    )
                )
            elif now.digest.lower() == str(item.parent_digest or ZERO32).lower():
                changes.append(
                    (item.token_id, [ItemState.SUBMITTED], {"state": ItemState.PUBLISHED, "tx_hash": None})
                )
            else:
                reason = "its metadata changed while the refresh was in flight"
                changes.append(
                    (item.token_id, [ItemState.SUBMITTED], {"state": ItemState.DEFERRED, "reason": reason})
                )
        self.store.move(run.job_id, changes)

    # -- reporting --------------------------------------------------------------------------------------------

    def summary(self, job_id: int) -> dict[str, Any]:
        """Counts per outcome, transactions and gas: the job's result."""
        run = self.store.run(job_id)
        counts = {s.value: n for s, n in self.store.counts(job_id).items() if n}
        txs = self.store.txs(job_id)
        gas = sum(t.gas_used or 0 for t in txs)
        confirmed = counts.get("confirmed", 0)
        result: dict[str, Any] = {
            "block_number": run.block_number if run else None,
            "block_hash": run.block_hash if run else None,
            "tokens": sum(counts.values()),
            "counts": counts,
            "transactions": [t.tx_hash for t in txs if t.state == "confirmed"],
            "gas_used": gas,
            "gas_per_token": gas // confirmed if confirmed else None,
        }
        log.info(
            "refresh job %s finished: %s; %d transaction(s), %d gas", job_id,
            ", ".join(f"{n} {s}" for s, n in counts.items()) or "no tokens", len(result["transactions"]), gas,
        )  # fmt: skip
        return result
