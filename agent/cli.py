"""The ``chrysalis`` command line.

Each layer contributes a typer sub-app (``chrysalis ipfs ...``, ``chrysalis model ...``). Heavy libraries
(torch, diffusers, web3) are imported inside commands so ``chrysalis --help`` stays instant.

The root callback puts a :class:`~agent.clicontext.CliContext` on the context (``ctx.obj``); commands read their
settings through :func:`agent.clicontext.current_settings`, loaded once, when first needed. Nothing is written to
the environment.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from agent import __version__
from agent.app import build_agent
from agent.clicontext import CliContext, activate, require_config_file
from agent.clihelp import hide_flag_types
from agent.errors import ChrysalisError, exit_code_of

hide_flag_types()  # no `<bool>` type next to on/off flags in --help
app = typer.Typer(
    name="chrysalis",
    help="Chrysalis: living NFT collections that evolve on-chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, soft_wrap=True)  # an error is one line, never cut at 80 columns


DEBUG_ENV = "CHRYSALIS_DEBUG"
"""Set to 1 (or pass ``--debug``) to see the traceback of an unexpected error."""

_debug = False


def _show_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Settings file (default: $CHRYSALIS_CONFIG, else ./chrysalis.toml if it exists).",
        show_default=False,
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        help=f"Show the traceback of an unexpected error (also ${DEBUG_ENV}=1).",
        show_default=False,
    ),
    _version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print the Chrysalis version and exit.",
        show_default=False,
    ),
) -> None:
    """Chrysalis: living NFT collections that evolve on-chain."""
    global _debug
    _debug = _debug or debug
    if config is not None:
        require_config_file(config)
    activate(ctx, CliContext(config_path=config, agent_factory=build_agent))


@app.command()
def version() -> None:
    """Print the Chrysalis version."""
    typer.echo(__version__)


def _register_subapps() -> None:
    """Mount each layer's sub-app. Kept in one place so the command tree reads top-down."""
    # (layers add their `app.add_typer(...)` lines here)
    from agent.generate.cli import model_app

    app.add_typer(model_app, name="model")
    from agent.ipfs.cli import ipfs_app

    app.add_typer(ipfs_app, name="ipfs")
    from agent.genesis.cli import genesis_command

    app.command(name="genesis")(genesis_command)
    from agent.ops.cli import register as register_ops

    register_ops(app)  # init, run, status, jobs, retry, evolve, fuse
    from agent.studio.cli import review_app, studio_command

    app.command(name="studio")(studio_command)
    from agent.verify.cli import verify_command

    app.command(name="verify")(verify_command)
    app.add_typer(review_app, name="review")
    from agent.refresh.cli import refresh_app

    app.add_typer(refresh_app, name="refresh")
    from agent.ops.rules_cli import rules_app

    app.add_typer(rules_app, name="rules")
    from agent.ops.aigc_cli import aigc_app

    app.add_typer(aigc_app, name="aigc")
    from agent.datasets.cli import dataset_app

    app.add_typer(dataset_app, name="dataset")
    from agent.ops.renderer_cli import renderer_app

    app.add_typer(renderer_app, name="renderer")
    from agent.ops.agent_cli import agent_app

    app.add_typer(agent_app, name="agent")


_register_subapps()


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error becomes one ``error:`` line and a ``hint:``, never a traceback.

    A :class:`ChrysalisError` exits with its ``exit_code`` (1 unless a command says otherwise, e.g. ``verify``'s
    3); any other exception is a bug: it is shown the same way (exit 1), with its traceback only under
    ``--debug`` or ``$CHRYSALIS_DEBUG=1``. Ctrl-C exits 130 without a message.
    """
    global _debug
    _debug = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Abort:  # Ctrl-C (or end of input) at a prompt
        sys.exit(130)
    except TyperException as exc:  # typer's own checks of the command line (its click's UsageError and kin)
        _print_usage_error(exc)
    except ChrysalisError as exc:
        if _debug:
            traceback.print_exc()
        _print_error(exc.message, exc.hint)
        sys.exit(exit_code_of(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug, shown as one line instead of a traceback
        if _debug:
            traceback.print_exc()
        known = explain(exc)
        if known is not None:
            _print_error(known.message, known.hint)
        else:
            _print_error(
                _one_line(exc),
                f"this is a bug in Chrysalis: rerun with --debug (or {DEBUG_ENV}=1) for the traceback and report "
                "it with the command you ran",
            )
        sys.exit(exit_code_of(exc))
    if type(code) is int and code:  # typer.Exit(code) (click returns it outside standalone mode)
        sys.exit(code)


def _print_usage_error(exc: TyperException) -> NoReturn:
    """A bad option, argument or command, said the way every error is (exit 2, as click does)."""
    code = int(getattr(exc, "exit_code", 2))
    if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already: nothing to add
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "chrysalis"
        _print_error(
            exc.format_message() if hasattr(exc, "format_message") else str(exc), f"see `{where} --help`"
        )
    sys.exit(code)


def _print_error(message: str, hint: str | None) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if hint:
        err_console.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, URLs redacted (a provider's API key may be in one), cut short."""
    from agent.redact import redact_text

    text = " ".join(str(exc).split()) or "(no message)"
    text = redact_text(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}"


def explain(exc: BaseException) -> ChrysalisError | None:
    """A known third-party failure that reached the top, as the error a user can act on (else ``None``)."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.DatabaseError):
        orig = getattr(exc, "orig", None)
        if type(orig).__module__ == "sqlite3" and type(orig).__name__ == "DatabaseError":
            from agent.store.db import corrupt_sqlite_error

            return corrupt_sqlite_error("the database at database.url", orig)
    return None
