"""Errors the job store raises. Each carries the job id and what was expected, and says how to fix it."""

from __future__ import annotations

from agent.errors import NotFoundError, PermanentError


class JobNotFoundError(NotFoundError):
    """No job has this id (or key).

    Attributes:
        job: The id or key that was asked for.
    """

    def __init__(self, job: int | str) -> None:
        self.job = job
        super().__init__(f"no job {job!r}", hint="list jobs with `chrysalis jobs` to find its id")


class JobStateError(PermanentError):
    """The job is not in a state that allows the operation (e.g. retrying a job that has not failed).

    Attributes:
        job_id: The job.
        state: Its current state.
        operation: What was attempted.
    """

    def __init__(self, job_id: int, state: str, operation: str, *, hint: str | None = None) -> None:
        self.job_id = job_id
        self.state = state
        self.operation = operation
        super().__init__(f"cannot {operation} job {job_id}: it is {state}", hint=hint)


class LeaseLostError(PermanentError):
    """The worker no longer holds the job: its lease was reaped and the job re-queued or claimed by another
    worker, or the job was cancelled. The worker must drop the job without touching it again.

    Attributes:
        job_id: The job.
        worker_id: The worker that thought it held it.
        holder: Who holds it now (``None`` if nobody).
        state: The job's current state.
    """

    def __init__(self, job_id: int, worker_id: str, holder: str | None, state: str) -> None:
        self.job_id = job_id
        self.worker_id = worker_id
        self.holder = holder
        self.state = state
        super().__init__(
            f"worker {worker_id!r} no longer holds job {job_id} (now {state}, held by {holder!r})",
            hint="drop the job: another worker resumes it from its recorded stages; heartbeat more often "
            "than the lease if this happens while the worker is alive",
        )


class StageOrderError(PermanentError):
    """A stage was recorded before the one it follows.

    Attributes:
        job_id: The job.
        stage: The stage that was recorded.
        expected: The stage that must come next.
    """

    def __init__(self, job_id: int, stage: str, expected: str | None) -> None:
        self.job_id = job_id
        self.stage = stage
        self.expected = expected
        super().__init__(
            f"job {job_id}: cannot record stage {stage!r} before {expected!r}",
            hint="resume from Job.next_stage; stages are recorded in order inputs, generated, published, submitted",
        )
