"""``chrysalis rules check [FILE]``: validate a rules file against the configured oracles, without a node.
``chrysalis rules export [FILE] [--out FILE]``: the rules as ``chrysalis-rules/1`` JSON for ``renderer/rules.js``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.clicontext import current_settings

rules_app = typer.Typer(help="Evolution rules: check a rules file against the configured oracles.")


@rules_app.callback()
def _rules() -> None:
    """Evolution rules: check a rules file against the configured oracles."""


@rules_app.command("check")
def check_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The rules file (default: agent.rules, else the shipped rules).", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Load the rules: every feature a rule reads is declared, every declared feature comes from a configured
    oracle (wallet, price feed, [oracles]); each problem with its fix. Exit 1 on any problem."""
    from rich.console import Console

    from agent.ops.rules_check import check_rules
    from agent.rules.errors import RulesConfigError

    settings = current_settings()
    try:
        result = check_rules(settings, path)
    except RulesConfigError as exc:
        if as_json:
            problems = [{"rule": p.rule, "problem": p.problem, "fix": p.fix} for p in exc.problems]
            typer.echo(json.dumps({"ok": False, "path": exc.path, "problems": problems}, indent=2))
            raise typer.Exit(1) from None
        raise
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    out = Console(highlight=False)
    spec = result.engine.spec
    oracles = sorted(set(result.provided.features.values()))
    if result.provided.note:
        out.print(f"[yellow]note:[/] {result.provided.note}")
    out.print(
        f"[green]ok[/]: rules file {result.path}: {len(spec.traits)} trait(s), {len(spec.facts)} fact(s); "
        f"{len(spec.features)} declared feature(s), all provided by the configured oracles ({', '.join(oracles)})"
    )


@rules_app.command("export")
def export_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The rules file (default: agent.rules, else the shipped rules).", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the JSON here instead of to stdout.", show_default=False),
    ] = None,
) -> None:
    """Write the rules as data (chrysalis-rules/1 canonical JSON, the same bytes for the same rules): what
    renderer/rules.js evaluates in a browser, with the rules' sha256 that receipts record. Exit 1 if the rules are
    invalid or use something renderer/rules.js cannot evaluate identically."""
    from agent.rules import DEFAULT_RULES, load_rules
    from agent.rules.rules_data import rules_json_bytes

    rules_path = path if path is not None else Path(current_settings().agent.rules or DEFAULT_RULES)
    data = rules_json_bytes(load_rules(rules_path))
    if out is None:
        typer.echo(data.decode())
        return
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data)} bytes) from {rules_path}", err=True)
