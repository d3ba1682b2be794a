"""What ``chrysalis status`` and ``chrysalis jobs`` read: the agent's database and the chain, without the agent.

Both work while the agent runs (or not at all): they open the job store read-mostly and ask the node for its
head. Nothing here loads a model or touches IPFS, so they answer in about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.deployment import Deployment
from agent.errors import ChrysalisError, ConfigError
from agent.jobs import Job, JobKind, JobState, JobStore
from agent.pipeline.accounting import gas_spent, sent_transaction
from agent.settings import Settings
from agent.store import SqlJobStore
from agent.store.roles import AgentInfo

_PAGE = 500


@dataclass(frozen=True)
class StatusReport:
    """The agent's state as seen from outside it.

    Attributes:
        database: The database URL (password hidden).
        collection: The collection's address; chain_id: its chain.
        chain_head: The node's latest block (None when the node could not be asked; see ``chain_error``).
        cursor_block: The last block the watcher handled (None before the first).
        lag: ``chain_head - cursor_block``.
        jobs: Jobs in every state.
        last_error: The newest failed job's reason, or else the newest error a queued job is retrying after.
        gas_spent: Gas used by the distinct transactions of confirmed jobs (a batch counts once;
            :func:`agent.pipeline.accounting.gas_spent`, the Agent's own count).
        fulfilment_txs: How many distinct transactions that is.
        waiting: ``unsettled`` (confirmed jobs whose fulfilment's block the watcher has not passed yet, re-checked
            until it has) and ``stalled`` (jobs waiting on a fulfilment not mined yet: waiting is not failing).
        chain_error: Why the chain could not be read, if it could not.
        agents: Every agent recorded in the database (:func:`agent.store.roles.list_agents`): id, key, last
            heartbeat, the jobs it holds and the singleton roles of this collection it holds.
    """

    database: str
    collection: str
    chain_id: int
    chain_head: int | None
    cursor_block: int | None
    jobs: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    gas_spent: int = 0
    fulfilment_txs: int = 0
    waiting: dict[str, int] = field(default_factory=dict)
    chain_error: ChrysalisError | None = None
    agents: list[AgentInfo] = field(default_factory=list)

    @property
    def lag(self) -> int | None:
        """Blocks the watcher is behind the node (:func:`agent.watch.cursor.watch_lag`; None when unknown)."""
        from agent.watch.cursor import watch_lag  # the watch package loads web3: only when asked

        return watch_lag(self.chain_head, self.cursor_block)

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "collection": self.collection,
            "chain_id": self.chain_id,
            "chain_head": self.chain_head,
            "cursor_block": self.cursor_block,
            "lag": self.lag,
            "jobs": dict(self.jobs),
            "last_error": self.last_error,
            "gas_spent": self.gas_spent,
            "fulfilment_txs": self.fulfilment_txs,
            "waiting": dict(self.waiting),
            "chain_error": self.chain_error.message if self.chain_error else None,
            "agents": [a.to_json() for a in self.agents],
        }


def gather_status(settings: Settings, store: SqlJobStore) -> StatusReport:
    """Read the job store and (if reachable) the chain. A chain problem is recorded in ``chain_error``, so that
    the caller can still show the jobs before reporting it."""
    deployment = Deployment.load(settings.chain.deployment)
    counts = {state.value: n for state, n in store.counts().items()}
    spent = gas_spent(store)
    head: int | None = None
    cursor: int | None = None
    chain_error: ChrysalisError | None = None
    try:
        head = chain_head(settings, deployment)
    except ChrysalisError as exc:
        chain_error = exc
    cursor = cursor_block(store, deployment)
    return StatusReport(
        database=store.db.url,
        collection=deployment.address(),
        chain_id=deployment.chain_id,
        chain_head=head,
        cursor_block=cursor,
        jobs=counts,
        last_error=last_error(store),
        gas_spent=spent.gas,
        fulfilment_txs=spent.transactions,
        waiting=store.waiting_counts(),
        chain_error=chain_error,
        agents=agents(store, deployment),
    )


def agents(store: SqlJobStore, deployment: Deployment) -> list[AgentInfo]:
    """Every agent that works this database, with the jobs each holds and its roles for this collection."""
    from agent.store.roles import list_agents

    return list_agents(store.db, scope=f"{deployment.chain_id}:{deployment.address().lower()}:")


def chain_head(settings: Settings, deployment: Deployment) -> int:
    """The node's head, after checking that it serves the deployment (chain id, contract code)."""
    from agent.pipeline.holder import check_deployment, command_rpc

    rpc = command_rpc(settings, first_contact=True)  # a few reads: the short budget throughout
    check_deployment(rpc, deployment, settings.chain.rpc_url, str(settings.chain.deployment))
    return rpc.block_number()


def cursor_block(store: SqlJobStore, deployment: Deployment) -> int | None:
    """The watcher's last handled block for this collection (its stream is ``<chain id>:<address>``)."""
    from agent.watch.cursor_sql import SqlCursorStore  # the watch package loads web3: only when asked

    state = SqlCursorStore(store.db).load(f"{deployment.chain_id}:{deployment.address().lower()}")
    return state.tip.number if state is not None else None


def last_error(store: JobStore) -> str | None:
    failed = store.list_jobs(state=JobState.FAILED, limit=1, newest_first=True)
    if failed:
        return f"job {failed[0].id}: {failed[0].reason}"
    retrying = [
        j for j in store.list_jobs(state=JobState.QUEUED, limit=_PAGE, newest_first=True) if j.last_error
    ]
    if retrying:
        newest = max(retrying, key=lambda j: j.updated_at)
        return f"job {newest.id} (retrying): {newest.last_error}"
    return None


def iter_jobs(
    store: JobStore,
    *,
    states: Sequence[JobState | str] | None = None,
    kind: JobKind | str | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[Job]:
    """Jobs in ``states`` (every state when None) of ``kind``, by id (newest first if asked), at most ``limit``."""
    found: dict[int, Job] = {}
    wanted: Sequence[JobState | str | None] = states or [None]
    for state in wanted:
        offset = 0
        while True:
            page = store.list_jobs(
                state=state, kind=kind, limit=_PAGE, offset=offset, newest_first=newest_first
            )
            found.update((job.id, job) for job in page)
            offset += len(page)
            if len(page) < _PAGE or (limit is not None and offset >= limit):
                break
    jobs = sorted(found.values(), key=lambda j: j.id, reverse=newest_first)
    return jobs[:limit] if limit is not None else jobs


def parse_states(values: Sequence[str] | None) -> list[JobState] | None:
    """``--state`` values (repeatable, or comma-separated) as job states; a clear error for an unknown one."""
    if not values:
        return None
    states: list[JobState] = []
    for value in values:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            try:
                states.append(JobState(name))
            except ValueError:
                raise ConfigError(
                    f"unknown job state {name!r}",
                    hint="use one of: " + ", ".join(s.value for s in JobState),
                ) from None
    return states or None


def job_summary(job: Job) -> dict[str, Any]:
    """One job as a JSON-ready row (what ``chrysalis jobs --json`` prints)."""
    payload = dict(job.payload)
    request_id = payload.get("requestId", payload.get("request_id"))
    token_id = payload.get("tokenId", payload.get("token_id"))
    tx_hash, gas = sent_transaction(job.result)
    return {
        "id": job.id,
        "key": job.key,
        "kind": job.kind.value,
        "state": job.state.value,
        "stage": job.stage.value if job.stage else None,
        "token_id": token_id,
        "request_id": hex(int(request_id)) if isinstance(request_id, int) else request_id,
        "block_number": job.block_number,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "run_after": job.run_after.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "worker_id": job.worker_id,
        "last_error": job.last_error,
        "reason": job.reason,
        "tx_hash": tx_hash,
        "gas_used": gas if tx_hash else None,
    }
