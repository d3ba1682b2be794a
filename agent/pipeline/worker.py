"""The worker: claims jobs and advances them stage by stage, recording each stage before the next.

One :meth:`Worker.work_once` claims up to ``agent.batch_size`` jobs (after reaping expired leases) and takes
them as far as they go: inputs (per job) -> generated (one model batch) -> published (per job) ->
submitted (one planned set of fulfilment transactions) -> confirmed. Leases are kept alive by a heartbeat
thread while the batch is in hand. A stage that raises ends that job's attempt through
:meth:`JobStore.report_error` (retry with back-off, or failed with the error); other jobs go on.

Waiting is not failing: a fulfilment stalled in the pool never uses up an attempt (the job is given back
with a ``waiting`` note and waited for again, replaced within ``submit.max_replacements`` and the fee cap).
Every broadcast is recorded before it is sent (the sender's journal); a job about to send first looks for
an unsettled recorded broadcast of its request (a crash between broadcast and record) and waits for it
instead of sending again, so a restart never relies on the node's ``pending`` state.

A confirmation from a receipt is not final until the watcher has passed its block and the block is still
canonical: until then the job is ``confirmed`` with a ``settle_block``, and every :meth:`Worker.work_once`
re-checks such jobs; one whose block was orphaned is re-opened as a reorg notice would (a replay job re-sends
its published metadata while the request is pending again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Self

from agent.domain import Artwork, Confirmation, CuratorRejection, Inputs, Published, Submission
from agent.errors import ChrysalisError, PermanentError, RetryableError
from agent.jobs import Job, JobKind, JobState, JobStore, LeaseLostError, Stage
from agent.jobs.store import ORPHANED_REASON
from agent.metadata import cid_from_digest
from agent.metrics import EVENT_TO_FULFILMENT, JOB_OUTCOMES, STAGE_LATENCY
from agent.pipeline import hooks
from agent.pipeline.generate import GenerateStage, gate_failure
from agent.pipeline.inputs import InputsStage
from agent.pipeline.ports import Review, SideWork
from agent.pipeline.publish import PublishStage
from agent.pipeline.request import EvolutionRequest
from agent.pipeline.submit import Ready, RequestReminedError, Settler, Submitter, confirmation_result
from agent.submit.batcher import Fulfilment
from agent.submit.errors import StuckTransactionError
from agent.submit.journal import BroadcastJournal

log = logging.getLogger("chrysalis.pipeline")

_REPLAYED = (Stage.INPUTS, Stage.GENERATED, Stage.PUBLISHED)


@dataclass
class _Held:
    """Jobs in this worker's hands, kept alive by the heartbeat."""

    ids: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, job_id: int) -> None:
        with self.lock:
            self.ids.add(job_id)

    def drop(self, job_id: int) -> None:
        with self.lock:
            self.ids.discard(job_id)

    def snapshot(self) -> list[int]:
        with self.lock:
            return sorted(self.ids)


class _Heartbeat:
    """Extends the leases of held jobs every ``lease_s / 3`` seconds while a batch is worked on."""

    def __init__(self, store: JobStore, worker_id: str, held: _Held, lease_s: float) -> None:
        self.store, self.worker_id, self.held, self.lease_s = store, worker_id, held, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chrysalis-heartbeat", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            for job_id in self.held.snapshot():
                try:
                    self.store.heartbeat(job_id, self.worker_id, lease_s=self.lease_s)
                except LeaseLostError:
                    self.held.drop(job_id)
                except ChrysalisError as exc:  # the database blinked: the next beat retries
                    log.warning("heartbeat of job %s failed: %s", job_id, exc)


