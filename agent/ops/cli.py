"""Operator and holder commands: ``chrysalis init | run | status | doctor | jobs | retry | evolve | fuse``.

They are mounted on the root app by :func:`register` (see :mod:`agent.cli`). Every command reads the settings
(``--config``, ``$CHRYSALIS_CONFIG`` or ./chrysalis.toml, then ``CHRYSALIS_*`` env vars) through
:func:`agent.clicontext.current_settings`; errors are
:class:`~agent.errors.ChrysalisError` s, which ``chrysalis`` prints as one message and a hint.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from agent.clicontext import AgentFactory, current_context, current_settings
from agent.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from agent.pipeline.agent import Agent
    from agent.settings import Settings
    from agent.store.roles import AgentInfo


class _Out:
    """stdout through rich, made when first used: a terminal's width, or 160 columns when piped to a file."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=160)
        console.print(*args, **kwargs)


out = _Out()

DEV_CREDENTIALS_DIR = Path(".chrysalis/credentials")
"""Where ``chrysalis init --dev-credentials`` puts development credentials when given no directory."""

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
FromOption = Annotated[
    str,
    typer.Option(
        "--from",
        help="The holder's account: a development account index on a local chain (0, dev:2), a V3 keystore "
        "file, or an Ape account alias (ape:alice).",
        show_default=False,
    ),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="File holding the keystore password (default: $CHRYSALIS_KEYSTORE_PASSWORD).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add the commands to the root ``chrysalis`` app."""
    app.command("init")(init)
    app.command("run")(run)
    app.command("status")(status)
    app.command("doctor")(doctor)
    app.command("jobs")(jobs)
    app.command("retry")(retry)
    app.command("evolve")(evolve)
    app.command("fuse")(fuse)
    from agent.ops.deploy_cli import deploy_command, mint_command

    app.command("deploy")(deploy_command)
    app.command("mint")(mint_command)
    from agent.generate.cli import model_app
    from agent.ops.model_cli import fetch_command, publish_command, train_command, verify_training_command

    model_app.command("publish")(publish_command)  # the model group's commands that need IPFS and the chain
    model_app.command("fetch")(fetch_command)
    model_app.command("train")(train_command)
    model_app.command("verify-training")(verify_training_command)


_LOG_LEVELS: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR"]] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
}
"""``--log-level`` values (any case) as ``log.level`` takes them."""


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


# -- init -----------------------------------------------------------------------------------------------------


def init(
    path: Annotated[Path, typer.Argument(help="File (or directory) to write.", show_default=True)] = Path(
        "chrysalis.toml"
    ),
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite an existing file (with --dev-credentials: the credential files only)."
        ),
    ] = False,
    dev_credentials: Annotated[
        bool,
        typer.Option(
            "--dev-credentials",
            help="Also make development C2PA credentials (a local CA and an ES256 signing certificate, keys 0600) "
            "and point \\[credentials] at them: a new config file gets them set; an existing one is never "
            "changed, the lines to add are printed.",
        ),
    ] = False,
    credentials_dir: Annotated[
        Path,
        typer.Option(
            "--credentials-dir",
            metavar="DIR",
            help="Where --dev-credentials writes its files.",
        ),
    ] = DEV_CREDENTIALS_DIR,
) -> None:
    """Write a commented chrysalis.toml with every setting at its default (--dev-credentials: and development
    C2PA credentials)."""
    from agent.ops.config_template import config_file, write_config

    if not dev_credentials:
        written = write_config(path, force=force)
        out.print(f"wrote {written}: every setting at its default, with its description")
        out.print(
            "[dim]edit what you need; `chrysalis status` checks the chain and the database it points at[/]"
        )
        return
    from agent.credentials import create_dev_credentials

    target = config_file(path)
    if not target.parent.is_dir():  # before any file is made
        raise ConfigError(
            f"directory {target.parent} does not exist", hint=f"create it first (mkdir -p {target.parent})"
        )
    creds = create_dev_credentials(credentials_dir, force=force)
    out.print(
        f"made development C2PA credentials in {credentials_dir}: a local CA ({creds.trust_anchors.name}, key "
        f"{creds.ca_key_file.name}) and an ES256 signing certificate ({creds.certificate_chain.name}, key "
        f"{creds.key_file.name}, valid until {creds.not_after:%Y-%m-%d}); keys are mode 0600"
    )
    out.print(
        "[dim]images signed with them validate, but public validators show them as untrusted: only a "
        "certificate from a CA on the C2PA trust list is trusted there[/]"
    )
    if target.exists():
        out.print(f"{target} exists and was left as it is; add these lines to it:\n")
        typer.echo(creds.settings_toml())
        return
    written = write_config(path, values={"credentials": creds.settings()})
    out.print(f"wrote {written}: every setting at its default, \\[credentials] set to the new files")


