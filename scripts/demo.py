"""The Chrysalis demo: ``make demo`` (``ape run demo --network ethereum:local:foundry``).

Ape starts a throwaway anvil (the ``.venv/bin/anvil`` shim adds ``--prune-history``) and stops it on exit.
The demo deploys the collection, mints to three holders, runs the agent (``chrysalis run``), has the holders
request evolutions and fuse while the price feed moves, waits until every request is fulfilled, writes
``demo-out/index.html``, and, at a terminal, ends with the studio (gallery, timelines, provenance) serving the
collection until Ctrl-C; with no terminal on standard input (or ``--no-serve``) it prints its results and exits 0.
``make demo`` runs it under :mod:`agent.ops.supervise`, so no process it started outlives it. The steps are in
:mod:`agent.ops.demo`.
"""

from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path

import click
from ape.cli import ConnectedProviderCommand, ape_cli_context


@click.command(cls=ConnectedProviderCommand, short_help="Run the Chrysalis demo on a local chain")
@ape_cli_context()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Output directory (recreated on each run).",
)
@click.option(
    "--timeout",
    type=float,
    default=900.0,
    show_default=True,
    help="Seconds to wait for each round of requests to be fulfilled.",
)
@click.option(
    "--lore-model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A local transformers causal LM directory for the lore instead of the shipped SmolLM2.",
)
@click.option(
    "--image-model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A sprite-model directory (e.g. a `chrysalis model train` output) instead of the shipped sprites32.",
)
@click.option(
    "--image-runtime",
    type=click.Choice(["portable", "torch"]),
    default="portable",
    show_default=True,
    help="portable: images made by the pinned onnxruntime-web build under Node.js, which every browser replays "
    "bit for bit (each token's animation_url opens the viewer); torch: the batched torch runtime.",
)
@click.option(
    "--lore-max-new-tokens", type=click.IntRange(min=8), default=None, help="Token budget of each lore."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch CPU threads of the agent's models. One thread gives the canonical (verifiable) receipts; on a busy "
    "2-core machine the whole demo took 56 s with one and 7 min with two.",
)
@click.option(
    "--studio-port",
    type=click.IntRange(min=0, max=65535),
    default=8090,
    show_default=True,
    help="Port of the studio the demo ends with (0: any free port).",
)
@click.option(
    "--serve/--no-serve",
    default=None,
    help="End with the studio serving the collection until Ctrl-C (default: only when standard input is a "
    "terminal; otherwise the demo prints its results and exits).",
)
@click.option(
    "--serve-seconds",
    type=click.FloatRange(min=0),
    default=None,
    help="Serve the studio this long, then exit (0: don't serve).",
)
def cli(
    cli_ctx,
    network,
    out,
    timeout,
    lore_model,
    image_model,
    image_runtime,
    lore_max_new_tokens,
    threads,
    studio_port,
    serve,
    serve_seconds,
):
    """Deploy, mint, run the agent, evolve and fuse tokens, and write a browsable page of the results."""
    from rich.console import Console

    from agent.errors import ChrysalisError
    from agent.ops.demo import run_demo

    cli_ctx.logger.set_level("WARNING")  # the demo narrates; Ape's per-transaction lines would drown it
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))  # piped to a file: room for CIDs on one line
    serve_by_default = serve is None and serve_seconds is None
    if serve is None:
        serve = serve_seconds != 0 and (serve_seconds is not None or sys.stdin.isatty())
    elif serve_seconds == 0:
        serve = False
    # Ape's own handlers stop anvil and call sys.exit() wherever the signal lands (even inside a __del__, where
    # the exit is ignored and the demo then fails against a dead chain). Ours unwind the demo instead: the agent
    # is stopped by Demo.run's `finally`, the studio by serve_studio's, and anvil by Ape as the process exits.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, functools.partial(_interrupt, received))
    try:
        # Greedy lore is the same for tokens with the same traits; seeded sampling (the token's seed, recorded in
        # the receipt, so still reproducible) gives each token its own.
        models = {
            "lore_do_sample": True,
            "lore_max_new_tokens": lore_max_new_tokens,
            "threads": threads,
            "image_runtime": image_runtime,
        }
        if lore_model is not None:
            models.update(lore_backend="transformers", lore_model=str(lore_model.resolve()))
        if image_model is not None:
            models.update(image_model=str(image_model.resolve()))
        result = run_demo(out, timeout_s=timeout, console=console, models=models)
        if result.agent_exit != 0:
            raise SystemExit(1)
        if serve:
            from agent.ops.demo import serve_studio

            serve_studio(
                out, port=studio_port, seconds=serve_seconds, console=console, viewers=result.viewers
            )
        elif serve_by_default:
            console.print(
                "standard input is not a terminal, so the studio is not served (`make demo SERVE=1` serves it)",
                highlight=False,
            )
    except ChrysalisError as exc:
        from rich.markup import escape  # messages name settings sections such as [gates]

        console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        name = signal.Signals(received[0]).name if received else "SIGINT"
        console.print(
            f"[yellow]interrupted ({name}):[/] the agent is stopped; the local chain stops as the demo exits"
        )
        raise SystemExit(128 + (received[0] if received else signal.SIGINT)) from None


def _interrupt(received: list[int], signum: int, _frame: object) -> None:
    """The first SIGINT or SIGTERM unwinds the demo; later ones are ignored while it stops what it started."""
    received.append(signum)
    if len(received) == 1:
        raise KeyboardInterrupt
