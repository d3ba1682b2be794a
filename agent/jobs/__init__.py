"""Durable, idempotent jobs: what a job is, the :class:`JobStore` interface, and the retry policy.

See :mod:`agent.jobs.store` for the model (idempotency keys, leases, stage records, bounded retries). This
package is pure: the SQL implementation and the tables are :mod:`agent.store` (``SqlJobStore``).
"""

from agent.jobs.errors import JobNotFoundError, JobStateError, LeaseLostError, StageOrderError
from agent.jobs.models import STAGES, TERMINAL_STATES, Job, JobKind, JobState, Stage
from agent.jobs.policy import RetryPolicy
from agent.jobs.store import DEFAULT_LEASE_S, JobStore

__all__ = [
    "DEFAULT_LEASE_S",
    "STAGES",
    "TERMINAL_STATES",
    "Job",
    "JobKind",
    "JobNotFoundError",
    "JobState",
    "JobStateError",
    "JobStore",
    "LeaseLostError",
    "RetryPolicy",
    "Stage",
    "StageOrderError",
]