# -- run ------------------------------------------------------------------------------------------------------


def run(
    worker_id: Annotated[
        str | None,
        typer.Option("--worker-id", help="This worker's id (default: agent.worker_id or host:pid)."),
    ] = None,
    json_logs: Annotated[
        bool | None,
        typer.Option("--json-logs/--text-logs", help="Log JSON lines / readable text (default: log.format)."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: log.level).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", help="Serve /metrics on this port (0: any free one; default metrics.port)."
        ),
    ] = None,
    no_metrics: Annotated[bool, typer.Option("--no-metrics", help="Do not serve /metrics.")] = False,
    live: Annotated[
        bool | None,
        typer.Option("--live/--no-live", help="Live status line (default: on a terminal with text logs)."),
    ] = None,
    rpc_doctor: Annotated[
        bool,
        typer.Option(
            "--doctor/--no-doctor",
            help="Once the agent is up, run the RPC doctor in the background: its gauges go to /metrics, what is "
            "not OK to the log.",
        ),
    ] = True,
) -> None:
    """Run the agent until SIGTERM or Ctrl-C: watch the chain, evolve tokens, serve /metrics."""
    from agent.ops.runner import run_agent

    settings = current_settings()
    if json_logs is not None:
        settings.log.format = "json" if json_logs else "text"
    if log_level is not None:
        level = _LOG_LEVELS.get(log_level.upper())
        if level is None:
            raise ConfigError(f"unknown log level {log_level!r}", hint="use DEBUG, INFO, WARNING or ERROR")
        settings.log.level = level
    if metrics_port is not None:
        if not 0 <= metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {metrics_port} is not a TCP port", hint="use 0..65535")
        settings.metrics.port = metrics_port
    if no_metrics:
        settings.metrics.enabled = False
    _check_collection(settings)
    stop = threading.Event()
    factory = _with_doctor(stop) if rpc_doctor else None
    try:
        code = run_agent(settings, worker_id=worker_id, live=live, agent_factory=factory, stop=stop)
    finally:
        stop.set()  # also ends a doctor still sampling the head
    raise typer.Exit(code)


def _check_collection(settings: Any) -> None:
    """Before anything loads: the node serves the deployment's chain and has its contract (as ``status`` and
    ``evolve`` check). A record that does not load, and a node that cannot be reached yet, are left to the agent
    (which reports the first after the metrics port, and retries and logs the second)."""
    from agent.deployment import Deployment
    from agent.errors import BackendUnavailableError, ChrysalisError
    from agent.pipeline.holder import check_deployment
    from agent.submit.rpc import ChainRpc

    try:
        deployment = Deployment.load(settings.chain.deployment)
    except ChrysalisError:
        return
    rpc = ChainRpc.connect(
        settings.chain.rpc_url, timeout_s=min(settings.chain.rpc_timeout_s, 5.0), retries=0
    )
    try:
        check_deployment(rpc, deployment, settings.chain.rpc_url, str(settings.chain.deployment))
    except BackendUnavailableError:
        pass


