"""The job store boundary: durable, idempotent jobs with leases, stage records and bounded retries.

Jobs may be run more than once (arq's rule), so the store makes that safe:

* **Idempotent insert.** :meth:`JobStore.enqueue` with a key that exists returns the existing job.
* **Leases.** :meth:`JobStore.claim` hands a queued job to one worker until ``lease_until``; the worker extends it
  with :meth:`JobStore.heartbeat`. :meth:`JobStore.reap` returns jobs whose lease expired (a crashed worker) to
  the queue. Every write a worker makes names its worker id and fails with
  :class:`~agent.jobs.errors.LeaseLostError` once it no longer holds the job (fencing).
* **Resumable stages.** :meth:`JobStore.record_stage` stores a stage's output before the next stage starts; a
  retried job reads ``Job.outputs`` and continues at ``Job.next_stage``.
* **Bounded retries.** :meth:`JobStore.report_error` re-queues after an exponential back-off for retryable
  errors (:class:`~agent.errors.RetryableError`, and unknown exceptions) and fails the job, with the error as
  its reason, on a :class:`~agent.errors.PermanentError` or when ``max_attempts`` is spent. Nothing fails
  silently: the reason is stored and logged. :meth:`JobStore.retry` re-queues a failed job.

A worker's loop, in short::

    job = store.claim(worker)                         # None: nothing to do
    try:
        for stage in STAGES[job.next_stage.position:]:   # resume after the last recorded stage
            job = store.record_stage(job.id, worker, stage, run(stage, job))
        store.confirm(job.id, worker, result)
    except LeaseLostError:
        pass                                          # someone else owns it now
    except Exception as exc:
        store.report_error(job.id, worker, exc)

:class:`~agent.store.jobs.SqlJobStore` implements it on SQLite and PostgreSQL (build one with
``SqlJobStore(Database.open(url))``, or :func:`~agent.store.jobs.open_job_store`). This module is the interface
alone: it imports no implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Self

from agent.domain import LogKey
from agent.jobs.models import Job, JobKind, JobState, Stage

DEFAULT_LEASE_S = 60.0
#: The reason a job is cancelled with when a reorg orphans its source log (such a job revives if the log returns).
ORPHANED_REASON = "source log orphaned by a reorg"


class JobStore(ABC):
    """Durable jobs. All times come from the store's clock (UTC); all methods are safe to call from many threads
    and processes at once."""

    @abstractmethod
    def enqueue(
        self,
        kind: JobKind | str,
        key: str,
        *,
        payload: Mapping[str, Any] | None = None,
        source: LogKey | None = None,
        block_number: int | None = None,
        max_attempts: int | None = None,
        run_after: datetime | None = None,
    ) -> tuple[Job, bool]:
        """Add a job unless one with ``key`` exists; return ``(job, created)``.

        An existing job is returned untouched, whatever its state, with one exception: a ``cancelled`` job whose
        source log was orphaned is *revived* when the same key arrives from a different source block (the
        request was re-mined after a reorg): it gets the new source and payload, loses its recorded stages
        (they were read at the orphaned block) and is queued afresh; ``created`` is then true.
        """

    @abstractmethod
    def get(self, job_id: int) -> Job:
        """The job with ``job_id``; :class:`~agent.jobs.errors.JobNotFoundError` if there is none."""

    @abstractmethod
    def get_by_key(self, key: str) -> Job | None:
        """The job with idempotency key ``key``, if any."""

    @abstractmethod
    def claim(
        self,
        worker_id: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        kinds: Iterable[JobKind | str] | None = None,
    ) -> Job | None:
        """Atomically take the oldest claimable queued job (optionally of ``kinds``) for ``worker_id``.

        The job becomes ``running`` with a lease of ``lease_s`` seconds and one more attempt counted. Two
        workers never get the same job. ``None`` when nothing is claimable.
        """

    @abstractmethod
    def heartbeat(self, job_id: int, worker_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> Job:
        """Extend the worker's lease to ``now + lease_s``; :class:`LeaseLostError` if it no longer holds the job."""

    @abstractmethod
    def record_stage(self, job_id: int, worker_id: str, stage: Stage | str, output: Any) -> Job:
        """Store ``stage``'s output (JSON-serialisable) and advance the job to it.

        Recording a stage that is already recorded keeps the first output (it is returned in ``Job.outputs``):
        a stage's output, once stored, is what every later stage builds on. Stages must be recorded in order
        (:class:`~agent.jobs.errors.StageOrderError`).
        """

    @abstractmethod
    def confirm(
        self,
        job_id: int,
        worker_id: str,
        result: Mapping[str, Any] | None = None,
        *,
        settle_block: int | None = None,
    ) -> Job:
        """Finish the job with the ``confirmed`` outcome, storing ``result`` (e.g. the receipt).

        ``settle_block``: the outcome is not final yet (its transaction was mined in that block, which a reorg
        may still orphan): the job is listed by :meth:`unsettled` until :meth:`settle` marks it final.
        """

    @abstractmethod
    def unsettled(self, limit: int = 500) -> list[Job]:
        """``confirmed`` jobs whose outcome is not final yet (oldest first)."""

    @abstractmethod
    def settle(
        self, job_id: int, result: Mapping[str, Any] | None = None, *, settle_block: int | None = None
    ) -> Job:
        """Update an unsettled confirmed job: merge ``result`` into its result and set its ``settle_block``
        (``None``: the outcome is final)."""

    @abstractmethod
    def waiting_counts(self) -> dict[str, int]:
        """``unsettled`` (confirmed, not final) and ``stalled`` (unfinished jobs waiting on a transaction in
        the pool) job counts, for ``chrysalis status``."""

    @abstractmethod
    def report_error(self, job_id: int, worker_id: str, error: BaseException | str) -> Job:
        """Record a failed attempt and decide what happens next.

        Retryable errors (:class:`~agent.errors.RetryableError`, or any exception that is not a
        :class:`~agent.errors.ChrysalisError`) re-queue the job after the policy's back-off, or after the
        error's ``retry_after`` seconds if longer, until ``max_attempts`` attempts are spent. A
        :class:`~agent.errors.PermanentError` (or a plain string) fails it at once. A failed job keeps the
        error as its ``reason``.
        """

    @abstractmethod
    def release(
        self, job_id: int, worker_id: str, *, delay_s: float = 0.0, waiting: str | None = None
    ) -> Job:
        """Give a running job back without an error (e.g. on shutdown); the attempt is not counted.

        ``waiting``: why it waits (kept on the job, e.g. a transaction stalled in the pool), shown by status.
        """

    @abstractmethod
    def cancel(self, job_id: int, reason: str) -> Job:
        """End a job that is not ``confirmed`` with the ``cancelled`` outcome; a running worker then loses its
        lease. Cancelling a cancelled job does nothing; a confirmed job raises :class:`JobStateError`."""

    @abstractmethod
    def cancel_orphaned(self, block_hashes: Iterable[str], reason: str = ORPHANED_REASON) -> list[Job]:
        """Cancel every unfinished job whose source log is in one of ``block_hashes``; return the jobs touched."""

    @abstractmethod
    def by_source_blocks(self, block_hashes: Iterable[str]) -> list[Job]:
        """Every job (any state) whose source log is in one of ``block_hashes`` (a reorg notice's orphans)."""

    @abstractmethod
    def retry(self, job_id: int) -> Job:
        """Re-queue a ``failed`` job with a fresh attempt budget; its recorded stages are kept, so it resumes."""

    @abstractmethod
    def reap(self) -> list[Job]:
        """Return running jobs whose lease expired to the queue (or fail them if their attempts are spent)."""

    @abstractmethod
    def list_jobs(
        self,
        *,
        state: JobState | str | None = None,
        kind: JobKind | str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Job]:
        """Jobs filtered by state and kind, by id."""

    @abstractmethod
    def counts(self) -> dict[JobState, int]:
        """Number of jobs in every state (zeros included): for metrics and ``chrysalis status``."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
