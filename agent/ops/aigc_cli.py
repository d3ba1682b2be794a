"""``chrysalis aigc record``: record the tokens' current versions on-chain for ERC-7007 (``addAigcData``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agent.clicontext import current_settings

aigc_app = typer.Typer(help="ERC-7007 (verifiable AI-generated content): record token versions on-chain.")


@aigc_app.callback()
def _aigc() -> None:
    """ERC-7007 (verifiable AI-generated content): record token versions on-chain."""


@aigc_app.command("record")
def record_command(
    tokens: Annotated[
        str | None,
        typer.Option(
            "--tokens",
            help="Token ids and ranges, e.g. 1-5,8 (default: every minted token).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Record each token's current version (addAigcData, from the agent key) so that the collection's ERC-7007
    verify(prompt, aigcData, proof) is true for it. Versions already recorded and tokens without metadata are
    skipped: a second run sends nothing."""
    from agent.ops.aigc import AigcOutcome, record_aigc

    def say(outcome: AigcOutcome) -> None:
        typer.echo(outcome.line())

    report = record_aigc(current_settings(), tokens, on_token=None if as_json else say)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    typer.echo(report.summary())
