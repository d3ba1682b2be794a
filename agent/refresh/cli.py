"""``chrysalis refresh``: queue (or run) a refresh, and see what refreshes did.

::

    chrysalis refresh                      # every token; the running agent (`chrysalis run`) picks it up
    chrysalis refresh --tokens 1,2,5-9     # some tokens
    chrysalis refresh --tokens 7 --force   # regenerate even if its traits did not change
    chrysalis refresh --now                # run it in this process until it finishes or a budget pauses it
    chrysalis refresh status               # recent refreshes, schedules, price baselines, gas today
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent.clicontext import current_context, current_settings

if TYPE_CHECKING:
    from agent.settings import Settings

refresh_app = typer.Typer(
    help="Refresh tokens' metadata: re-run the rules at one block, regenerate what changed, write it on-chain.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def _console() -> Console:
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


@refresh_app.callback(invoke_without_command=True)
def refresh(
    ctx: typer.Context,
    tokens: Annotated[
        str, typer.Option("--tokens", "-t", help="Token ids and ranges, e.g. 1,2,5-9 (default: all).")
    ] = "all",
    force: Annotated[
        bool, typer.Option("--force", help="Regenerate the tokens even if the rules give the same traits.")
    ] = False,
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Run the refresh in this process (with the agent's settings) until it finishes or a budget "
            "pauses it, instead of leaving it to the running agent.",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds --now may take.")] = 3600.0,
) -> None:
    """Queue a refresh of the collection (or of --tokens) for the agent; --now runs it here."""
    if ctx.invoked_subcommand is not None:
        return
    from agent.deployment import Deployment
    from agent.refresh.store import RefreshStore
    from agent.refresh.triggers import queue_manual
    from agent.store import open_job_store
    from agent.tokens import format_tokens, parse_tokens

    ids = parse_tokens(tokens)
    settings = current_settings()
    out = _console()
    if ids is not None:
        _require_existing(settings, ids)
    if now:
        _run_now(settings, ids, force, timeout, out)
        return
    deployment = Deployment.load(settings.chain.deployment)
    with open_job_store(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms) as store:
        job, _ = queue_manual(store, RefreshStore(store.db), deployment.chain_id, ids, force=force)
    out.print(
        f"queued refresh job {job.id} of tokens {format_tokens(ids)}{' (forced)' if force else ''}; the running "
        "agent (`chrysalis run`) picks it up between evolutions; `chrysalis refresh status` shows its progress"
    )


def _require_existing(settings: Settings, ids: list[int]) -> None:
    """Refuse ids the collection does not have (as the studio's 404 does), before anything is queued."""
    from agent.pipeline.holder import Collection
    from agent.tokens import require_existing

    collection = Collection.connect(settings)
    require_existing(ids, int(collection.view("totalMinted")), lambda i: bool(collection.view("exists", i)))


def _run_now(settings: Settings, ids: list[int] | None, force: bool, timeout: float, out: Console) -> None:
    from agent.jobs import JobState
    from agent.pipeline.errors import AgentTimeoutError
    from agent.refresh.service import queue_manual
    from agent.refresh.store import RefreshStore
    from agent.tokens import format_tokens

    with current_context().build_agent(settings) as agent:
        refreshes = RefreshStore(agent.db)
        job, _ = queue_manual(agent.store, refreshes, agent.deployment.chain_id, ids, force=force)
        out.print(f"refresh job {job.id} of tokens {format_tokens(ids)}: running here")
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        agent.worker.stop = stop
        while True:
            agent.poll_once()
            worked = agent.work_once()
            job = agent.store.get(job.id)
            run = refreshes.run(job.id)
            if job.state.terminal:
                break
            if job.state == JobState.QUEUED and run is not None and run.paused_until is not None:
                out.print(
                    f"[yellow]paused[/] until {run.paused_until:%Y-%m-%d %H:%M:%S} UTC by its {run.pause_reason} "
                    f"budget: {run.pause_detail}\nits remaining work is recorded; `chrysalis run` resumes it then"
                )
                return
            if time.monotonic() > deadline:
                raise AgentTimeoutError(timeout, [f"refresh job {job.id}: {job.state.value}"])
            if not worked:
                time.sleep(0.1)
        if job.state != JobState.CONFIRMED:
            from agent.errors import PermanentError

            raise PermanentError(
                f"refresh job {job.id} ended {job.state.value}: {job.reason}",
                hint="fix what the reason names, then `chrysalis retry JOB` resumes it where it stopped",
            )
        result = dict(job.result or {})
        counts = ", ".join(f"{n} {s}" for s, n in (result.get("counts") or {}).items()) or "no tokens"
        out.print(
            f"[green]done[/]: block #{result.get('block_number')}: {counts}; "
            f"{len(result.get('transactions') or [])} transaction(s), {result.get('gas_used', 0):,} gas"
        )


@refresh_app.command("status")
def status(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most refreshes shown.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Recent refreshes (tokens by outcome, gas, pauses), cron schedules, price baselines and gas today."""
    from agent.pipeline.status import open_store
    from agent.refresh.status import gather
    from agent.refresh.store import RefreshStore

    settings = current_settings()
    with open_store(settings) as store:
        report = gather(settings, store, RefreshStore(store.db), limit=limit)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    out = _console()
    table = Table(title="refreshes (newest first)")
    for column in ("job", "trigger", "state", "block", "tokens", "outcomes", "txs", "gas", "paused"):
        table.add_column(column, overflow="fold")
    for r in report["refreshes"]:
        table.add_row(
            str(r["job_id"]),
            r["trigger"] + (f" {r['policy']}" if r.get("policy") else ""),
            r["state"],
            str(r["block_number"] if r["block_number"] is not None else "-"),
            str(r["tokens"]),
            ", ".join(f"{n} {s}" for s, n in r["counts"].items()) or "-",
            str(r["transactions"]),
            f"{r['gas_used']:,}",
            f"until {r['paused_until'][:19]} ({r['pause_reason']})" if r.get("paused_until") else "",
        )
    out.print(table if report["refreshes"] else "no refreshes yet")
    budget = report["budget"]
    cap = f"{budget['max_gas_per_day']:,}" if budget["max_gas_per_day"] else "no cap"
    out.print(f"gas today (UTC): {budget['gas_today']:,} of {cap}")
    for name, when in report["schedules"].items():
        out.print(f"schedule {name}: next at {when or 'never'}")
    for feed, base in report["baselines"].items():
        out.print(f"price trigger {feed}: baseline {base['answer']} at block #{base['block']}")