class Worker:
    """Advances evolution jobs; see the module docstring.

    Args:
        store: The job store. worker_id: This worker's name in it.
        inputs, generate, publish: The stages. submitter, settler: Sending, waiting, settling by chain truth.
        lease_s: Lease of a claimed job. batch_size: Most jobs per :meth:`work_once`.
        batch_wait_s: After a first claim, how long to wait for more claimable jobs.
        stop: Set to make waits return early (the jobs are released, not failed).
        on_error: Called with every error a job meets (for the agent's ``last_error``).
        on_gas: Called with the gas of every confirmed fulfilment transaction.
        review: Human review (:class:`~agent.pipeline.ports.Review`, review mode): a generated result is
            published only once a curator approves it (a rejection cancels the job); until then the job waits,
            released with a delay of ``review_poll_s``.
        refresher: Advances ``refresh`` jobs (:class:`~agent.pipeline.ports.SideWork`), one bounded step per
            :meth:`work_once`, and only when no evolution job is claimable: holders' requests go first.
        watched: The watcher's saved cursor state (a :class:`~agent.watch.cursor.CursorState`, or None before
            its first block). When given, a confirmation is final only once the watcher has passed its block
            and the block is still canonical; until then the job is re-checked (``None``: final at once).
        settle_every_s: Least time between two re-checks of unsettled confirmations.
    """

    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        *,
        inputs: InputsStage,
        generate: GenerateStage,
        publish: PublishStage,
        submitter: Submitter,
        settler: Settler,
        lease_s: float = 60.0,
        batch_size: int = 8,
        batch_wait_s: float = 0.0,
        stop: threading.Event | None = None,
        on_error: Callable[[str], None] | None = None,
        on_gas: Callable[[int], None] | None = None,
        review: Review | None = None,
        review_poll_s: float = 5.0,
        refresher: SideWork | None = None,
        watched: Callable[[], Any] | None = None,
        settle_every_s: float = 0.25,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.inputs = inputs
        self.generate = generate
        self.publish = publish
        self.submitter = submitter
        self.settler = settler
        self.lease_s = lease_s
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.stop = stop or threading.Event()
        self._on_error = on_error or (lambda _msg: None)
        self._on_gas = on_gas or (lambda _gas: None)
        self.review = review
        self.review_poll_s = review_poll_s
        self.refresher = refresher
        self.watched = watched
        self.settle_every_s = settle_every_s
        self._last_settle = 0.0
        self._held = _Held()

    @property
    def journal(self) -> BroadcastJournal | None:
        """The sender's broadcast journal (None when broadcasts are not recorded)."""
        journal = getattr(self.submitter.sender, "journal", None)
        return journal if isinstance(journal, BroadcastJournal) else None

    # -- the loop body --------------------------------------------------------------------------------------

    def work_once(self, max_jobs: int | None = None, *, until: Stage | None = None) -> int:
        """Claim up to ``max_jobs`` (default ``batch_size``) jobs and advance them; return how many.

        ``until``: stop after recording that stage and give the jobs back (nothing is sent before
        ``submitted``: ``until=Stage.PUBLISHED`` is a dry run that pins but does not pay).
        """
        self.store.reap()
        if until is None:
            self.settle_confirmed()
        limit = max(1, min(max_jobs or self.batch_size, self.batch_size))
        jobs = self._claim(limit)
        if not jobs:
            return self._refresh_once() if self.refresher is not None and until is None else 0
        with _Heartbeat(self.store, self.worker_id, self._held, self.lease_s):
            try:
                self._advance(jobs, until)
            finally:
                for job_id in self._held.snapshot():  # anything still in hand goes back to the queue
                    self._release(job_id)
        return len(jobs)

    def _claim(self, limit: int) -> list[Job]:
        jobs: list[Job] = []
        deadline = time.monotonic() + self.batch_wait_s
        while len(jobs) < limit:
            job = self.store.claim(self.worker_id, lease_s=self.lease_s, kinds=[JobKind.EVOLVE])
            if job is None:
                if not jobs or time.monotonic() >= deadline or self.stop.is_set():
                    break
                self.stop.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            self._held.add(job.id)
            jobs.append(job)
        return jobs

    def _advance(self, jobs: list[Job], until: Stage | None) -> None:
        live = {job.id: job for job in jobs}
        for job in list(live.values()):
            if job.payload.get("replay_of") is not None and job.next_stage in _REPLAYED:
                self._guard(live, job, lambda j: self._replay(j))
        for job in [j for j in live.values() if j.next_stage == Stage.INPUTS]:
            self._guard(live, job, lambda j: self._record(j, Stage.INPUTS, self._timed(
                "inputs", lambda: self.inputs.run(_request(j).task()))))  # fmt: skip
        if self._stop_at(live, until, Stage.INPUTS):
            return
        generating = self._still_open(live, [j for j in live.values() if j.next_stage == Stage.GENERATED])
        if generating:
            self._generate(live, generating)
        if self._stop_at(live, until, Stage.GENERATED):
            return
        for job in [j for j in live.values() if j.next_stage == Stage.PUBLISHED]:
            self._guard(live, job, self._publish)
        if self._stop_at(live, until, Stage.PUBLISHED):
            return
        submitting = [j for j in live.values() if j.next_stage == Stage.SUBMITTED]
        if submitting:
            self._submit(live, submitting)
        if self._stop_at(live, until, Stage.SUBMITTED):
            return
        waiting = [j for j in live.values() if j.stage == Stage.SUBMITTED]
        if waiting:
            self._confirm(live, waiting)

    def _stop_at(self, live: dict[int, Job], until: Stage | None, stage: Stage) -> bool:
        if until != stage and not self.stop.is_set():
            return False
        for job_id in list(live):
            self._release(job_id)
            live.pop(job_id)
        return True

    def _refresh_once(self) -> int:
        """Claim one refresh job, advance it by one step, and give it back (or finish it); returns 0 or 1."""
        job = self.store.claim(self.worker_id, lease_s=self.lease_s, kinds=[JobKind.REFRESH])
        if job is None:
            return 0
        self._held.add(job.id)
        with _Heartbeat(self.store, self.worker_id, self._held, self.lease_s):
            try:
                assert self.refresher is not None
                outcome = self.refresher.step(job, self.stop)
            except Exception as exc:  # noqa: BLE001 - routed to the job store: retry with back-off, or fail
                self._fail({job.id: job}, job, exc)
                return 1
        self._held.drop(job.id)
        try:
            if outcome.action == "finish":
                self.store.confirm(job.id, self.worker_id, outcome.result or {})
                JOB_OUTCOMES.labels(outcome="confirmed").inc()
            else:
                self.store.release(job.id, self.worker_id, delay_s=outcome.delay_s)
        except LeaseLostError as exc:
            log.warning("refresh job %s: %s", job.id, exc.message)
        return 1

    # -- stages ---------------------------------------------------------------------------------------------

    def _still_open(self, live: dict[int, Job], jobs: list[Job]) -> list[Job]:
        """Jobs whose request is still pending; the others are settled from the chain before any inference
        is spent on them (fulfilled by an earlier run or another agent, cancelled, orphaned)."""
        if not jobs:
            return []
        batcher = self.submitter.batcher
        try:
            # pending with the job's seed (the common case: one read); for the others, pending at all (with a new
            # seed: re-mined after a reorg) or not
            ours = batcher.check_pending_with(
                [Fulfilment(r.request_id, r.seed_bytes, bytes(32)) for r in (_request(j) for j in jobs)]
            )
            others = [_request(j).request_id for j in jobs if not ours.get(_request(j).request_id, False)]
            pending = {**ours, **batcher.check_pending(others)} if others else ours
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                self._fail(live, job, exc)
            return []
        open_ = []
        for job in jobs:
            request = _request(job)
            if pending.get(request.request_id, False):
                if ours.get(request.request_id, False):
                    open_.append(job)
                else:
                    self._fail(live, job, RequestReminedError(request))
                continue
            log.info("job %s: request %s is no longer pending; settling it from the chain", job.id,
                     hex(request.request_id))  # fmt: skip
            self._settle(
                live, job, Ready(job.id, request, bytes(32), bytes(32)), "not pending", pending_ok=True
            )
        return [j for j in open_ if j.id in live]

    def _generate(self, live: dict[int, Job], jobs: list[Job]) -> None:
        batch = [(_request(j).task(), j.inputs) for j in jobs]
        started = time.monotonic()
        try:
            outputs = self.generate.run(batch)
        except Exception as exc:  # noqa: BLE001 - every job of the batch gets the error
            for job in jobs:
                self._fail(live, job, exc)
            return
        STAGE_LATENCY.labels(stage="generate").observe(time.monotonic() - started)
        for job, output in zip(jobs, outputs, strict=True):
            failed = gate_failure(output, f"job {job.id}") if self.review is None else None
            if failed is not None:  # no curator to show it to: the job fails visibly
                self._fail(live, job, failed)
                continue
            self._guard(live, job, partial(self._record, stage=Stage.GENERATED, output=output))

    def _publish(self, job: Job) -> Job:
        """Publish the job's generated record; in review mode only once a curator approved a candidate."""
        request, inputs, artwork = _request(job), job.inputs, job.artwork
        approved_by = None
        if self.review is not None:
            decision = self.review.review(
                job.id, token_id=request.token_id, stage=request.stage, artwork=artwork,
                traits=inputs.rules.traits, name=inputs.token.name,
            )  # fmt: skip
            if isinstance(decision, CuratorRejection):
                self._held.drop(job.id)
                JOB_OUTCOMES.labels(outcome="cancelled").inc()
                return self.store.cancel(job.id, decision.reason)
            if decision is None:  # awaiting a curator: ask again later
                self._held.drop(job.id)
                return self.store.release(job.id, self.worker_id, delay_s=self.review_poll_s)
            artwork, approved_by = decision.artwork, decision.approved_by
        record = self._timed(
            "publish", lambda: self.publish.run(request.task(), inputs, artwork, approved_by=approved_by)
        )
        return self._record(job, Stage.PUBLISHED, record)

    def _submit(self, live: dict[int, Job], jobs: list[Job]) -> None:
        jobs = self._adopt(live, jobs)
        if not jobs:
            return
        ready = {job.id: _ready(job) for job in jobs}
        started = time.monotonic()
        try:
            planned = self.submitter.plan(list(ready.values()))
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                self._fail(live, job, exc)
            return
        for item, reason in planned.dropped:
            log.info(
                "job %s: request %s dropped before sending: %s",
                item.job_id,
                hex(item.request.request_id),
                reason,
            )
            self._settle(live, live[item.job_id], item, reason)
        for batch, items in planned.batches:
            try:
                submission = self.submitter.send(batch)
            except Exception as exc:  # noqa: BLE001 - nothing was sent for these jobs
                for item in items:
                    self._fail(live, live[item.job_id], exc)
                continue
            hooks.reached("sent")
            record = {
                "tx_hash": submission.tx_hash,
                "nonce": submission.nonce,
                "batch": [item.request.request_id for item in items],
                "submission": submission.to_json(),
            }
            for item in items:
                self._guard(
                    live, live[item.job_id], partial(self._record, stage=Stage.SUBMITTED, output=record)
                )
        STAGE_LATENCY.labels(stage="submit").observe(time.monotonic() - started)

    def _adopt(self, live: dict[int, Job], jobs: list[Job]) -> list[Job]:
        """Jobs with an unsettled recorded broadcast of their request (sent, then the agent stopped before the
        ``submitted`` record) record it and wait for it; the others are returned, to be sent."""
        journal = self.journal
        if journal is None:
            return jobs
        rest = []
        for job in jobs:
            request = _request(job)
            try:
                found = journal.for_key(str(request.request_id))
            except Exception as exc:  # noqa: BLE001 - without the journal nothing may be sent
                self._fail(live, job, exc)
                continue
            if (
                found is None
                or found.outcome is not None
                or found.submission.sent_at < job.created_at.timestamp()
            ):
                # Nothing in flight for it (a broadcast older than the job belongs to another chain or job).
                rest.append(job)
                continue
            sub = found.submission
            log.warning(
                "job %s: request %s was already broadcast as %s (nonce %d, recorded before a stop); waiting "
                "for it instead of sending again", job.id, hex(request.request_id), sub.tx_hash, sub.nonce,
            )  # fmt: skip
            record = {
                "tx_hash": sub.tx_hash,
                "nonce": sub.nonce,
                "batch": [int(k) for k in found.keys if k.isdigit()],
                "submission": sub.to_json(),
                "recovered": True,
            }
            self._guard(live, job, partial(self._record, stage=Stage.SUBMITTED, output=record))
        return rest

    def _current(self, job: Job) -> Submission:
        """The job's latest broadcast: its ``submitted`` record, or what the journal recorded since (a
        replacement, a re-send)."""
        sub = Submission.from_json(job.output(Stage.SUBMITTED)["submission"])
        journal = self.journal
        if journal is not None:
            found = journal.for_key(str(_request(job).request_id))
            if found is not None:
                return found.submission
        return sub

    def _confirm(self, live: dict[int, Job], jobs: list[Job]) -> None:
        groups: dict[str, list[Job]] = {}
        subs: dict[str, Submission] = {}
        for job in jobs:
            try:
                sub = self._current(job)
            except Exception as exc:  # noqa: BLE001
                self._fail(live, job, exc)
                continue
            groups.setdefault(sub.tx_hash, []).append(job)
            subs[sub.tx_hash] = sub
        if not groups:
            return
        outcomes = self.submitter.wait([subs[h] for h in groups], self.stop)
        resend: list[Job] = []
        for (tx_hash, members), outcome in zip(groups.items(), outcomes, strict=True):
            if outcome is None:  # stopping: give them back, a restart resumes the wait
                for job in members:
                    self._release(job.id)
                    live.pop(job.id, None)
                continue
            if isinstance(outcome, Confirmation) and outcome.status == 1:
                self._on_gas(outcome.gas_used)
                result = confirmation_result(outcome, len(members))
                try:
                    skipped = self.submitter.skipped(outcome)
                except Exception as exc:  # noqa: BLE001 - the next attempt reads the receipt again
                    for job in members:
                        self._fail(live, job, exc)
                    continue
                for job in members:
                    if _request(job).request_id not in skipped:
                        self._guard(live, job, partial(self._finish, result=result))
                        continue
                    # Mined, but the contract skipped it (FulfilmentSkipped): not fulfilled by this transaction.
                    why = f"skipped by the fulfilment {tx_hash}: no longer pending with this job's seed"
                    log.info("job %s: request %s %s", job.id, hex(_request(job).request_id), why)
                    if self._settle(live, job, _ready(job), why, pending_ok=True) == "pending":
                        resend.append(job)
                continue
            if isinstance(outcome, StuckTransactionError):
                for job in members:
                    self._wait_more(live, job, subs[tx_hash], outcome)
                continue
            log.warning("fulfilment %s for %d job(s) did not confirm: %s", tx_hash, len(members), outcome)
            reverted = getattr(outcome, "confirmation", None)
            if isinstance(reverted, Confirmation):  # mined but reverted: its gas was spent all the same
                self._on_gas(reverted.gas_used)
            for job in members:
                if self._settle(live, job, _ready(job), str(outcome), pending_ok=True) == "pending":
                    resend.append(job)
        if resend:
            self._resend(live, resend)

    def _resend(self, live: dict[int, Job], jobs: list[Job]) -> None:
        """Send again for jobs whose recorded transaction failed while their request stayed pending.

        The new transaction is not recorded (a job's ``submitted`` record is written once): if the agent stops
        before it confirms, the next attempt settles the job from the chain, finding this fulfilment.
        """
        ready = {job.id: _ready(job) for job in jobs}
        try:
            planned = self.submitter.plan(list(ready.values()))
            for item, reason in planned.dropped:
                self._settle(live, live[item.job_id], item, reason)
            for batch, items in planned.batches:
                submission = self.submitter.send(batch)
                log.info("re-sent %d fulfilment(s) as %s", len(items), submission.tx_hash)
                (outcome,) = self.submitter.wait([submission], self.stop)
                skipped: frozenset[int] = frozenset()
                if isinstance(outcome, Confirmation) and outcome.status == 1:
                    skipped = self.submitter.skipped(outcome)  # requests the contract left out
                for item in items:
                    job = live[item.job_id]
                    if isinstance(outcome, StuckTransactionError):
                        self._wait_more(live, job, submission, outcome)
                    elif isinstance(outcome, Confirmation) and outcome.status == 1:
                        self._on_gas(outcome.gas_used)
                        if item.request.request_id in skipped:
                            self._settle(live, job, item, f"skipped by the fulfilment {submission.tx_hash}")
                            continue
                        result = confirmation_result(outcome, len(items))
                        self._guard(live, job, partial(self._finish, result=result))
                    elif outcome is None:
                        self._release(job.id)
                        live.pop(job.id, None)
                    else:
                        self._fail(
                            live,
                            job,
                            outcome
                            if isinstance(outcome, Exception)
                            else RetryableError(
                                f"fulfilment {submission.tx_hash} reverted",
                                hint="the next attempt re-checks it",
                            ),
                        )
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                if job.id in live:
                    self._fail(live, job, exc)

    def _settle(
        self, live: dict[int, Job], job: Job, item: Ready, why: str, *, pending_ok: bool = False
    ) -> str | None:
        """Settle ``job`` by chain truth; returns the action taken (``pending`` when still open)."""
        try:
            settlement = self.settler.settle(item)
        except Exception as exc:  # noqa: BLE001
            self._fail(live, job, exc)
            return None
        if settlement.action == "confirm":
            assert settlement.result is not None
            self._guard(live, job, lambda j: self._finish(j, settlement.result or {}))
        elif settlement.action == "cancel":
            self._cancel(live, job, settlement.reason or why)
        elif not pending_ok and self._in_pool(live, job, item):
            pass  # our recorded broadcast is still unsettled: waiting, not failing (_in_pool gave it back)
        elif not pending_ok:
            # Still pending, yet the batcher would not send it (it would revert, or needs too much gas).
            self._fail(live, job, RetryableError(
                f"request {item.request.request_id:#x} is pending but was not sent: {why}",
                hint="it is retried with back-off; if it keeps failing, check the contract (active model, "
                "agent role) and submit.batch_max_gas"))  # fmt: skip
        return settlement.action

    def _in_pool(self, live: dict[int, Job], job: Job, item: Ready) -> bool:
        """Whether an unsettled recorded broadcast fulfils ``item``'s request (the pre-send check dropped it
        because that transaction is in the pool): then the job is given back to wait for it."""
        journal = self.journal
        if journal is None:
            return False
        try:
            found = journal.for_key(str(item.request.request_id))
        except Exception:  # noqa: BLE001
            return False
        if found is None or found.outcome is not None:
            return False
        self._wait_more(live, job, found.submission, why="recorded and not yet settled")
        return True

    def _wait_more(
        self,
        live: dict[int, Job],
        job: Job,
        sub: Submission,
        stuck: StuckTransactionError | None = None,
        why: str = "",
    ) -> None:
        """A fulfilment not mined yet: give the job back to wait again; a stall never uses up an attempt."""
        live.pop(job.id, None)
        self._held.drop(job.id)
        detail = why or (f"not mined yet ({stuck.reason})" if stuck is not None else "not mined yet")
        replacements = len(sub.replaced)
        if self.journal is not None:
            try:
                recorded = self.journal.latest(sub.sender, sub.nonce)
            except Exception:  # noqa: BLE001 - only the note's count
                recorded = None
            if recorded is not None:
                sub, replacements = recorded.submission, recorded.replacements
        note = (
            f"waiting: fulfilment {sub.tx_hash} (nonce {sub.nonce}) is {detail}; "
            f"{replacements} replacement(s) sent"
        )
        log.warning("job %s: %s (a stall does not use up an attempt)", job.id, note)
        try:
            self.store.release(job.id, self.worker_id, waiting=note)
        except LeaseLostError:
            pass

    # -- unsettled confirmations ----------------------------------------------------------------------------

    def settle_confirmed(self, *, force: bool = False) -> int:
        """Re-check ``confirmed`` jobs whose outcome is not final yet; returns how many became final.

        Final: the watcher has passed the fulfilment's block and that block is still canonical (the hash the
        receipt named). Orphaned: the job is re-opened as a reorg notice would (a replay job re-sends its
        published metadata if the request is pending again; a fulfilment re-mined elsewhere is followed).
        """
        if self.watched is None:
            return 0
        now = time.monotonic()
        if not force and now - self._last_settle < self.settle_every_s:
            return 0
        self._last_settle = now
        try:
            return self._settle_confirmed()
        except Exception as exc:  # noqa: BLE001 - the next loop re-checks
            log.warning("re-checking unsettled confirmations failed: %s", exc)
            return 0

    def _settle_confirmed(self) -> int:
        jobs = self.store.unsettled()
        if not jobs:
            return 0
        rpc = self.submitter.sender.rpc  # type: ignore[attr-defined]
        cursor = self.watched() if self.watched is not None else None
        tip = cursor.tip.number if cursor is not None else -1
        seen = {b.number: b.hash.lower() for b in cursor.window} if cursor is not None else {}
        by_tx: dict[str, list[Job]] = {}
        for job in jobs:
            by_tx.setdefault(str((job.result or {}).get("tx_hash", "")).lower(), []).append(job)
        hashes = [h for h in by_tx if h]
        receipts = dict(zip(hashes, rpc.receipts(hashes), strict=True)) if hashes else {}
        numbers = [r.block_number for r in receipts.values() if r is not None]
        recorded_at = [(j.result or {}).get("block_number") for j in jobs]
        numbers += [int(n) for n in recorded_at if n is not None]
        canonical = rpc.blocks(numbers) if numbers else {}
        settled = 0
        for tx_hash, members in by_tx.items():
            receipt = receipts.get(tx_hash)
            block = canonical.get(receipt.block_number) if receipt is not None else None
            if receipt is not None and block is not None and block.hash.lower() == receipt.block_hash.lower():
                number, mined_in = receipt.block_number, receipt.block_hash.lower()
                moved = {"block_number": number, "block_hash": mined_in}
                final = tip >= number and seen.get(number, mined_in) == mined_in
                for job in members:
                    if str((job.result or {}).get("block_hash", "")).lower() != mined_in:
                        log.warning("job %s: fulfilment %s is now in block %d (%s)", job.id, tx_hash, number,
                                    mined_in)  # fmt: skip
                        self.store.settle(job.id, moved, settle_block=number)
                    if final:
                        self.store.settle(job.id, settle_block=None)
                        log.info("job %s: fulfilment %s in block %d is final (the watcher passed it)",
                                 job.id, tx_hash, number)  # fmt: skip
                        settled += 1
                continue
            # No canonical receipt. Orphaned only on evidence: the node serves another block at the recorded
            # height (a node that lags, or has not indexed the receipt yet, is waited for, never acted on).
            result = members[0].result or {}
            recorded = canonical.get(int(result.get("block_number", -1)))
            if recorded is None or recorded.hash.lower() == str(result.get("block_hash", "")).lower():
                continue
            if tx_hash and rpc.transaction(tx_hash) is not None:
                log.warning("job(s) %s: fulfilment %s left its block and is back in the pool; waiting",
                            [j.id for j in members], tx_hash)  # fmt: skip
                continue
            for job in members:
                self._reopen(job)
        return settled

    def _reopen(self, job: Job) -> None:
        """``job``'s fulfilment is no longer on the canonical chain: settle it from the chain, like a reorg
        notice (a replay job while the request is pending again)."""
        result = dict(job.result or {})
        mined_in = str(result.get("block_hash", "")).lower()
        request = _request(job)
        digest = job.published.digest_bytes if Stage.PUBLISHED in job.outputs else bytes(32)
        try:
            settlement = self.settler.settle(Ready(job.id, request, digest, bytes(32)))
        except Exception as exc:
            if not isinstance(exc, RequestReminedError):
                raise
            # The request itself was re-mined (new block, new seed): the watcher's notice of the re-mined log
            # brings a job for it; this job's orphaned fulfilment is settled as such.
            log.warning("job %s: its fulfilment %s was orphaned and its request re-mined: %s", job.id,
                        result.get("tx_hash"), exc)  # fmt: skip
            self.store.settle(job.id, {"orphaned": result.get("tx_hash"), "orphaned_reason": str(exc)})
            return
        if settlement.action == "confirm" and settlement.result is not None:
            found = settlement.result
            log.warning("job %s: fulfilment %s was orphaned; request %s is fulfilled by %s in block %s",
                        job.id, result.get("tx_hash"), request.request_id, found.get("tx_hash"),
                        found.get("block_number"))  # fmt: skip
            self.store.settle(job.id, {**found, "orphaned": result.get("tx_hash")},
                              settle_block=int(found["block_number"]))  # fmt: skip
            return
        if settlement.action == "pending":
            key = f"{job.key}#replay@{mined_in[:18]}"
            replay, created = self.store.enqueue(
                JobKind.EVOLVE,
                key,
                payload={**job.payload, "replay_of": job.id},
                source=job.source,
                block_number=job.block_number,
                max_attempts=job.max_attempts,
            )
            log.warning(
                "job %s: its fulfilment %s was mined in block %s, orphaned before the watcher reached it; "
                "request %s is pending again: %s job %s re-sends the published metadata",
                job.id, result.get("tx_hash"), mined_in, request.request_id,
                "new" if created else "existing", replay.id,
            )  # fmt: skip
            self.store.settle(job.id, {"orphaned": result.get("tx_hash"), "replayed_by": replay.id})
            return
        log.warning("job %s: its fulfilment %s was orphaned: %s", job.id, result.get("tx_hash"),
                    settlement.reason)  # fmt: skip
        self.store.settle(job.id, {"orphaned": result.get("tx_hash"), "orphaned_reason": settlement.reason})

    def _replay(self, job: Job) -> Job:
        """A replay job re-sends the recorded outputs of the job whose fulfilment a reorg orphaned."""
        original = self.store.get(int(job.payload["replay_of"]))
        for stage in _REPLAYED:
            if stage not in original.outputs:
                raise PermanentError(
                    f"job {original.id} has no {stage.value} record to replay",
                    hint="cancel this job; the request is handled by its own job",
                )
            job = self._record(job, stage, original.outputs[stage])
        return job

    # -- bookkeeping ----------------------------------------------------------------------------------------

    def _record(
        self, job: Job, stage: Stage, output: Inputs | Artwork | Published | Mapping[str, Any]
    ) -> Job:
        record = output if isinstance(output, Mapping) else output.to_json()
        job = self.store.record_stage(job.id, self.worker_id, stage, record)
        hooks.reached(stage.value)
        return job

    def _finish(self, job: Job, result: Mapping[str, Any]) -> Job:
        published = job.published if Stage.PUBLISHED in job.outputs else None
        full = {
            **result,
            "metadata_cid": published.metadata_cid if published else None,
            "token_uri": published.token_uri if published else None,
            "image_cid": published.image_cid if published else None,
        }
        onchain = result.get("digest")
        if onchain and onchain != (published.digest if published else None):
            # an earlier attempt's metadata is what was written
            cid = cid_from_digest(bytes.fromhex(str(onchain)[2:]))
            full.update(metadata_cid=cid, token_uri=f"ipfs://{cid}", image_cid=None)
        settle_block = None
        if self.watched is not None and result.get("block_number") is not None:
            settle_block = int(result["block_number"])  # final once the watcher passed it (settle_confirmed)
        done = self.store.confirm(job.id, self.worker_id, full, settle_block=settle_block)
        self._held.drop(job.id)
        JOB_OUTCOMES.labels(outcome="confirmed").inc()
        EVENT_TO_FULFILMENT.observe(max(0.0, (done.updated_at - job.created_at).total_seconds()))
        hooks.reached("confirmed")
        return done

    def _timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        out = fn()
        STAGE_LATENCY.labels(stage=stage).observe(time.monotonic() - started)
        return out

    def _guard(self, live: dict[int, Job], job: Job, step: Callable[[Job], Job]) -> None:
        """Run one step of one job, keeping ``live`` current; errors end the job's attempt."""
        if job.id not in live:
            return
        try:
            new = step(live[job.id])
        except Exception as exc:  # noqa: BLE001 - routed to the job store, which decides retry or fail
            self._fail(live, job, exc)
            return
        if new.state == JobState.RUNNING:
            live[job.id] = new
        else:
            live.pop(job.id, None)

    def _fail(self, live: dict[int, Job], job: Job, exc: BaseException) -> None:
        live.pop(job.id, None)
        self._held.drop(job.id)
        if isinstance(exc, LeaseLostError):
            log.warning("job %s: %s", job.id, exc.message)
            return
        if isinstance(exc, RequestReminedError):
            # The job's source log is orphaned (its request was re-mined with a new seed): cancelled as orphaned,
            # no attempt spent, and revived from the canonical log when the watcher (or, if that log was missed,
            # the on-chain reconciliation) delivers it.
            log.warning("job %s (%s): %s", job.id, job.key, exc.message)
            self.store.cancel(job.id, ORPHANED_REASON)
            JOB_OUTCOMES.labels(outcome="cancelled").inc()
            return
        message = f"job {job.id} ({job.key}): {type(exc).__name__}: {exc}".replace("\n", " ")
        self._on_error(message)
        log.warning("%s", message, exc_info=not isinstance(exc, ChrysalisError))
        try:
            after = self.store.report_error(job.id, self.worker_id, exc)
        except LeaseLostError:
            return
        if after.state == JobState.FAILED:
            JOB_OUTCOMES.labels(outcome="failed").inc()

    def _cancel(self, live: dict[int, Job], job: Job, reason: str) -> None:
        live.pop(job.id, None)
        self._held.drop(job.id)
        self.store.cancel(job.id, reason)
        JOB_OUTCOMES.labels(outcome="cancelled").inc()

    def _release(self, job_id: int) -> None:
        self._held.drop(job_id)
        try:
            self.store.release(job_id, self.worker_id)
        except LeaseLostError:
            pass


def _request(job: Job) -> EvolutionRequest:
    return EvolutionRequest.from_payload(job.payload)


def _ready(job: Job) -> Ready:
    published = job.published
    provenance = published.provenance or job.artwork.provenance
    return Ready(
        job_id=job.id,
        request=_request(job),
        digest=published.digest_bytes,
        provenance=bytes.fromhex(provenance[2:]),
    )


def in_flight(jobs: Iterable[Job]) -> list[Submission]:
    """The recorded submissions of unfinished jobs (their nonces must not be handed out again)."""
    subs: dict[str, Submission] = {}
    for job in jobs:
        record = job.output(Stage.SUBMITTED)
        if record is not None and not job.state.terminal:
            sub = Submission.from_json(record["submission"])
            subs[sub.tx_hash] = sub
    return list(subs.values())


__all__: Sequence[str] = ["Worker", "in_flight"]
