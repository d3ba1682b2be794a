"""``chrysalis studio`` and ``chrysalis review list|approve|reject|curator``.

``chrysalis verify`` lives in :mod:`agent.verify.cli` (the studio's Verify button takes the same path).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.clicontext import current_settings
from agent.errors import ConfigError

if TYPE_CHECKING:  # the commands import what they use when they run (a fast `chrysalis --help`)
    from agent.review import ReviewConflictError, ReviewStore

console = Console()

review_app = typer.Typer(
    help="The review queue from the terminal: list, approve, reject; add curator logins.",
    no_args_is_help=True,
)

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as", help="Curator name recorded with the decision (default: $USER).", show_default=False
    ),
]


def _curator_name(name: str | None) -> str:
    name = name or os.environ.get("USER") or os.environ.get("USERNAME")
    if not name:
        raise ConfigError("no curator name", hint="pass --as NAME")
    return name


def studio_command(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: studio.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: studio.port).")] = None,
) -> None:
    """Serve the studio: gallery, token timelines, provenance and Verify, review queue, operations."""
    from agent.http import listen_socket
    from agent.studio.app import serve
    from agent.studio.service import Studio

    settings = current_settings()
    host = host or settings.studio.host
    port = settings.studio.port if port is None else port
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port", hint="use 0..65535 (0: any free port)")
    sock = listen_socket(host, port)  # a busy port: error + hint now, not uvicorn's [Errno 98] later
    try:
        studio = Studio.from_settings(settings)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    console.print(
        f"Chrysalis Studio on [cyan]http://{host}:{port}[/] (review mode {'on' if studio.review_enabled else 'off'})"
    )
    if host in ("0.0.0.0", "::") and settings.studio.allowed_hosts is None:
        console.print(
            f"[yellow]listening on {host}, but only localhost, 127.0.0.1 and [::1] are answered: list the names "
            "visitors use in studio.allowed_hosts[/]",
            highlight=False,
        )
    if not studio.credentials.can_log_in and not studio.credentials.has_token:
        console.print(
            f"[yellow]no login is configured: read-only until {settings.studio.password_env} is set[/]",
            highlight=False,
        )
    try:
        serve(studio, host=host, sock=sock)
    finally:
        studio.close()


def _store() -> ReviewStore:
    from agent.pipeline.status import require_database
    from agent.review import ReviewStore
    from agent.store import Database

    settings = current_settings()
    require_database(settings)  # like `jobs`: never create an empty database where the agent never ran
    return ReviewStore(
        Database.open(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
    )


@review_app.command("list")
def review_list(
    state: Annotated[str, typer.Option("--state", "-s", help="open, approved, rejected or all.")] = "open",
    kind: Annotated[str | None, typer.Option(help="Only this kind (evolve, refresh, genesis).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most items shown.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List review items (by default the open ones: awaiting review or regenerating)."""
    from agent.review import OPEN_STATES, ReviewState

    choices = {
        "open": OPEN_STATES,
        "approved": [ReviewState.APPROVED],
        "rejected": [ReviewState.REJECTED],
        "all": None,
    }
    if state not in choices:
        raise ConfigError(f"unknown state {state!r}", hint="use open, approved, rejected or all")
    with _store() as store:
        items = store.list_items(states=choices[state], kind=kind, limit=limit)
    if as_json:
        for item in items:
            typer.echo(json.dumps(item.to_json(), default=str))
        return
    table = Table(title=f"review items ({state})")
    for column in ("id", "token", "stage", "kind", "state", "rev", "seed", "lore", "decided"):
        table.add_column(column, overflow="fold")
    for item in items:
        c = item.candidate
        lore = c.lore if len(c.lore) <= 60 else c.lore[:57] + "..."
        decided = (
            f"{item.decided_by}" + (f": {item.reason}" if item.reason else "") if item.decided_by else ""
        )
        table.add_row(
            str(item.id), str(item.token_id if item.token_id is not None else item.key), str(item.stage), item.kind,
            item.state.value, str(item.revision), f"reroll {c.reroll}" if c.reroll else "request", lore, decided,
        )  # fmt: skip
    console.print(table)
    if not items:
        console.print("[dim]nothing to review[/]")


@review_app.command("approve")
def review_approve(
    ids: Annotated[list[int] | None, typer.Argument(help="Review ids (see `chrysalis review list`).")] = None,
    all_genesis: Annotated[
        bool, typer.Option("--all-genesis", help="Approve every genesis item awaiting review.")
    ] = False,
    as_: AsOption = None,
) -> None:
    """Approve candidates; the agent then publishes them, recording who approved in the metadata."""
    by = _curator_name(as_)
    with _store() as store:
        if all_genesis:
            done = store.approve_all(by, kind="genesis")
            conflicts: list[ReviewConflictError] = []
        elif ids:
            done, conflicts = store.approve_many(ids, by)
        else:
            raise ConfigError("nothing to approve", hint="pass review ids, or --all-genesis")
    for item in done:
        console.print(f"approved #{item.id} {item.label} stage {item.stage} as {by}", highlight=False)
    for exc in conflicts:
        console.print(f"[red]not approved:[/] {escape(exc.message)}", highlight=False)
    if not done and all_genesis:
        console.print("[dim]no genesis item awaits review[/]")
    if conflicts:
        raise typer.Exit(1)


@review_app.command("reject")
def review_reject(
    review_id: Annotated[int, typer.Argument(help="Review id.")],
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why (required; it becomes the job's reason).")
    ],
    as_: AsOption = None,
) -> None:
    """Reject a candidate with a reason; the agent ends its job."""
    with _store() as store:
        item = store.reject(review_id, _curator_name(as_), reason)
    console.print(f"rejected #{item.id} {item.label}: {item.reason}", highlight=False)


@review_app.command("curator")
def review_curator(
    name: Annotated[str, typer.Argument(help="Login name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Add (or replace) a curator login in studio.curators_file (its password is stored as an scrypt hash)."""
    from agent.studio.auth import add_curator

    settings = current_settings()
    path = settings.studio.curators_file
    if path is None:
        raise ConfigError(
            "studio.curators_file is not set",
            hint='set it in chrysalis.toml ([studio] curators_file = "...")',
        )
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the passwords differ", hint="type the same password twice")
    add_curator(Path(path), name, password)
    console.print(
        f"curator {name} written to {path} (a running studio reads it again by itself)", highlight=False
    )