def _with_doctor(stop: threading.Event) -> AgentFactory:
    """The command line's agent (:meth:`~agent.clicontext.CliContext.build_agent`), then the RPC doctor on a
    background thread (only once the agent is up, so that a setup error stays the one message ``chrysalis run``
    prints)."""
    build = current_context().build_agent

    def factory(settings: Settings, *, worker_id: str | None = None) -> Agent:
        from agent.ops.doctor import start_background

        agent = build(settings, worker_id=worker_id)
        start_background(settings, stop)
        return agent

    return factory


# -- status / jobs / retry ------------------------------------------------------------------------------------


def status(as_json: JsonOption = False) -> None:
    """Chain head, watcher cursor and lag, jobs by state, gas spent, last error."""
    from agent.errors import ChrysalisError
    from agent.ops.status import gather_status
    from agent.pipeline.status import open_store

    try:
        settings = current_settings()
        with open_store(settings) as store:
            report = gather_status(settings, store)
    except ChrysalisError as exc:
        if as_json:  # a script reading stdout gets JSON either way; the error line still goes to stderr
            _print_json({"error": exc.message, "hint": exc.hint})
        raise
    if as_json:
        _print_json(report.to_json())
    else:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="dim")
        table.add_column()
        table.add_row("collection", f"{report.collection} (chain {report.chain_id})")
        table.add_row("chain head", _or_unknown(report.chain_head))
        table.add_row("cursor", _or_unknown(report.cursor_block, "(nothing handled yet)"))
        table.add_row("lag", _or_unknown(report.lag))
        table.add_row("jobs", "  ".join(f"{state} {n}" for state, n in report.jobs.items()))
        unsettled, stalled = report.waiting.get("unsettled", 0), report.waiting.get("stalled", 0)
        table.add_row(
            "waiting",
            f"{unsettled} confirmed, not final until the watcher passes their block; "
            f"{stalled} fulfilment(s) not mined yet (waiting, not failing)",
        )
        table.add_row("gas spent", f"{report.gas_spent:,} in {report.fulfilment_txs} fulfilment tx(s)")
        table.add_row("last error", report.last_error or "none")
        table.add_row("database", report.database)
        for i, a in enumerate(report.agents):
            table.add_row("agents" if i == 0 else "", _agent_line(a))
        if not report.agents:
            table.add_row("agents", "none has run on this database yet")
        out.print(table)
    if report.chain_error is not None:
        raise report.chain_error


def _agent_line(agent: AgentInfo) -> str:
    """One agent for `chrysalis status`: id, key, last heartbeat, jobs held, roles (or when it stopped)."""
    from datetime import UTC, datetime

    beat = (datetime.now(UTC) - agent.heartbeat_at).total_seconds()
    state = (
        f"stopped {agent.stopped_at:%Y-%m-%d %H:%M:%S}Z"
        if agent.stopped_at
        else f"last beat {beat:.0f} s ago"
    )
    roles = ", ".join(agent.roles) or "no roles"
    return f"{agent.worker_id}  key {agent.signer}  {state}  {agent.jobs_held} job(s) held  {roles}"


