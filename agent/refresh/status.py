"""What ``chrysalis refresh status`` reports, read from the agent's database only (no chain access)."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from agent.jobs import JobKind, JobStore
from agent.refresh.schedule import stored_schedules
from agent.refresh.store import RefreshStore
from agent.settings import Settings


def gather(
    settings: Settings, store: JobStore, refreshes: RefreshStore, *, limit: int = 10
) -> dict[str, Any]:
    """Recent refresh jobs with their runs' counts, the gas budget today, schedules and price baselines.

    Args:
        settings: The agent's settings (budgets, the scheduler's table).
        store: The job store.
        refreshes: The refresh tables, on the same database.
        limit: Most refreshes listed.
    """
    rows = []
    for job in store.list_jobs(kind=JobKind.REFRESH, newest_first=True, limit=limit):
        run = refreshes.run(job.id)
        counts = {s.value: n for s, n in refreshes.counts(job.id).items() if n} if run else {}
        txs = refreshes.txs(job.id) if run else []
        rows.append(
            {
                "job_id": job.id,
                "trigger": run.trigger
                if run
                else str(job.payload.get("trigger") or job.payload.get("source") or "manual"),
                "policy": run.policy if run else job.payload.get("policy"),
                "state": job.state.value,
                "block_number": run.block_number if run else None,
                "tokens": sum(counts.values())
                if run
                else job.payload.get("tokens", job.payload.get("token_id")),
                "counts": counts,
                "transactions": sum(1 for t in txs if t.state == "confirmed"),
                "gas_used": sum(t.gas_used or 0 for t in txs),
                "paused_until": run.paused_until.isoformat() if run and run.paused_until else None,
                "pause_reason": run.pause_reason if run else None,
                "pause_detail": run.pause_detail if run else None,
                "reason": job.reason or job.last_error,
            }
        )
    now = refreshes.clock()
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    baselines = {
        feed: {"answer": answer, "block": block} for feed, (answer, block) in refreshes.baselines().items()
    }
    return {
        "refreshes": rows,
        "budget": {
            "gas_today": refreshes.gas_between(start, start + timedelta(days=1)),
            "max_gas_per_day": settings.refresh.max_gas_per_day,
            "max_tokens": settings.refresh.max_tokens,
            "max_fee_per_gas_gwei": settings.refresh.max_fee_per_gas_gwei,
        },
        "schedules": {
            name: (when.isoformat() if when else None)
            for name, when in stored_schedules(refreshes.db, settings.refresh.scheduler_table).items()
        },
        "baselines": baselines,
    }
