"""``evolve --wait`` / ``fuse --wait``: follow the agent's job for a request, not only the chain.

The chain says when a request is fulfilled; only the agent's job store says that it never will be. While it waits,
:class:`JobFollower` reads the job for the request from the same database the agent uses (``database.url``) and
stops the wait as soon as the job has failed permanently (:class:`JobFailedError`: ``job N failed: <reason>``,
fix it, then ``chrysalis retry N``). Without a database (the holder is not on the agent's machine) the wait follows
the chain alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.errors import ChrysalisError, PermanentError, RetryableError
from agent.jobs import JobKind, JobState

if TYPE_CHECKING:  # pragma: no cover
    from agent.jobs import Job, JobStore
    from agent.pipeline.holder import Collection, TokenView
    from agent.settings import Settings


class JobFailedError(PermanentError):
    """The agent's job for the request failed permanently: the request will not be fulfilled until it is retried.

    Attributes:
        job_id: The job. reason: Why it failed.
    """

    def __init__(self, job_id: int, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(
            f"job {job_id} failed: {reason}",
            hint=f"fix it, then `chrysalis retry {job_id}` (the request stays pending, its fee escrowed, until "
            "the agent fulfils it or it is cancelled after the collection's request timeout)",
        )


class JobFollower:
    """Reads the job of one request from the agent's store; call it between chain polls.

    Args:
        store: The agent's job store (None: nothing to follow).
        chain_id: The collection's chain. request_id: The request.
    """

    def __init__(self, store: JobStore | None, chain_id: int, request_id: int) -> None:
        from agent.pipeline.request import job_key

        self.store = store
        self.key = job_key(chain_id, request_id)
        self.job: Job | None = None

    @classmethod
    def open(cls, settings: Settings, chain_id: int, request_id: int) -> JobFollower:
        """A follower on ``database.url``; one that follows nothing when the agent's database is not there."""
        from agent.pipeline.status import open_store

        try:
            store: JobStore | None = open_store(settings)
        except ChrysalisError:
            store = None
        return cls(store, chain_id, request_id)

    def find(self) -> Job | None:
        """The newest job for the request: its own, or the one revived after a reorg (``<key>@<block>``)."""
        if self.store is None:
            return None
        job = self.store.get_by_key(self.key)
        if job is None or job.state is JobState.CANCELLED:
            revived = [
                j
                for j in self.store.list_jobs(kind=JobKind.EVOLVE, newest_first=True, limit=200)
                if j.key.startswith((self.key + "@", self.key + "#"))
            ]
            job = revived[0] if revived else job
        return job

    def __call__(self) -> None:
        """Raise :class:`JobFailedError` when the request's job has failed."""
        self.job = self.find()
        if self.job is not None and self.job.state is JobState.FAILED:
            raise JobFailedError(self.job.id, self.job.reason or self.job.last_error or "no reason recorded")

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def describe(self) -> str | None:
        """Where the job stands, for a timeout message (None when no job was seen)."""
        job = self.job
        if job is None:
            return None
        stage = job.stage.value if job.stage else "none yet"
        error = f", last error: {job.last_error}" if job.last_error else ""
        return f"job {job.id} is {job.state.value} (stage {stage}, attempt {job.attempts}/{job.max_attempts}{error})"


def wait_following(
    collection: Collection, settings: Settings, request_id: int, *, timeout_s: float, poll_s: float = 0.5
) -> TokenView:
    """:meth:`Collection.wait_fulfilled`, stopped early with :class:`JobFailedError` when the agent's job for the
    request fails; on a timeout, the message says where the job stands (or that no agent picked it up)."""
    follower = JobFollower.open(settings, collection.chain_id, request_id)
    try:
        return collection.wait_fulfilled(request_id, timeout_s=timeout_s, poll_s=poll_s, on_poll=follower)
    except RetryableError as exc:
        where = follower.describe()
        if where is None and follower.store is not None:
            where = "the agent's database has no job for it yet"
        if where is None:
            raise
        raise RetryableError(f"{exc.message}: {where}", hint=exc.hint) from None
    finally:
        follower.close()