def doctor(
    as_json: JsonOption = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=0.0,
            help="Seconds to wait for the head to move (ends early when it does); set it above the block time.",
        ),
    ] = 15.0,
    rpc_url: Annotated[
        str | None,
        typer.Option("--rpc-url", help="Probe this endpoint instead of chain.rpc_url.", show_default=False),
    ] = None,
    secondary: Annotated[
        str | None,
        typer.Option(
            "--secondary",
            help="Cross-check against this endpoint instead of chain.rpc_url_secondary ('' for none).",
            show_default=False,
        ),
    ] = None,
    probe_range: Annotated[
        int,
        typer.Option("--probe-range", min=1, help="eth_getLogs span the range probe starts halving from."),
    ] = 100_000,
    max_lag: Annotated[
        int, typer.Option("--max-lag", min=0, help="Head lag (blocks) between the two RPCs that is still OK.")
    ] = 3,
    pending_address: Annotated[
        str | None,
        typer.Option(
            "--pending-address",
            help="An account with a transaction in the pool: makes the pending-nonce probe conclusive "
            "(default: the deployment's agent account).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check the whole setup: config, rules, the RPC provider(s), contract, roles, database, IPFS, models and
    disk; a line per check (pass / warn / fail / skip) with its fix. Exit 1 when a check fails."""
    from agent.ops.doctor import publish
    from agent.ops.doctor_setup import render_lines, run_setup_doctor

    for name, url in (("--rpc-url", rpc_url), ("--secondary", secondary)):
        if url and not url.lower().startswith(("http://", "https://")):
            raise ConfigError(
                f"{name} {url!r} is not an http:// or https:// URL", hint="give a JSON-RPC HTTP URL"
            )
    if pending_address is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", pending_address):
        raise ConfigError(
            f"--pending-address {pending_address!r} is not an address", hint="give 0x and 40 hex digits"
        )
    cli = current_context()
    report = run_setup_doctor(
        cli.settings,
        settings_file=cli.settings_file,
        rpc_url=rpc_url,
        secondary_url=secondary,
        interval_s=interval,
        probe_range=probe_range,
        max_lag=max_lag,
        pending_address=pending_address,
    )
    if report.rpc is not None:
        publish(report.rpc)
    if as_json:
        _print_json(report.to_json())
    else:
        for line in render_lines(report):
            typer.echo(line)
    if report.failed:
        raise typer.Exit(1)


def _or_unknown(value: int | None, missing: str = "unknown") -> str:
    return missing if value is None else str(value)


def jobs(
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", "-s", help="Only jobs in this state (repeat, or comma-separate, for several)."
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only jobs of this kind (evolve, refresh, ...).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most jobs shown (newest first).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first: state, stage, token, attempts, error."""
    from agent.jobs import JobKind
    from agent.ops.status import iter_jobs, job_summary, parse_states
    from agent.pipeline.status import open_store

    states = parse_states(state)
    if kind is not None and kind not in {k.value for k in JobKind}:
        raise ConfigError(
            f"unknown job kind {kind!r}", hint="use one of: " + ", ".join(k.value for k in JobKind)
        )
    settings = current_settings()
    with open_store(settings) as store:
        rows = [
            job_summary(j) for j in iter_jobs(store, states=states, kind=kind, limit=limit, newest_first=True)
        ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        which = "" if states is None else " " + "/".join(s.value for s in states)
        out.print(f"no{which} jobs")
        return
    table = Table()
    for column in ("id", "kind", "state", "stage", "token", "request", "attempts", "updated", "error / tx"):
        table.add_column(column, overflow="fold")
    colours = {
        "failed": "red",
        "running": "cyan",
        "queued": "yellow",
        "confirmed": "green",
        "cancelled": "dim",
    }
    for row in rows:
        detail = _job_detail(row)
        table.add_row(
            str(row["id"]),
            row["kind"],
            f"[{colours.get(row['state'], '')}]{row['state']}[/]",
            row["stage"] or "-",
            str(row["token_id"] if row["token_id"] is not None else "-"),
            str(row["request_id"] or "-"),
            f"{row['attempts']}/{row['max_attempts']}",
            row["updated_at"][:19].replace("T", " "),
            detail,
        )
    out.print(table)


def _job_detail(row: dict[str, Any]) -> str:
    """The ``error / tx`` cell: why a job failed or was cancelled, the error a queued or running job is retrying
    after, and for a confirmed job its transaction (an error it recovered from is history, not its state;
    ``--json`` keeps ``last_error``)."""
    if row["state"] == "confirmed":
        return row["tx_hash"] or ""
    return row["reason"] or row["last_error"] or row["tx_hash"] or ""


def retry(
    job_id: Annotated[int, typer.Argument(help="The failed job's id (see `chrysalis jobs -s failed`).")],
) -> None:
    """Re-queue a failed job; it resumes after its last recorded stage."""
    from agent.pipeline.status import open_store

    settings = current_settings()
    with open_store(settings) as store:
        job = store.retry(job_id)
    resume = f"after stage {job.stage.value}" if job.stage else "from the start"
    out.print(f"job {job.id} ({job.key}) re-queued; a running agent resumes it {resume}")


# -- holder actions -------------------------------------------------------------------------------------------


def evolve(
    token: Annotated[int, typer.Argument(help="The token to evolve.")],
    account: FromOption,
    password_file: PasswordFileOption = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the agent fulfils the request, then show the token.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds --wait waits.")] = 300.0,
    precheck: Annotated[
        bool,
        typer.Option(
            "--precheck/--no-precheck", help="Check ownership, pending request and pause before sending."
        ),
    ] = True,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate/--no-simulate",
            help="Simulate the transaction (eth_call) first and send it only if it would succeed; "
            "--no-simulate sends it unchecked and needs --gas.",
        ),
    ] = True,
    legacy_dry_run: Annotated[
        bool | None, typer.Option("--dry-run/--no-dry-run", hidden=True, help="Deprecated: --simulate.")
    ] = None,
    gas: Annotated[
        int | None, typer.Option("--gas", min=21_000, help="Gas limit (default: estimated).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Open an evolution request for TOKEN, paying the collection's fee from a local account."""
    if legacy_dry_run is not None:  # the old name: it always meant "simulate first", never "do not send"
        typer.echo("note: --dry-run/--no-dry-run is now --simulate/--no-simulate", err=True)
        simulate = legacy_dry_run
    _holder_action(
        "evolve", token, None, account, password_file, wait, timeout, precheck, simulate, gas, as_json
    )


def fuse(
    keep: Annotated[int, typer.Argument(help="The token that evolves.")],
    burn: Annotated[int, typer.Argument(help="The token burnt to evolve it.")],
    account: FromOption,
    password_file: PasswordFileOption = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the agent fulfils the request, then show the token.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds --wait waits.")] = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Burn BURN to open an evolution request for KEEP (both held by the account)."""
    _holder_action("fuse", keep, burn, account, password_file, wait, timeout, True, True, None, as_json)


def _holder_action(
    action: str,
    token: int,
    burn: int | None,
    account: str,
    password_file: Path | None,
    wait: bool,
    timeout: float,
    precheck: bool,
    dry_run: bool,
    gas: int | None,
    as_json: bool,
) -> None:
    from agent.ops.accounts import load_account
    from agent.pipeline.holder import Collection, format_eth

    settings = current_settings()
    collection = Collection.connect(settings)
    signer = load_account(
        account,
        chain_id=collection.chain_id,
        password_file=password_file or settings.signer.password_file,
        password_env=settings.signer.password_env,
    )
    if burn is None:
        opened = collection.request_evolution(signer, token, precheck=precheck, dry_run=dry_run, gas=gas)
    else:
        opened = collection.fuse(signer, token, burn)
    result: dict[str, Any] = {"request": opened.to_json()}
    if not as_json:
        what = (
            f"fused token {burn} into token {token}"
            if burn is not None
            else f"requested evolution of token {token}"
        )
        out.print(f"{what} from {signer.address} ({signer.source})")
        out.print(f"  request  {opened.request_id:#x}  (stage {opened.stage} -> {opened.stage + 1})")
        out.print(f"  tx       {opened.tx_hash}  (block {opened.block_number}, gas {opened.gas_used:,})")
        out.print(f"  fee      {format_eth(opened.fee_wei)} (escrowed until the agent fulfils it)")
    if wait:
        if not as_json:
            out.print(f"[dim]waiting up to {timeout:g} s for the agent to fulfil it...[/]")
        from agent.ops.follow import wait_following

        view = wait_following(collection, settings, opened.request_id, timeout_s=timeout)
        result["token"] = {"token_id": view.token_id, "stage": view.stage, "token_uri": view.token_uri}
        if not as_json:
            out.print(f"token {view.token_id} is now at stage {view.stage}: {view.token_uri}")
    if as_json:
        _print_json(result)
    elif action == "evolve" and not wait:
        out.print(
            "[dim]the running agent (`chrysalis run`) fulfils it; `chrysalis jobs` shows its progress[/]"
        )
