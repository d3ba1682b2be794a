"""The ``chrysalis`` command line.

Each layer contributes a typer sub-app (``chrysalis ipfs ...``, ``chrysalis model ...``). Heavy libraries
(torch, diffusers, web3) are imported inside commands so ``chrysalis --help`` stays instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from agent import __version__
from agent.errors import ChrysalisError, ConfigError

app = typer.Typer(
    name="chrysalis",
    help="Chrysalis: living NFT collections that evolve on-chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@app.callback()
def _root(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Settings file (default: $CHRYSALIS_CONFIG, else ./chrysalis.toml if it exists).",
        show_default=False,
    ),
) -> None:
    """Chrysalis: living NFT collections that evolve on-chain."""
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file {config} does not exist", hint="write one with `chrysalis init`")
        os.environ["CHRYSALIS_CONFIG"] = str(config)


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
    from agent.studio.cli import review_app, studio_command, verify_command

    app.command(name="studio")(studio_command)
    app.command(name="verify")(verify_command)
    app.add_typer(review_app, name="review")
    from agent.refresh.cli import refresh_app

    app.add_typer(refresh_app, name="refresh")


_register_subapps()


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns Chrysalis errors into one clear message and exit code 1, never a traceback."""
    try:
        app(args=argv)
    except ChrysalisError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        sys.exit(1)
