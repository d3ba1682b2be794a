"""The operations view: job states, recent errors, the watcher's cursor and lag, gas spent, the next refresh.

Jobs and the cursor come from the agent's database (the job store's public methods, and the watcher's
``watch_cursors`` table); head, lag and gas come from the chain (the receipts of the transactions that wrote
metadata), so the figures hold whichever process sent them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from agent.jobs import Job, JobKind, JobState
from agent.redact import redact_text
from agent.store import Database, SqlJobStore
from agent.store.roles import AgentInfo, list_agents
from agent.studio.index import CollectionIndex, GasSpent
from agent.watch.cursor import watch_lag


@dataclass(frozen=True)
class OpsView:
    """What the operations page shows.

    Attributes:
        jobs: Jobs in every state.
        failed: The newest failed jobs (with their reasons). retrying: Queued jobs retrying after an error.
        running: Jobs being worked on now.
        chain_head / cursor_block / lag: The node's head, the watcher's last handled block, the difference.
        gas: Gas and fees of every metadata write on-chain.
        next_refresh: When the earliest queued refresh job may run (None: none scheduled).
        review: Review items in every state (empty when review mode is off).
        agents: Every agent working this database: id, key, last heartbeat, jobs held, this collection's roles.
    """

    jobs: dict[str, int]
    failed: list[Job] = field(default_factory=list)
    retrying: list[Job] = field(default_factory=list)
    running: list[Job] = field(default_factory=list)
    chain_head: int | None = None
    cursor_block: int | None = None
    gas: GasSpent = field(default_factory=GasSpent)
    next_refresh: datetime | None = None
    review: dict[str, int] = field(default_factory=dict)
    agents: list[AgentInfo] = field(default_factory=list)

    @property
    def lag(self) -> int | None:
        """Blocks the watcher is behind the node (:func:`agent.watch.cursor.watch_lag`; None when unknown)."""
        return watch_lag(self.chain_head, self.cursor_block)

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "failed": [_job(j) for j in self.failed],
            "retrying": [_job(j) for j in self.retrying],
            "running": [_job(j) for j in self.running],
            "chain_head": self.chain_head,
            "cursor_block": self.cursor_block,
            "lag": self.lag,
            "gas_used": self.gas.gas_used,
            "fee_wei": self.gas.fee_wei,
            "transactions": self.gas.transactions,
            "next_refresh": self.next_refresh.isoformat() if self.next_refresh else None,
            "review": self.review,
            "agents": [a.to_json() for a in self.agents],
        }


def _job(job: Job) -> dict[str, Any]:
    payload = dict(job.payload)
    return {
        "id": job.id,
        "kind": job.kind.value,
        "state": job.state.value,
        "stage": job.stage.value if job.stage else None,
        "token_id": payload.get("token_id", payload.get("tokenId")),
        "attempts": job.attempts,
        "last_error": redact_text(job.last_error) if job.last_error else None,
        "reason": redact_text(job.reason) if job.reason else None,
        "updated_at": job.updated_at.isoformat(),
    }


def token_of(job: Job) -> int | None:
    """The token a job is about (its payload's ``token_id``), if it names one."""
    payload = dict(job.payload)
    token = payload.get("token_id", payload.get("tokenId"))
    return int(token) if token is not None else None


def cursor_block(db: Database, index: CollectionIndex) -> int | None:
    """The newest block any watcher stream of this collection has handled (streams are ``<chain>:<addresses>``)."""
    address = index.address.lower()
    stmt = sa.text("SELECT stream, block_number FROM watch_cursors WHERE chain_id = :chain")
    with db.connect() as conn:
        rows = conn.execute(stmt, {"chain": index.deployment.chain_id}).all()
    blocks = [int(n) for stream, n in rows if address in str(stream).lower()]
    return max(blocks) if blocks else None


def gather(store: SqlJobStore, index: CollectionIndex, *, review: dict[str, int] | None = None) -> OpsView:
    """Read the job store and the chain index (which the caller keeps synced)."""
    counts = {state.value: n for state, n in store.counts().items()}
    failed = store.list_jobs(state=JobState.FAILED, limit=10, newest_first=True)
    queued = store.list_jobs(state=JobState.QUEUED, limit=200, newest_first=True)
    retrying = [j for j in queued if j.last_error][:10]
    running = store.list_jobs(state=JobState.RUNNING, limit=20)
    refreshes = [j for j in queued if j.kind == JobKind.REFRESH]
    next_refresh = min((j.run_after for j in refreshes), default=None)
    return OpsView(
        jobs=counts,
        failed=failed,
        retrying=retrying,
        running=running,
        chain_head=index.head,
        cursor_block=cursor_block(store.db, index),
        gas=index.gas_spent(),
        next_refresh=next_refresh,
        review=review or {},
        agents=list_agents(store.db, scope=f"{index.deployment.chain_id}:{index.address.lower()}:"),
    )
