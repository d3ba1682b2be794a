"""``chrysalis agent add-key``: a key for one more agent on the same database (the work is in
:mod:`agent.ops.agent_keys`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.clicontext import current_settings

agent_app = typer.Typer(help="The agents that fulfil requests: their keys and roles.")


@agent_app.callback()
def _agent() -> None:
    """The agents that fulfil requests: their keys and roles."""


@agent_app.command("add-key")
def add_key_command(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where the new encrypted keystore goes (default: .chrysalis/keys/agent-<address>.json); refused "
            "if it exists.",
            show_default=False,
        ),
    ] = None,
    keystore: Annotated[
        Path | None,
        typer.Option(
            "--keystore",
            help="Grant this existing V3 keystore's key instead of making one.",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Grant this address instead (its key is kept elsewhere).", show_default=False
        ),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="The new keystore's password (default: a random one, written 0600 beside it as <name>.password).",
            show_default=False,
        ),
    ] = None,
    admin: Annotated[
        str | None,
        typer.Option(
            "--admin-keystore",
            "--admin",
            help="The collection admin's key that grants the roles: a V3 keystore file, an Ape account alias "
            "(ape:alice), or a development account index on a local chain (0, dev:2). Default: the signer settings.",
            show_default=False,
        ),
    ] = None,
    admin_password_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-password-file",
            help="File holding the admin keystore's password (default: $CHRYSALIS_KEYSTORE_PASSWORD).",
            show_default=False,
        ),
    ] = None,
    fund: Annotated[
        str | None,
        typer.Option(
            "--fund",
            metavar="ETH",
            help="Also send the new agent this much ETH for gas, from the admin.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make an encrypted keystore for one more agent (or take --keystore / --address), have the collection's admin
    grant it AGENT_ROLE (and REFRESHER_ROLE when the collection has it), wait for the receipts, optionally fund it,
    and print the settings the new agent needs. Every agent shares the database and the deployment record."""
    from agent.ops.agent_keys import add_agent_key, parse_eth
    from agent.ops.cli import out as console
    from agent.pipeline.holder import format_eth

    fund_wei = parse_eth(fund) if fund is not None else 0
    done = add_agent_key(
        current_settings(), out=out, keystore=keystore, address=address, password_file=password_file,
        admin=admin, admin_password_file=admin_password_file, fund_wei=fund_wei,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(done.to_json(), indent=2))
        return
    if done.nothing_to_do:
        console.print(
            f"{done.address} holds {' and '.join(done.already)} on {done.collection} already: nothing sent"
        )
        if fund_wei:
            console.print(
                "[dim]--fund was not sent either: send gas to a key that is set up from any wallet[/]"
            )
        return
    if done.created:
        console.print(
            f"made a new agent key {done.address}: keystore {done.keystore}, password in {done.password_file} "
            "(both 0600)"
        )
    for role, tx in done.granted.items():
        console.print(f"granted {role} to {done.address} on {done.collection} (tx {tx})")
    if done.fund_tx:
        console.print(f"sent {format_eth(done.funded_wei)} to {done.address} for gas (tx {done.fund_tx})")
    elif done.created:
        console.print(f"[yellow]{done.address} has no ETH yet: fund it for gas (or rerun with --fund ETH)[/]")
    if done.keystore is None:
        console.print("[dim]point the new agent's signer.keystore at that address's keystore[/]")
        return
    console.print(
        "\nthe new agent uses the same settings as the others (chain, database) with its own key: in its "
        "chrysalis.toml\n"
    )
    typer.echo(done.settings_toml())
    console.print("or in its environment:\n")
    typer.echo("\n".join(done.settings_env()))
